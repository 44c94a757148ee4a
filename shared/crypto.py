"""Secrets at rest (PII, supplier credentials): AES-256-GCM with key ids and a blind index.

`DROPSHIP_PII_KEY` is either one base64 key (32 bytes) or a keyring
`kid:base64key,kid:base64key,…` whose first entry encrypts and all of which decrypt.
A value is stored as `v1.<kid>.<base64(nonce ‖ ciphertext)>`, bound to its field
name (associated data) so a ciphertext cannot be moved to another column.
E-mail addresses also get a keyed blind index (HMAC-SHA256) per key, so a customer
can be found for redaction without decrypting every row.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = "v1"


class PiiKeyError(ValueError):
    """The configured PII key(s) cannot be used, or a value was written with an unknown key."""


@dataclass(frozen=True)
class _Key:
    kid: str
    aead: AESGCM
    index_key: bytes
    fingerprint: str


_KID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def _decode_key(text: str) -> bytes:
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PiiKeyError("a PII key is not valid base64") from exc
    if len(raw) != 32:
        raise PiiKeyError("a PII key must be 32 bytes (base64 of 32 random bytes)")
    return raw


def _fingerprint(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:8]


def _derive_index_key(raw: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=b"dropship-pii-blind-index").derive(
        raw
    )


def generate_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


class PiiCipher:
    def __init__(self, keyring: str) -> None:
        keys: list[_Key] = []
        for entry in (e.strip() for e in keyring.split(",") if e.strip()):
            kid, sep, material = entry.partition(":")
            if not sep:
                material = entry
            raw = _decode_key(material)
            if not sep:
                kid = _fingerprint(raw)
            elif not _KID.match(kid):
                raise PiiKeyError("a PII key id is 1-32 letters, digits, '-' or '_'")
            keys.append(_Key(kid, AESGCM(raw), _derive_index_key(raw), _fingerprint(raw)))
        if not keys:
            raise PiiKeyError("no PII key configured")
        if len({k.kid for k in keys}) != len(keys):
            raise PiiKeyError("PII key ids must be unique")
        self._keys = keys
        # a value written while its key was configured bare carries the key's fingerprint
        # as its id; it stays readable after the key is given a name in a keyring
        self._by_kid = {k.fingerprint: k for k in keys} | {k.kid: k for k in keys}

    @property
    def active_kid(self) -> str:
        return self._keys[0].kid

    def encrypt(self, value: str | None, field: str) -> str | None:
        if value is None:
            return None
        key = self._keys[0]
        nonce = os.urandom(12)
        sealed = key.aead.encrypt(nonce, value.encode(), field.encode())
        return f"{_VERSION}.{key.kid}.{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str | None, field: str) -> str | None:
        if token is None:
            return None
        _, kid, blob = self._parse(token)
        key = self._by_kid.get(kid)
        if key is None:
            raise PiiKeyError(f"value was encrypted with key {kid!r}, which is not configured")
        data = base64.b64decode(blob)
        return key.aead.decrypt(data[:12], data[12:], field.encode()).decode()

    def key_id(self, token: str) -> str:
        return self._parse(token)[1]

    def needs_rotation(self, token: str | None) -> bool:
        return token is not None and self.key_id(token) != self.active_kid

    @staticmethod
    def _parse(token: str) -> tuple[str, str, str]:
        parts = token.split(".", 2)
        if len(parts) != 3 or parts[0] != _VERSION:
            raise PiiKeyError("not an encrypted PII value")
        return parts[0], parts[1], parts[2]

    def email_index(self, email: str) -> str:
        """The blind index under the active key (what new rows store)."""
        return self._index(self._keys[0], email)

    def email_indexes(self, email: str) -> list[str]:
        """The blind index under every configured key (what a lookup must match)."""
        return [self._index(k, email) for k in self._keys]

    @staticmethod
    def _index(key: _Key, email: str) -> str:
        normal = email.strip().lower()
        return hmac.new(key.index_key, normal.encode(), hashlib.sha256).hexdigest()
