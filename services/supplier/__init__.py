"""Supplier service: routes order lines to suppliers, chases them, watches the SLA clock."""
