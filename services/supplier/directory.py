"""The supplier directory: supplier rows cached for the hot paths, credentials sealed at rest."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row

from services.supplier.domain import COUNTERS, Credentials, SupplierInfo, Track
from shared.cache import BoundedTtlCache
from shared.crypto import PiiCipher

__all__ = ["Credentials", "Sealer", "SupplierDirectory", "SupplierEntry"]

FIELD = "supplier_credentials"
"""The associated data credentials are sealed with (a token cannot move to another column)."""


class Sealer:
    """Encrypts supplier credentials at rest (AES-GCM); the key comes from settings."""

    def __init__(
        self,
        seal: Callable[[str], str],
        unseal: Callable[[str], str],
        stale: Callable[[str], bool] = lambda _: False,
    ) -> None:
        self.seal, self.unseal, self.stale = seal, unseal, stale

    @classmethod
    def with_cipher(cls, cipher: PiiCipher) -> Sealer:
        """Sealed under the cipher's active key (field-bound), readable under any of its keys."""
        return cls(
            lambda text: cipher.encrypt(text, FIELD) or "",
            lambda token: cipher.decrypt(token, FIELD) or "",
            cipher.needs_rotation,
        )

    def resealed(self, token: str) -> str | None:
        """`token` sealed again under the active key, or None when it already is."""
        return self.seal(self.unseal(token)) if self.stale(token) else None

    def dump(self, creds: Credentials) -> str:
        return self.seal(
            json.dumps({"api_key": creds.api_key, "webhook_secret": creds.webhook_secret})
        )

    def load(self, token: str | None) -> Credentials:
        data = json.loads(self.unseal(token)) if token else {}
        return Credentials(data.get("api_key", ""), data.get("webhook_secret", ""))


@dataclass(frozen=True)
class SupplierEntry:
    """What routing, the dispatcher and the webhooks need of a supplier, credentials unsealed."""

    id: str
    supplier_key: str
    api_base_url: str
    credentials: Credentials
    priority: int
    ship_sla_hours: float
    active: bool
    rate_limit_per_s: float | None
    track: Track

    @property
    def info(self) -> SupplierInfo:
        return SupplierInfo(self.id, self.active, self.priority, self.track)


class SupplierDirectory:
    """Supplier rows cached for `ttl_s` seconds, so hot paths do not read them per order.

    Changes committed through this process (the admin API, a quality-defect return)
    invalidate the entry at once; other replicas see them within `ttl_s` (and the measured
    reliability lags by as much). A read that began before an invalidation is not kept:
    it may have seen the row as it was before the change committed.
    Unknown ids are remembered too (as None), so the cache holds at most `max_entries`,
    least recently used first out: webhook URLs name supplier ids anyone can make up.
    """

    def __init__(self, sealer: Sealer, ttl_s: float = 2.0, max_entries: int = 10_000) -> None:
        self.sealer = sealer
        self.ttl_s = ttl_s
        self._entries: BoundedTtlCache[str, SupplierEntry | None] = BoundedTtlCache(
            max_entries, ttl_s
        )
        self.generation = 0
        """Bumped by every invalidation; `remember` keeps only reads begun in the current one."""

    def __len__(self) -> int:
        return len(self._entries)

    def invalidate(self, supplier_id: str | None = None) -> None:
        self.generation += 1
        if supplier_id is None:
            self._entries.clear()
        else:
            self._entries.pop(supplier_id)

    def cached(self, supplier_id: str) -> tuple[bool, SupplierEntry | None]:
        return self._entries.get(supplier_id)

    def remember(
        self,
        supplier_id: str,
        row: Row[Any] | None,
        counts: dict[str, int],
        penalty: float = 0.0,
        defective: int = 0,
        read_in: int | None = None,
    ) -> SupplierEntry | None:
        """The entry built from a read; cached unless an invalidation came since the read
        began (`read_in`: the generation then), which may have made it stale."""
        entry = None
        if row is not None:
            c = {k: counts.get(k, 0) for k in COUNTERS}
            entry = SupplierEntry(
                row.id,
                row.supplier_key,
                row.api_base_url,
                self.sealer.load(row.credentials),
                row.priority,
                float(row.ship_sla_hours),
                row.active,
                row.rate_limit_per_s,
                Track(
                    c["decided"],
                    c["accepted"],
                    c["shipped"],
                    c["shipped_on_time"],
                    penalty,
                    defective,
                ),
            )
        if read_in is None or read_in == self.generation:
            self._entries.put(supplier_id, entry)
        return entry
