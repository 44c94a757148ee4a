"""Platform code every service uses: events, Kafka bus, outbox/inbox, settings, logging, HTTP."""
