"""Supplier simulator: many fake suppliers speaking the supplier API (docs/supplier-api.md)."""
