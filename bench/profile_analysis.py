"""Reading a profile of the tracked consume phase: the top functions by self and cumulative
time, and the time grouped by library (the tracker by module), from cProfile's stats or
py-spy's collapsed stacks. Pure functions: ``bench.profile_consume`` records, this reads."""

from __future__ import annotations

import pstats
import re
import sysconfig
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tracker

STDLIB = sysconfig.get_paths()["stdlib"]
TRACKER = str(Path(tracker.__file__).resolve().parent)
BENCH = str(Path(__file__).resolve().parent)
TOP = 25

PYMONGO = "PyMongo (pymongo, bson)"
AMQP = "aio-pika/aiormq/pamqp"
ASYNCIO = "asyncio"
EPOLL = "epoll (the event loop's poll)"
SOCKETS = "socket send/recv (system calls)"
TRACKER_ALL = "tracker (all modules)"
STDLIB_OTHER = "stdlib (other)"
# Always listed, even when nothing was spent there.
REQUESTED = (PYMONGO, AMQP, TRACKER_ALL, ASYNCIO, "structlog", "pydantic", "prometheus_client")

# Library groups by a path part of the file a function is defined in.
_PACKAGES: tuple[tuple[str, str], ...] = (
    ("pymongo", PYMONGO),
    ("bson", PYMONGO),
    ("aio_pika", AMQP),
    ("aiormq", AMQP),
    ("pamqp", AMQP),
    ("structlog", "structlog"),
    ("pydantic_core", "pydantic"),
    ("pydantic", "pydantic"),
    ("prometheus_client", "prometheus_client"),
    ("beanie", "beanie"),
    ("uvicorn", "uvicorn"),
    ("fastapi", "fastapi"),
)
# Builtins with a group of their own; any other builtin's self time goes to its callers.
_BUILTIN_GROUPS: tuple[tuple[str, str], ...] = (
    ("_asyncio", ASYNCIO),
    ("_contextvars", ASYNCIO),
    ("select.epoll", EPOLL),
    ("_socket.socket", SOCKETS),
    ("pymongo.", PYMONGO),
    ("bson.", PYMONGO),
    ("pydantic_core", "pydantic"),
)

Func = tuple[str, int, str]


def group_of_file(filename: str) -> str:
    """The group of a function defined in ``filename``: ``tracker.<module>``, a library,
    ``asyncio``, ``stdlib: <module>``, the harness, or ``other: <package>``."""
    path = filename.replace("\\", "/")
    if path.startswith(TRACKER):
        module = path[len(TRACKER) + 1 :].removesuffix(".py").replace("/", ".")
        return f"tracker.{module.removesuffix('.__init__')}"
    if path.startswith(BENCH):
        return "bench (the harness)"
    for part, group in _PACKAGES:
        if f"/{part}/" in path:
            return group
    if "/asyncio/" in path:
        return ASYNCIO
    if path.startswith(STDLIB):
        return "stdlib: " + path[len(STDLIB) + 1 :].split("/")[0].removesuffix(".py")
    if path.startswith("<frozen"):
        return "stdlib: " + path.strip("<>").split()[-1]
    if path == "<string>":
        return "other: generated code (dataclass __init__, <string>)"
    match = re.search(r"/site-packages/([^/]+)", path)
    return f"other: {match.group(1).removesuffix('.py')}" if match else "other"


def group_of_builtin(name: str) -> str | None:
    for part, group in _BUILTIN_GROUPS:
        if part in name:
            return group
    return None


def family(group: str) -> str:
    """The library a group belongs to: all of the tracker's modules are one."""
    if group.startswith("tracker."):
        return TRACKER_ALL
    if group.startswith("stdlib: "):
        return STDLIB_OTHER
    if group.startswith("other"):
        return "other packages"
    return group


