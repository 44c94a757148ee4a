"""Local stack launcher and test environment."""
