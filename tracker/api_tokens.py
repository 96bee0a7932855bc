"""The operator console's credentials and redaction list, parsed from their settings.

``TRACKER_API_TOKENS`` is ``name:role:token`` entries separated by commas: ``name`` is who
the audit log says acted, ``role`` is ``viewer`` (read) or ``operator`` (act), ``token`` the
secret sent as ``Authorization: Bearer <token>``. ``TRACKER_REDACT_FIELDS`` names payload
fields whose values the console, the API and the audit log never show.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, Literal

from tracker.errors import ConfigurationError

Role = Literal["viewer", "operator"]
ROLES: Final = ("viewer", "operator")
# A token shorter than this is guessable; the console is meant for production data.
MIN_TOKEN_CHARS: Final = 16
MAX_TOKEN_CHARS: Final = 256
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII without spaces: a header value as is
_FIELD = re.compile(r"[^\s$.,]{1,128}")


@dataclass(frozen=True)
class ApiToken:
    """One credential: ``name`` acts with ``role`` when it presents ``token``. The secret
    never appears in a repr (settings end up in logs and tracebacks)."""

    name: str
    role: Role
    token: str = field(repr=False)


def parse_tokens(value: str, setting: str = "TRACKER_API_TOKENS") -> tuple[ApiToken, ...]:
    """The entries of ``value``; a ``ConfigurationError`` naming the first bad entry by its
    position (and name, never its secret) and what is wrong with it."""
    tokens: list[ApiToken] = []
    for position, raw in enumerate(value.split(","), start=1):
        entry = raw.strip()
        if not entry:
            continue
        name, _, rest = entry.partition(":")
        role, _, secret = rest.partition(":")
        where = f"{setting} entry {position}"
        if not _NAME.fullmatch(name):
            raise ConfigurationError(
                f"{where}: the name must be 1 to 64 letters, digits or _.@- (entries are "
                "name:role:token, comma-separated)"
            )
        where = f"{where} ({name})"
        if role not in ROLES:
            raise ConfigurationError(
                f"{where}: the role must be 'viewer' or 'operator' (entries are name:role:token)"
            )
        if not MIN_TOKEN_CHARS <= len(secret) <= MAX_TOKEN_CHARS:
            raise ConfigurationError(
                f"{where}: the token must be {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} characters "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'`)"
            )
        if not _TOKEN.fullmatch(secret):
            raise ConfigurationError(
                f"{where}: the token must be printable ASCII without spaces or commas"
            )
        if any(t.name == name for t in tokens):
            raise ConfigurationError(f"{where}: the name is used twice")
        if any(t.token == secret for t in tokens):
            raise ConfigurationError(f"{where}: the token is the same as another entry's")
        tokens.append(ApiToken(name, role, secret))  # type: ignore[arg-type]
    return tuple(tokens)


def parse_fields(value: str, setting: str = "TRACKER_REDACT_FIELDS") -> frozenset[str]:
    """The field names of ``value`` (comma-separated), lower-cased: redaction ignores case."""
    fields: set[str] = set()
    for raw in value.split(","):
        name = raw.strip()
        if not name:
            continue
        if not _FIELD.fullmatch(name):
            raise ConfigurationError(
                f"{setting}: {name[:40]!r} is not a field name (1 to 128 characters, no "
                "spaces, '$', '.' or ',')"
            )
        fields.add(name.lower())
    return frozenset(fields)