def _short(path: str) -> str:
    for root in (TRACKER, BENCH):
        if path.startswith(root):
            return Path(root).name + path[len(root) :]
    return re.sub(r".*/site-packages/", "", path).replace(STDLIB + "/", "")


def label(func: Func) -> str:
    filename, line, name = func
    return name if filename == "~" else f"{name} ({_short(filename)}:{line})"


@dataclass(frozen=True)
class Attribution:
    """Self time by group (a builtin's own group, else shared among its callers' groups
    by what each call cost) and inclusive time by group (the cumulative time of the calls
    that enter the group from outside it)."""

    own: Counter[str]
    inclusive: Counter[str]


def _key_of(func: Func) -> str | None:
    return group_of_builtin(func[2]) if func[0] == "~" else group_of_file(func[0])


def attribute(raw: dict[Func, tuple], regroup: Callable[[str], str]) -> Attribution:  # type: ignore[type-arg]
    def key(func: Func) -> str | None:
        found = _key_of(func)
        return None if found is None else regroup(found)

    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for func, (_, _, tt, _, callers) in raw.items():
        mine = key(func)
        if mine is not None:
            own[mine] += tt
            continue
        edges = {caller: values[2] for caller, values in callers.items()}
        spent = sum(edges.values())
        if not spent:
            own["builtins (no caller)"] += tt
            continue
        for caller, share in edges.items():
            own[key(caller) or "builtins (called by builtins)"] += tt * share / spent
    for func, (_, _, _, _, callers) in raw.items():
        mine = key(func)
        if mine is None:
            continue
        for caller, values in callers.items():
            if key(caller) != mine:
                inclusive[mine] += values[3]
    return Attribution(own, inclusive)


def main_caller_group(raw: dict[Func, tuple], func: Func) -> str:  # type: ignore[type-arg]
    """For a builtin: the group of the caller that spent most in it."""
    callers = raw[func][4]
    if not callers:
        return "builtin"
    caller = max(callers, key=lambda c: callers[c][2])
    return f"builtin, from {_key_of(caller) or 'a builtin'}"


def _group_table(
    title: str, attribution: Attribution, total: float, per: float, include: tuple[str, ...]
) -> list[str]:
    names = set(attribution.own) | set(include)
    rows = sorted(names, key=lambda name: -attribution.own.get(name, 0.0))
    lines = [
        f"#### {title}",
        "",
        "| group | self µs/msg | self share | inclusive µs/msg |",
        "|---|---|---|---|",
    ]
    for name in rows:
        value = attribution.own.get(name, 0.0)
        lines.append(
            f"| {name} | {value * per:,.1f} | {value / total:.1%} | "
            f"{attribution.inclusive.get(name, 0.0) * per:,.1f} |"
        )
    return [*lines, ""]


def cprofile_report(stats: pstats.Stats, messages: int) -> list[str]:
    raw: dict[Func, tuple] = stats.stats  # type: ignore[attr-defined,type-arg]
    total = sum(values[2] for values in raw.values())
    per = 1e6 / messages
    lines = [
        f"cProfile recorded {total:.2f} s of self time over {messages:,} messages: "
        f"{total * per:,.0f} µs per message, cProfile's own overhead on every Python call "
        "included (it inflates call-heavy pure-Python code most).",
        "",
    ]
    rows = [(func, nc, tt, ct) for func, (_, nc, tt, ct, _) in raw.items()]
    for title, index in (("self time (tottime)", 2), ("cumulative time", 3)):
        lines += [
            f"#### Top {TOP} by {title}",
            "",
            "| # | function | group | calls/msg | self µs/msg | cumulative µs/msg |",
            "|---|---|---|---|---|---|",
        ]
        ranked = sorted(rows, key=lambda row: row[index], reverse=True)[:TOP]
        for i, (func, nc, tt, ct) in enumerate(ranked, 1):
            group = _key_of(func) or main_caller_group(raw, func)
            lines.append(
                f"| {i} | `{label(func)}` | {group} | {nc / messages:.2f} | {tt * per:,.1f} "
                f"| {ct * per:,.1f} |"
            )
        lines.append("")
    libraries = attribute(raw, family)
    modules = attribute(raw, lambda group: group)
    tracker_only = Attribution(
        Counter({k: v for k, v in modules.own.items() if k.startswith("tracker.")}),
        modules.inclusive,
    )
    stdlib_only = Attribution(
        Counter({k: v for k, v in modules.own.items() if k.startswith(("stdlib: ", "other"))}),
        modules.inclusive,
    )
    lines += _group_table("By library", libraries, total, per, REQUESTED)
    lines += _group_table("The tracker, by module", tracker_only, total, per, ())
    lines += _group_table(
        "The standard library (other than asyncio), by module", stdlib_only, total, per, ()
    )
    return lines


