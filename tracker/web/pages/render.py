"""Rendering the console's pages: one Jinja2 environment with autoescaping on, and filters
that make any stored value safe to show (control characters escaped, long values cut).

Everything on a page that came from the database goes through autoescaping; nothing is
marked safe. Payloads pass ``redacted`` before they reach a template.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from fastapi import Request, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from tracker.store import connection
from tracker.validation import printable, storable_text
from tracker.web import csrf
from tracker.web.context import operator_of

TEMPLATES: Final = Path(__file__).resolve().parent.parent / "templates"
# Pages load scripts and styles from /static only: an injected <script> would not run even
# if something escaped the templates.
HEADERS: Final = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
# Control characters but newline and tab, which a <pre> block shows as they are.
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
MAX_TEXT_CHARS: Final = 300
MAX_BLOCK_CHARS: Final = 20_000


def text(value: object, limit: int = MAX_TEXT_CHARS) -> str:
    """One line of any value: control characters escaped, cut to ``limit`` characters."""
    return "" if value is None else printable(str(value), limit)


def block(value: object, limit: int = MAX_BLOCK_CHARS) -> str:
    """A value as a readable block (JSON indented), cut to ``limit`` characters."""
    if not isinstance(value, str):
        value = json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)
    escaped = _CONTROL_BUT_LINES.sub(
        lambda m: f"\\x{ord(m.group()):02x}", storable_text(value, limit)
    )
    return escaped


def when(value: datetime | None) -> str:
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(text=text, block=block, when=when)
    return env


templates = Jinja2Templates(env=_environment())


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    """The page ``name`` with ``context`` and what every page shows: who is signed in, the
    access banner, the CSRF token for its forms."""
    operator = operator_of(request)
    token = csrf.token_for(request)
    in_memory = connection.is_connected() and connection.is_in_memory()
    response = templates.TemplateResponse(
        request,
        name,
        {
            "caller": getattr(request.state, "caller", None),
            "open_locally": operator.access.open_locally,
            "bound_host": operator.access.bound_host,
            "in_memory": in_memory,
            "service": operator.service,
            "csrf_token": token,
            "csrf_field": csrf.FIELD,
            "nav": None,
            **context,
        },
        status_code=status,
        headers=HEADERS,
    )
    csrf.remember(request, response, token)
    return response
