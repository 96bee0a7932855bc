"""Redaction: the values of fields named in ``TRACKER_REDACT_FIELDS`` replaced before a
payload is shown or written to the audit log."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

REDACTED: Final = "[redacted]"


def redact(value: Any, fields: frozenset[str]) -> Any:
    """``value`` with the value of every mapping key named in ``fields`` (case-insensitive,
    at any depth, in lists too) replaced by ``"[redacted]"``; ``value`` itself is not
    changed. Iterative, so a deeply nested payload cannot exhaust the stack."""
    if not fields:
        return value
    names = frozenset(name.lower() for name in fields)
    root: list[Any] = [None]
    # (source, container to fill, key or index in it)
    stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]
    while stack:
        source, target, slot = stack.pop()
        if isinstance(source, Mapping):
            copy: dict[Any, Any] = {}
            target[slot] = copy
            for key, item in source.items():
                if isinstance(key, str) and key.lower() in names:
                    copy[key] = REDACTED
                else:
                    copy[key] = None
                    stack.append((item, copy, key))
        elif isinstance(source, list | tuple):
            items: list[Any] = [None] * len(source)
            target[slot] = items
            stack.extend((item, items, index) for index, item in enumerate(source))
        else:
            target[slot] = source
    return root[0]
