"""Edit and retry under redaction: what the console showed as [redacted] and the operator
left so keeps its stored value; what the operator changed is taken as changed."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tracker.operations.redaction import REDACTED, redact
from tracker.web.unredact import restore

FIELDS = frozenset({"card", "email"})
keys = st.sampled_from(["card", "Email", "name", "items", "n"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=4),
    max_leaves=15,
)


@given(json_values)
def test_a_payload_shown_redacted_and_sent_back_unchanged_is_the_stored_one(
    stored: Any,
) -> None:
    # Given: what the console showed
    shown = redact(stored, FIELDS)
    # When: sent back as it was
    restored = restore(shown, stored, FIELDS)
    # Then
    assert restored == stored


def test_an_edited_field_is_taken_and_the_rest_restored() -> None:
    # Given
    stored = {"order": 1, "card": "4111", "contact": {"email": "a@b", "name": "A"}}
    shown = redact(stored, FIELDS)
    # When: the operator edits the order and the name, and types a new card
    edited = {**shown, "order": 2, "contact": {**shown["contact"], "name": "B"}}
    edited_card = {**edited, "card": "5500"}
    # Then
    assert restore(edited, stored, FIELDS) == {
        "order": 2,
        "card": "4111",
        "contact": {"email": "a@b", "name": "B"},
    }
    assert restore(edited_card, stored, FIELDS)["card"] == "5500"


def test_a_placeholder_where_nothing_was_stored_stays_a_placeholder() -> None:
    # A new field the operator typed as "[redacted]" is not a value to restore.
    assert restore({"card": REDACTED}, {}, FIELDS) == {"card": REDACTED}
    assert restore({"name": REDACTED}, {"name": "x"}, FIELDS) == {"name": REDACTED}


def test_deep_nesting_does_not_exhaust_the_stack() -> None:
    # Given: nesting far deeper than Python's recursion limit
    deep: Any = {"card": "x"}
    for _ in range(5000):
        deep = {"n": [deep]}
    # When
    restored = restore(redact(deep, FIELDS), deep, FIELDS)
    # Then: the leaf, found without recursion, has its stored value back
    for _ in range(5000):
        restored = restored["n"][0]
    assert restored == {"card": "x"}
