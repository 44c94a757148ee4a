"""Marketplace shops: registered Shopify and WooCommerce shops, and writing orders back to them.

- `domain`: the `Shop` record, its registration rules, write-back tasks and errors (no I/O);
- `tables` / `repository`: shops (secrets sealed with the PII cipher), which shop an order
  came from, and the durable write-back queue, all on the order unit of work's session;
- `handlers`: register, list and edit shops; resolve a webhook's shop; queue write-backs
  in the same transaction as the consumed event;
- `clients` / `writeback`: the Shopify Admin GraphQL and WooCommerce REST adapters and the
  worker that drains the queue with backoff, honouring each platform's rate limits;
- `api`: `POST/GET /v1/shops`, `PATCH /v1/shops/{id}`.
"""
