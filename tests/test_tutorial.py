"""docs/tutorial.md, run: its shell commands in the order written, its consumer module as
written, against a real `tracker serve` on the test broker; the output it shows compared with
what the commands print, and its promises checked through the service's API.

What runs, and what does not:

- `git clone` and `cd` into the clone are not run: this working tree is the clone, and
  everything after them runs in a temporary directory standing for it, with the
  repository's `.venv` (`source .venv/bin/activate` sources the repository's own).
- `make demo` runs, in the repository, as written (about 10 s).
- `tracker serve` starts in the background (the tutorial's first terminal) on a free port
  given by TRACKER_HTTP_PORT, and is stopped at the end by SIGINT, as Ctrl-C would.
- Every other command runs with bash in the order written, with the exports and the
  activation before it; a `tracker` command waits first until the service has nothing
  queued or processing, as a reader would before looking.
- The console's clicks (the prose of its section) are done as the browser would do them:
  the pages followed by their links, the task page's Edit and retry form posted.
- The install commands of "Use it in your own project" are not run: they install into
  another environment and need the package index (about 20 s). Their distribution name is
  checked against pyproject.toml instead.

The queue is given a unique name and the port a free one, in the commands and the module
alike; both are put back before comparing output. Ids and times in the shown output match
any id and time.
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest

from tracker.cli.serve import consumers_of
from tracker.rabbit.topology import topology_queue_names

pytestmark = pytest.mark.rabbitmq
ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial.md"
QUEUE = "orders"
ADDRESS = "127.0.0.1:9464"
CONSOLE_SECTION = "Retry in the console"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
HEADING = re.compile(r"^## (.+)$", re.M)
# Skipped commands (see the module's docstring), by how they start.
SKIPPED = ("git clone ", "cd ", "pip install ", "uv add ", "uv run ")
# Values that differ on every run, matched as such in the shown output.
VARYING = [
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<uuid>"),
    (re.compile(r"\b[0-9a-f]{16}\b"), "<group>"),
    (re.compile(r"\b\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\b"), "<time>"),
]


@dataclass
class Block:
    lang: str
    text: str
    section: str
    start: int  # offset in the page


@dataclass
class Run:
    """What the tutorial's commands did: their output, the service, timings."""

    workdir: Path
    env: dict[str, str]
    port: int
    queue: str
    prelude: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    service: subprocess.Popen[bytes] | None = None
    demo_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def blocks(page: str) -> list[Block]:
    headings = [(m.start(), m.group(1)) for m in HEADING.finditer(page)]
    found = []
    for match in FENCE.finditer(page):
        section = next((h for at, h in reversed(headings) if at < match.start()), "")
        found.append(Block(match.group(1), match.group(2), section, match.start()))
    return found


