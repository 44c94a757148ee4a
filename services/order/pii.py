"""Customer PII at rest: the order service's use of the shared field cipher (`shared.crypto`)."""

from shared.crypto import PiiCipher, PiiKeyError, generate_key

__all__ = ["PiiCipher", "PiiKeyError", "generate_key"]
