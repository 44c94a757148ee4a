"""Notify service: customer notices and ops alerts, each sent once and logged."""