_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _frame(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    return (frame, "") if match is None else (match.group("name"), match.group("file"))


def _idle(leaf: str) -> bool:
    """A thread of an executor waiting for work (py-spy does not always see it as idle)."""
    return leaf.startswith("_worker (") and "concurrent/futures/thread.py" in leaf


def pyspy_report(raw: Path, messages: int, rate: int) -> list[str]:
    """Self and inclusive samples by function and by group, from py-spy's raw output
    (collapsed stacks, ``--full-filenames --function``)."""
    self_by_func: Counter[str] = Counter()
    incl_by_func: Counter[str] = Counter()
    own: dict[str, Counter[str]] = {"library": Counter(), "module": Counter()}
    incl: dict[str, Counter[str]] = {"library": Counter(), "module": Counter()}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = [f for f in stack.split(";") if "(" in f]
        if not frames or _idle(frames[-1]):
            continue
        # The frames below the event loop (runpy, asyncio.run, main) hold every sample.
        loops = [i for i, f in enumerate(frames) if f.startswith("BaseEventLoop._run_once ")]
        if loops:
            frames = frames[loops[-1] :]
        count = int(count_text)
        total += count
        labels, groups = [], []
        for frame in frames:
            name, filename = _frame(frame)
            labels.append(f"{name} ({_short(filename)})")
            groups.append(group_of_file(filename))
        self_by_func[labels[-1]] += count
        for label_ in set(labels):
            incl_by_func[label_] += count
        for kind, regroup in (("library", family), ("module", lambda g: g)):
            own[kind][regroup(groups[-1])] += count
            for group in {regroup(g) for g in groups}:
                incl[kind][group] += count
    if total == 0:
        return ["py-spy recorded no samples."]
    per = 1 / rate * 1e6 / messages  # µs per message of one sample
    lines = [
        f"py-spy: {total:,} samples at {rate} Hz over {messages:,} messages (≈ "
        f"{total * per:,.0f} µs per message of the event loop busy; idle executor threads "
        "left out).",
        "",
    ]
    for title, counts in (("self samples", self_by_func), ("inclusive samples", incl_by_func)):
        lines += [
            f"#### Top {TOP} by {title}",
            "",
            "| # | function | share | ≈ µs/msg |",
            "|---|---|---|---|",
        ]
        for i, (name, n) in enumerate(counts.most_common(TOP), 1):
            lines.append(f"| {i} | `{name}` | {n / total:.1%} | {n * per:,.1f} |")
        lines.append("")
    libraries = Attribution(own["library"], incl["library"])
    modules = Attribution(
        Counter({k: v for k, v in own["module"].items() if k.startswith("tracker.")}),
        incl["module"],
    )
    others = Attribution(
        Counter({k: v for k, v in own["module"].items() if k.startswith(("stdlib: ", "other"))}),
        incl["module"],
    )
    lines += _group_table("By library", libraries, total, per, REQUESTED)
    lines += _group_table("The tracker, by module", modules, total, per, ())
    lines += _group_table(
        "The standard library and other packages, by module", others, total, per, ()
    )
    return lines
