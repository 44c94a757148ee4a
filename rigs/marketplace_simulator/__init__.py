"""Marketplace simulator: the Shopify Admin GraphQL and WooCommerce REST subset we call."""
