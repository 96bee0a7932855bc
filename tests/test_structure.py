"""The package's shape: no import cycle, small modules, a transport-free core, light imports,
and a module map in the docs that matches the tree."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tracker"
MAX_LINES = 320
HEAVY = ("beanie", "pymongo", "aio_pika", "aiormq", "pika", "mongomock", "mongomock_motor")
# The adapters and the command line may use a broker client; nothing else may.
ADAPTER_PREFIXES = ("tracker.rabbit", "tracker.cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (functions and TYPE_CHECKING blocks
    included): ``from a import b`` names ``a.b`` when that is a module, else ``a``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
    return found


def internal_graph() -> dict[str, set[str]]:
    return {name: imports_of(path) & MODULES.keys() for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_in_the_package() -> None:
    # Given / When
    cycle = find_cycle(internal_graph())
    # Then
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_the_core_imports_no_broker_client() -> None:
    clients = ("aio_pika", "aiormq", "pika")
    offenders = {
        name: sorted(i for i in imports_of(path) if i.split(".")[0] in clients)
        for name, path in MODULES.items()
        if not name.startswith(ADAPTER_PREFIXES)
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def loaded_after(code: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return {name.split(".")[0] for name in done.stdout.split()}


@pytest.mark.parametrize(
    "code",
    [
        "import tracker",
        "import tracker; tracker.TaskStatus; tracker.tracked; tracker.Settings",
        "from tracker.cli import main\n"
        "import contextlib\n"
        "with contextlib.suppress(SystemExit): main(['--help'])",
    ],
    ids=["import", "light-names", "cli-help"],
)
def test_light_entry_points_load_no_heavy_module(code: str) -> None:
    assert loaded_after(code) & set(HEAVY) == set()


def test_public_names_load_on_first_use() -> None:
    loaded = loaded_after("import tracker; tracker.Worker; tracker.TaskTracker")
    assert {"aio_pika", "beanie", "pymongo"} <= loaded


def test_every_public_name_resolves() -> None:
    import tracker

    for name in tracker.__all__:
        assert getattr(tracker, name) is not None, name
    with pytest.raises(AttributeError):
        _ = tracker.no_such_name  # type: ignore[attr-defined]


def test_the_docs_module_map_matches_the_tree() -> None:
    # Given: every line of the map in docs/README.md names a module as `tracker/...py`
    text = (ROOT / "docs" / "README.md").read_text()
    mapped = set(re.findall(r"^\| `(tracker/[\w/]+\.py)` \|", text, flags=re.M))
    # Then: the map names each module of the package once, and nothing else
    actual = {str(path.relative_to(ROOT)) for path in PACKAGE.rglob("*.py")}
    assert sorted(actual - mapped) == []
    assert sorted(mapped - actual) == []
