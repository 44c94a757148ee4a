"""Demo shops for `make up`: a Shopify shop and a WooCommerce site on the marketplace simulator.

Both are registered with the order service (`POST /v1/shops`, signed with
`DROPSHIP_SHOPIFY_SECRET` / `DROPSHIP_WOOCOMMERCE_SECRET`) and on the simulator
(`PUT /_control/shops/{name}`, in memory, so at every start). Idempotent: a shop the
order service already knows is brought up to date instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class DemoShop:
    name: str
    """The shop's name on the simulator (its API lives under `<sim>/<name>`)."""
    platform: str
    domain: str
    secret_env: str
    credentials: dict[str, str]


# development-only credentials of the simulated shops (the simulator is in memory)
DEMO_SHOPS = [
    DemoShop(
        "maple-and-pine-goods",
        "shopify",
        "maple-and-pine-goods.myshopify.com",
        "DROPSHIP_SHOPIFY_SECRET",
        {"access_token": "shpat_dev_maple_and_pine"},
    ),
    DemoShop(
        "maple-and-pine-woo",
        "woocommerce",
        "https://woo.maple-and-pine.example/",
        "DROPSHIP_WOOCOMMERCE_SECRET",
        {"consumer_key": "ck_dev_maple", "consumer_secret": "cs_dev_maple"},
    ),
]


def seed_shops(
    order_url: str, marketplace_url: str, api_key: str, env: dict[str, str]
) -> list[str]:
    """Register the demo shops; the domains newly registered."""
    created = []
    headers = {"X-API-Key": api_key}
    with httpx.Client(headers=headers, timeout=10) as client:
        known = {
            (s["platform"], s["domain"]): s["id"]
            for s in client.get(f"{order_url}/v1/shops").raise_for_status().json()["items"]
        }
        for demo in DEMO_SHOPS:
            name, platform, credentials = demo.name, demo.platform, demo.credentials
            client.put(
                f"{marketplace_url}/_control/shops/{name}",
                json={"platform": platform, **credentials},
            ).raise_for_status()
            secret = env.get(demo.secret_env)
            if not secret:
                continue
            body = {
                "api_base_url": f"{marketplace_url}/{name}",
                "webhook_secret": secret,
                **credentials,
            }
            domain = demo.domain.removeprefix("https://").rstrip("/")
            shop_id = known.get((platform, domain))
            if shop_id:
                client.patch(f"{order_url}/v1/shops/{shop_id}", json=body).raise_for_status()
            else:
                client.post(
                    f"{order_url}/v1/shops",
                    json={"platform": platform, "domain": demo.domain, **body},
                ).raise_for_status()
                created.append(domain)
    return created
