"""Test and demo rigs: simulated suppliers and marketplaces. Never imported by services."""
