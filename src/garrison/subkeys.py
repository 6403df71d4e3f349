"""Sub-keys of the one server secret, one per purpose, so no two mechanisms ever share a key.

`derive(secret, purpose)` is HMAC-SHA256(secret, "garrison/" + purpose): HKDF-Expand's single block with the
purpose as its info, the server secret being uniformly random already. API key digests and audit MACs each
get their own; a value computed for one purpose is useless for the other.
"""

from __future__ import annotations

import hashlib
import hmac

KEY_DIGESTS = "api-key-digest/v1"
AUDIT_MACS = "audit-mac/v1"


def derive(secret: bytes, purpose: str) -> bytes:
    """The 32-byte sub-key of `secret` for `purpose`."""
    return hmac.new(secret, f"garrison/{purpose}".encode(), hashlib.sha256).digest()
