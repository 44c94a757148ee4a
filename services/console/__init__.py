"""The ops console: a server-rendered web app over the four services' HTTP APIs."""