def commands(script: str) -> list[str]:
    """The commands of an sh block: continued lines joined, comments and blanks left out."""
    lines = (line.strip() for line in re.sub(r"\\\n\s*", " ", script).splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def localized(text: str, run: Run) -> str:
    return re.sub(rf"\b{QUEUE}\b", run.queue, text.replace(ADDRESS, f"127.0.0.1:{run.port}"))


def normalized(output: str, run: Run) -> list[str]:
    text = output.replace(run.queue, QUEUE)
    for pattern, token in VARYING:
        text = pattern.sub(token, text)
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def until(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within:g} s: {what}"
        time.sleep(0.1)


def settled(run: Run) -> bool:
    queues = httpx.get(f"{run.url}/api/v1/queues", timeout=10).json()["items"]
    return all(q["counts"].get("queued", 0) + q["counts"].get("processing", 0) == 0 for q in queues)


def bash(command: str, run: Run, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = "\n".join(["set -eo pipefail", *run.prelude, command])
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=run.env, capture_output=True, text=True, timeout=120
    )


def start_service(command: str, run: Run) -> None:
    script = "\n".join(["set -eo pipefail", *run.prelude, f"exec {command}"])
    with (run.workdir / "serve.log").open("wb") as log:
        run.service = subprocess.Popen(
            ["bash", "-c", script], cwd=run.workdir, env=run.env, stdout=log, stderr=log
        )

    def ready() -> bool:
        assert run.service is not None
        assert run.service.poll() is None, service_log(run)
        try:
            return httpx.get(f"{run.url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    until(ready, 30, "the service answers /healthz")


def service_log(run: Run) -> str:
    path = run.workdir / "serve.log"
    return path.read_text()[-3000:] if path.exists() else ""


def execute(command: str, run: Run) -> str:
    """Run one of the tutorial's commands as the test's rules say; its stdout."""
    if command.startswith(SKIPPED):
        return ""
    if command == "make demo":
        started = time.monotonic()
        done = bash(command, run, ROOT)
        run.demo_seconds = time.monotonic() - started
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout
    if command.startswith("source .venv/"):
        run.prelude.append(command.replace("source .venv/", f"source {ROOT}/.venv/", 1))
        return ""
    if command.startswith("export "):
        run.prelude.append(command)
        return ""
    if command.startswith("tracker serve "):
        start_service(command, run)
        return ""
    if command.startswith("tracker ") and run.service is not None:
        until(lambda: settled(run), 30, f"the tasks settle before {command!r}")
    done = bash(command, run, run.workdir)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    run.outputs[command] = done.stdout
    return done.stdout


def submitted(script: str) -> list[dict[str, Any]]:
    """The bodies of an sh block's `curl -d '...'` submits."""
    return [json.loads(body) for body in re.findall(r"-d '(\{.*?\})'", script)]


def click_through_console(run: Run, section: str, task_id: str, payload: dict[str, Any]) -> None:
    """The console section's clicks: overview → the failing group → its task → Edit and retry
    with the payload corrected as the prose says."""
    [(wrong, right)] = re.findall(r'change `"(\w+)"` to `"(\w+)"`', section)
    with httpx.Client(base_url=run.url, timeout=10) as browser:
        overview = html.unescape(browser.get("/").text)
        assert run.queue in overview
        [cause] = re.findall(r"its cause, `([^`]+)`", section)
        assert cause in overview
        [group_id] = re.findall(r'href="/groups/([0-9a-f]{16})"', overview)
        group = browser.get(f"/groups/{group_id}").text
        assert f'href="/tasks/{task_id}"' in group
        page = browser.get(f"/tasks/{task_id}").text
        assert "Edit and retry" in page
        assert "Retry with this payload" in page
        [action] = re.findall(r'action="(/executions/[^"]+/retry)"', page)
        [token] = re.findall(r'name="csrf_token" value="([^"]+)"', page)
        state = browser.get(f"/api/v1/failure-groups/{group_id}").json()["state"]
        assert state == "regressed"  # as the section says
        corrected = json.loads(json.dumps(payload).replace(f'"{wrong}"', f'"{right}"'))
        posted = browser.post(
            action,
            data={"csrf_token": token, "payload": json.dumps(corrected), "reason": "a typo"},
        )
        assert posted.status_code == 303, posted.text
        until(lambda: settled(run), 30, "the edited retry ends")
        assert "Attempt 2" in browser.get(f"/tasks/{task_id}").text


def walk(page: str, run: Run) -> None:
    """Every block of the page in order: modules written, commands run, shown output
    compared with what the block before it printed."""
    found = blocks(page)
    serve = next(c for b in found if b.lang == "sh" for c in commands(b.text) if "serve" in c)
    module_name = shlex.split(serve)[-1]
    printed: str | None = None
    for index, block in enumerate(found):
        if block.lang == "python" and "@tracker.tracked" in block.text:
            (run.workdir / f"{module_name}.py").write_text(localized(block.text, run))
        elif block.lang == "sh":
            script = localized(block.text, run)
            printed = "".join(execute(command, run) for command in commands(script))
            if CONSOLE_SECTION in block.section and CONSOLE_SECTION not in found[index - 1].section:
                [body] = submitted(script)
                end = found[index + 1].start if index + 1 < len(found) else len(page)
                prose = page[block.start : end]
                click_through_console(run, prose, body["task_id"], body["payload"])
        elif block.lang == "text":
            assert printed is not None, f"output shown after no command: {block.text[:80]}"
            assert normalized(printed, run) == normalized(block.text, run), block.text


def tasks(run: Run, *task_ids: str) -> dict[str, list[dict[str, Any]]]:
    return {
        task_id: httpx.get(f"{run.url}/api/v1/tasks/{task_id}", timeout=10).json()["executions"]
        for task_id in task_ids
    }


def delete_queues(amqp_url: str, workdir: Path, module_name: str) -> None:
    spec = importlib.util.spec_from_file_location(
        f"tutorial_{uuid.uuid4().hex}", workdir / f"{module_name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for consumer in consumers_of(module):
            tiers, timeout_ms = consumer.retry_policy.tiers_ms, round(consumer.timeout * 1000)
            for name in topology_queue_names(consumer.queue, tiers, timeout_ms):
                channel.queue_delete(name)
    finally:
        connection.close()


@pytest.fixture
def run(amqp_url: str, tmp_path: Path) -> Iterator[Run]:
    venv_bin = str(ROOT / ".venv" / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env["TRACKER_AMQP_URL"] = amqp_url
    port = free_port()
    env["TRACKER_HTTP_PORT"] = str(port)
    state = Run(tmp_path, env, port, f"tutorial-{uuid.uuid4().hex[:10]}")
    try:
        yield state
    finally:
        if state.service is not None and state.service.poll() is None:
            state.service.kill()
            state.service.wait()
        if any(tmp_path.glob("*.py")):
            delete_queues(amqp_url, tmp_path, next(tmp_path.glob("*.py")).stem)


def test_the_tutorial_runs_as_written(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    # Given: the tutorial, with its queue and port made this run's own
    page = TUTORIAL.read_text()
    assert f'"{QUEUE}"' in page
    assert ADDRESS in page
    started = time.monotonic()

    # When: its steps are followed to the end, then the service is stopped as Ctrl-C would
    walk(page, run)
    timelines = tasks(run, "order-1", "order-2", "order-3", "order-4")
    [queue] = [
        q for q in httpx.get(f"{run.url}/api/v1/queues", timeout=10).json()["items"]
        if q["name"] == run.queue
    ]  # fmt: skip
    audited = httpx.get(f"{run.url}/api/v1/audit", timeout=10).json()["items"]
    assert run.service is not None
    run.service.send_signal(signal.SIGINT)
    exit_code = run.service.wait(timeout=30)
    elapsed = time.monotonic() - started

    # Then: every order is priced, the two dead letters each retried once, archived, and
    # the service stops cleanly
    statuses = {task_id: [e["status"] for e in chain] for task_id, chain in timelines.items()}
    assert statuses == {
        "order-1": ["completed"],
        "order-2": ["completed"],
        "order-3": ["archived", "completed"],
        "order-4": ["archived", "completed"],
    }
    assert [e["result"] for e in timelines["order-1"]] == [{"total": 2.0}]
    assert timelines["order-3"][0]["error_message"] == "no price for 'kiwi'"
    assert timelines["order-3"][1]["result"] == {"total": 1.5}
    assert timelines["order-4"][1]["payload"] == {"item": "pear", "quantity": 3}
    assert timelines["order-4"][1]["result"] == {"total": 2.25}
    assert {k: queue["counts"][k] for k in ("completed", "dlq", "archived")} == {
        "completed": 4,
        "dlq": 0,
        "archived": 2,
    }
    assert {"replay.start", "edit_retry"} <= {entry["action"] for entry in audited}
    assert exit_code == 0, service_log(run)
    assert run.demo_seconds is not None, "make demo was not run"
    name = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    assert name in run.outputs["tracker --version"]
    installs = re.findall(r'(?:pip install|uv add) "([\w-]+) @ git\+', page)
    assert installs
    assert set(installs) == {name}
    with capsys.disabled():
        print(
            f"\ntutorial wall time: {elapsed:.1f} s (make demo {run.demo_seconds:.1f} s)",
            file=sys.stderr,
        )
