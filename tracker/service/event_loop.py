"""The event loop a service runs on: uvloop when it is installed (the ``speed`` extra,
``pip install "rabbitmq-task-tracker[speed]"``), asyncio's own otherwise.

Every delivery costs the tracker a handful of tasks, futures and callbacks; uvloop runs them
in C. ``TRACKER_EVENT_LOOP=asyncio`` keeps asyncio's loop (to rule the loop out when
chasing a problem), ``uvloop`` insists on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Final, Literal, TypeVar

from tracker.errors import ConfigurationError

T = TypeVar("T")
EventLoopName = Literal["auto", "asyncio", "uvloop"]
EVENT_LOOPS: Final = ("auto", "asyncio", "uvloop")


def loop_factory(name: EventLoopName = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the loop ``name`` asks for (None: asyncio's default); ``ConfigurationError``
    when ``uvloop`` is asked for and not installed."""
    if name not in EVENT_LOOPS:
        raise ConfigurationError(f"the event loop must be one of {EVENT_LOOPS}, not {name!r}")
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise ConfigurationError(
                "TRACKER_EVENT_LOOP=uvloop but uvloop is not installed: "
                'pip install "rabbitmq-task-tracker[speed]"'
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: which loop runs a service (its start line says)."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T], name: EventLoopName = "auto") -> T:
    """``asyncio.run(main)`` on the loop ``name`` asks for."""
    try:
        factory = loop_factory(name)
    except BaseException:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
