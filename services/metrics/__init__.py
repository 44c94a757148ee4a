"""Metrics service: KPI aggregates rebuilt exactly from the event stream."""
