"""Who may use the console and the API, and as whom their actions are audited.

With tokens (``TRACKER_API_TOKENS``), every API call needs ``Authorization: Bearer <token>``
and every page a signed-in session (``sessions``); a ``viewer`` reads, an ``operator`` also
acts. Without tokens, the console and the API answer only when the endpoint is bound to a
loopback address, as the operator ``local``: whoever can reach a loopback port is on this
machine. Bound elsewhere without tokens they answer 403; health and metrics never need a
token (they are separate routes with no dependency on this module).
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from typing import Final, Literal

from fastapi import HTTPException, Request

from tracker.api_tokens import ApiToken, Role
from tracker.operations.actors import Actor
from tracker.web import sessions

LOCAL_ACTOR: Final = "local"
NO_TOKENS_OFF_LOOPBACK: Final = (
    "the console and the API are off: this endpoint is bound to {host}, not a loopback "
    "address, and TRACKER_API_TOKENS is not set. Set TRACKER_API_TOKENS=name:role:token "
    "(roles: viewer, operator), or bind 127.0.0.1"
)
_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_RANK: Final = {"viewer": 0, "operator": 1}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name, ``[::1]`` brackets allowed) is loopback."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    """The rules of one endpoint: its ``tokens`` and the ``bound_host`` it listens on."""

    tokens: tuple[ApiToken, ...] = ()
    bound_host: str = "127.0.0.1"

    @property
    def open_locally(self) -> bool:
        """No tokens, on a loopback bind: open to this machine, audited as ``local``."""
        return not self.tokens and is_loopback(self.bound_host)

    def token(self, presented: str) -> ApiToken | None:
        """The token whose secret is ``presented`` (compared in constant time)."""
        found = None
        for candidate in self.tokens:
            if hmac.compare_digest(candidate.token.encode(), presented.encode()):
                found = candidate
        return found

    def named(self, name: str) -> ApiToken | None:
        return next((t for t in self.tokens if t.name == name), None)

    def caller(self, request: Request, via: Literal["api", "ui"]) -> Actor | None:
        """The caller of ``request``, or None when it presents no credential. Raises 401
        for a bad token, 403 when the endpoint is closed (see the module)."""
        if not self.tokens:
            if not is_loopback(self.bound_host):
                raise HTTPException(403, NO_TOKENS_OFF_LOOPBACK.format(host=self.bound_host))
            # A name that resolves to 127.0.0.1 from a web page (DNS rebinding) must not
            # reach an open console: the Host header has to be loopback too.
            if not is_loopback(_host_of(request)):
                raise HTTPException(403, "a console without tokens answers loopback names only")
            return Actor(LOCAL_ACTOR, "operator", LOCAL_ACTOR)
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme:
            token = self.token(presented.strip()) if scheme.lower() == "bearer" else None
            if token is None:
                raise HTTPException(
                    401,
                    "the token is not valid: send Authorization: Bearer <token> with a token "
                    "from TRACKER_API_TOKENS",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            return Actor(token.name, token.role, via)
        if via == "ui":
            name = sessions.verify(request.cookies.get(sessions.COOKIE, ""), self.named)
            token = self.named(name) if name else None
            if token is not None:
                return Actor(token.name, token.role, via)
        return None


def _host_of(request: Request) -> str:
    host = request.headers.get("host", "")
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def access_of(request: Request) -> Access:
    access: Access = request.app.state.access
    return access


def require(caller: Actor | None, role: Role) -> Actor:
    """``caller`` if it has ``role``; 401 without a credential, 403 with too small a role."""
    if caller is None:
        raise HTTPException(
            401,
            "a token is required: send Authorization: Bearer <token> (TRACKER_API_TOKENS)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if _RANK[caller.role] < _RANK[role]:
        raise HTTPException(403, f"{caller.name!r} is a {caller.role}: this needs the {role} role")
    return caller


async def api_viewer(request: Request) -> Actor:
    """Dependency of every API route: a caller who may read."""
    return require(access_of(request).caller(request, "api"), "viewer")


async def api_operator(request: Request) -> Actor:
    """Dependency of API routes that act: a caller with the operator role."""
    return require(access_of(request).caller(request, "api"), "operator")
