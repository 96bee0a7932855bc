"""Middleware hooks: those overridden run in order, the base class's no-ops never run."""

from __future__ import annotations

import inspect

import pytest

from tracker.middleware import HOOKS, Hooks, Middleware


class Recording(Middleware):
    def __init__(self, name: str, calls: list[tuple[str, str, tuple[object, ...]]]) -> None:
        self.name = name
        self.calls = calls

    async def after_claim(self, task: object) -> None:
        self.calls.append((self.name, "after_claim", (task,)))


class RecordingMore(Recording):
    """Inherits ``after_claim`` from a subclass, overrides one more."""

    async def before_ack(self, envelope: object, decision: object) -> None:
        self.calls.append((self.name, "before_ack", (envelope, decision)))


async def test_overridden_hooks_run_in_the_order_of_the_middleware() -> None:
    # Given
    calls: list[tuple[str, str, tuple[object, ...]]] = []
    hooks = Hooks((Recording("a", calls), Middleware(), RecordingMore("b", calls)))

    # When
    await hooks.run("after_claim", "task")
    await hooks.run("before_ack", "envelope", "decision")
    await hooks.run("before_process", "envelope")

    # Then
    assert calls == [
        ("a", "after_claim", ("task",)),
        ("b", "after_claim", ("task",)),
        ("b", "before_ack", ("envelope", "decision")),
    ]
    assert hooks.wants("after_claim")
    assert hooks.wants("before_ack")
    assert not hooks.wants("before_process")


class Untouchable(Middleware):
    """Overrides nothing, and fails the test if any of its hooks is even looked up."""

    def __getattribute__(self, name: str) -> object:
        if name in HOOKS:
            raise AssertionError(f"the no-op {name} was looked up")
        return super().__getattribute__(name)


async def test_a_hook_left_as_the_no_op_is_never_called() -> None:
    # Given
    calls: list[tuple[str, str, tuple[object, ...]]] = []
    hooks = Hooks((Untouchable(), Recording("a", calls), Untouchable()))

    # When
    for hook in HOOKS:
        await hooks.run(hook, *[None] * _arity(hook))

    # Then
    assert calls == [("a", "after_claim", (None,))]
    assert [hook for hook in HOOKS if hooks.wants(hook)] == ["after_claim"]


def test_every_public_coroutine_of_middleware_is_a_hook() -> None:
    documented = {
        name
        for name, value in vars(Middleware).items()
        if inspect.iscoroutinefunction(value) and not name.startswith("_")
    }
    assert set(HOOKS) == documented
    assert {"before_process", "after_claim", "before_ack", "on_enqueued"} <= documented


async def test_an_unknown_hook_is_an_error_not_silence() -> None:
    with pytest.raises(KeyError):
        await Hooks(()).run("after_clam", None)
    with pytest.raises(KeyError):
        Hooks(()).wants("before_prcess")


def _arity(hook: str) -> int:
    return len(inspect.signature(getattr(Middleware, hook)).parameters) - 1
