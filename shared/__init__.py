"""Platform code every service uses: event contract, Kafka bus, outbox/inbox, settings, logging, HTTP plumbing."""
