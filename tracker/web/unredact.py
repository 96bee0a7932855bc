"""Edit and retry under redaction: the console and the API show a payload with some fields
``[redacted]``; an edited payload that leaves such a value as it was shown keeps the stored
value, so retrying never sends the placeholder (nor needs the secret shown)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tracker.operations.redaction import REDACTED


def restore(edited: Any, stored: Any, fields: frozenset[str]) -> Any:
    """``edited`` with every ``"[redacted]"`` value under a key named in ``fields`` replaced
    by the value at the same place in ``stored`` (where ``stored`` has one)."""
    if not fields:
        return edited
    names = frozenset(name.lower() for name in fields)
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, list[Any] | dict[Any, Any], Any]] = [(edited, stored, root, 0)]
    while stack:
        value, original, target, slot = stack.pop()
        if isinstance(value, Mapping):
            copy: dict[Any, Any] = {}
            target[slot] = copy
            for key, item in value.items():
                before = original.get(key) if isinstance(original, Mapping) else None
                if (
                    isinstance(key, str)
                    and key.lower() in names
                    and item == REDACTED
                    and isinstance(original, Mapping)
                    and key in original
                ):
                    copy[key] = before
                else:
                    stack.append((item, before, copy, key))
        elif isinstance(value, list):
            items: list[Any] = [None] * len(value)
            target[slot] = items
            for index, item in enumerate(value):
                fits = isinstance(original, list) and index < len(original)
                stack.append((item, original[index] if fits else None, items, index))
        else:
            target[slot] = value
    return root[0]


async def edited_payload(execution_id: str, edited: Any, fields: frozenset[str]) -> Any:
    """``edited`` restored against the stored payload of ``execution_id`` (unchanged when
    nothing is redacted or the execution is not found: the retry then says why)."""
    if not fields:
        return edited
    from tracker.models import TaskTracker
    from tracker.validation import check_id

    check_id(execution_id, "execution id")
    stored = await TaskTracker.find_one({"executionId": execution_id})
    return edited if stored is None else restore(edited, stored.payload, fields)
