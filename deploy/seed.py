"""Demo data for `make up`: three simulated suppliers and their offers (idempotent).

python -m deploy.seed   # against the running stack's supplier service
"""

from __future__ import annotations

import os
import sys

import httpx

DEMO_SUPPLIERS = [
    # key, name, priority, ship SLA hours, offers: sku -> (unit cost, stock, lead time hours)
    (
        "acme-goods",
        "Acme Goods (Shenzhen)",
        3,
        48.0,
        {"MUG-1": ("4.10", 500, 72), "TEA-2": ("1.20", 800, 72), "LAMP-3": ("11.00", 60, 96)},
    ),
    (
        "bolt-supply",
        "Bolt Supply (Ningbo)",
        5,
        48.0,
        {"MUG-1": ("4.60", 300, 48), "BAG-4": ("6.30", 200, 48), "LAMP-3": ("12.40", 40, 72)},
    ),
    (
        "coral-trade",
        "Coral Trade (Yiwu)",
        7,
        24.0,
        {"TEA-2": ("1.35", 1000, 24), "BAG-4": ("6.90", 150, 24), "CAP-5": ("2.20", 400, 24)},
    ),
]


def seed(supplier_url: str, simulator_url: str, api_key: str) -> list[str]:
    headers = {"X-API-Key": api_key}
    created = []
    with httpx.Client(base_url=supplier_url, headers=headers, timeout=10) as client:
        existing = {
            s["supplier_key"]: s["id"]
            for s in client.get("/v1/suppliers").raise_for_status().json()["items"]
        }
        for key, name, priority, sla, offers in DEMO_SUPPLIERS:
            supplier_id = existing.get(key)
            if supplier_id is None:
                body = {
                    "name": name,
                    "supplier_key": key,
                    "api_base_url": f"{simulator_url}/{key}",
                    "credentials": {
                        "api_key": f"sim-key-{key}",
                        "webhook_secret": f"sim-secret-{key}",
                    },
                    "priority": priority,
                    "ship_sla_hours": sla,
                }
                supplier_id = (
                    client.post("/v1/suppliers", json=body).raise_for_status().json()["id"]
                )
                created.append(key)
            items = [
                {
                    "sku": sku,
                    "supplier_sku": f"{key[:4].upper()}-{sku}",
                    "unit_cost": cost,
                    "currency": "USD",
                    "stock": stock,
                    "lead_time_hours": lead,
                }
                for sku, (cost, stock, lead) in offers.items()
            ]
            client.put(f"/v1/suppliers/{supplier_id}/offers", json=items).raise_for_status()
    return created


if __name__ == "__main__":
    key = os.environ.get("DROPSHIP_API_KEYS", "dev-api-key").split(",")[0].strip()
    supplier = f"http://127.0.0.1:{os.environ.get('DROPSHIP_SUPPLIER_PORT', '8002')}"
    simulator = f"http://127.0.0.1:{os.environ.get('DROPSHIP_SIMULATOR_PORT', '8010')}"
    print("created:", seed(supplier, simulator, key) or "nothing (already there)", file=sys.stderr)
