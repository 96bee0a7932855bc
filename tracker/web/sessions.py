"""The console's sign-in cookie: ``name.expiry.signature``, signed with the secret of the
token the person signed in with.

Nothing is kept on the server, so any process of the service accepts the cookie, and a
session ends when its token is removed from or changed in ``TRACKER_API_TOKENS``, or when it
expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Final

from tracker.api_tokens import ApiToken

COOKIE: Final = "tracker_session"
LIFETIME_SECONDS: Final = 12 * 3600
_MAX_COOKIE_CHARS: Final = 512


def _signature(secret: str, message: str) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def sign(token: ApiToken, now: float | None = None) -> str:
    """A cookie value naming ``token``'s holder until ``LIFETIME_SECONDS`` from ``now``."""
    expiry = int((time.time() if now is None else now) + LIFETIME_SECONDS)
    message = f"{token.name}.{expiry}"
    return f"{message}.{_signature(token.token, message)}"


def verify(
    value: str, named: Callable[[str], ApiToken | None], now: float | None = None
) -> str | None:
    """The name a valid, unexpired cookie ``value`` carries, else None (whatever ``value``
    is: the cookie comes from the client)."""
    if not value or len(value) > _MAX_COOKIE_CHARS:
        return None
    message, _, signature = value.rpartition(".")
    name, _, expiry = message.rpartition(".")
    if not expiry.isascii() or not expiry.isdigit():
        return None
    token = named(name)
    if token is None:
        return None
    if not hmac.compare_digest(_signature(token.token, message).encode(), signature.encode()):
        return None
    if int(expiry) < (time.time() if now is None else now):
        return None
    return name
