"""Private RabbitMQ nodes and a private three-node cluster for fault tests.

The shared broker (``rabbit@localhost`` on 5672) is never touched: every node started here has
its own node name, AMQP port, distribution port, data and log directories, plugin list (empty),
config file, Erlang cookie and HOME, all under a temporary directory that teardown removes. Every
``rabbitmqctl`` call names its node with ``-n``.

Node names follow ``tracker-<run>-<name>@localhost``; ``<run>`` is random per process, so two test
runs never collide. Each node's environment carries ``TRACKER_BROKER_NODES_OWNER=<pid>:<start>``
of the Python process that started it: ``cleanup_stale()`` kills the beam processes (and removes
the directories) whose owner is gone, and nothing else.

Synchronous on purpose: call it from fixtures, or from async tests through ``asyncio.to_thread``.
The pytest fixtures (``private_node``, ``private_cluster``) are in tests/conftest_broker_nodes.py.

CLI (for a make target)::

    python -m tests.broker_nodes cluster --nodes 3 --base-port 5700
    python -m tests.broker_nodes node --port 5690
    python -m tests.broker_nodes cleanup
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

SBIN = Path(os.environ.get("TRACKER_RABBITMQ_SBIN", "/usr/lib/rabbitmq/bin"))
HOST = "localhost"
NAME_PREFIX = "tracker-"
WORKDIR_PREFIX = "tracker-broker-nodes-"
OWNER_VAR = "TRACKER_BROKER_NODES_OWNER"
DIST_PORT_OFFSET = 20000
RUN_ID = secrets.token_hex(4)

_NODENAME_RE = re.compile(rf"^{re.escape(NAME_PREFIX)}[0-9a-f]{{8}}-[A-Za-z0-9_-]+@")
_LIVE: set[PrivateNode] = set()
_LIVE_LOCK = threading.Lock()
_RESERVED_PORTS: set[int] = set()


class BrokerNodeError(RuntimeError):
    """A private node failed to start, stop or answer a CLI command."""


# --------------------------------------------------------------------------- processes


def _process_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its ")" are fixed.
    return stat.rsplit(")", 1)[1].split()[19]


def _owner_tag(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_process_start_time(pid)}"


def _owner_alive(tag: str) -> bool:
    pid, _, start = tag.partition(":")
    if not pid.isdigit():
        return False
    return _process_start_time(int(pid)) == start


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def _private_beams() -> Iterator[tuple[int, dict[str, str]]]:
    """Every beam process started by this harness (any run): (pid, environment)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if not (entry / "exe").resolve().name.startswith("beam"):
                continue
        except OSError:
            continue
        env = _environ(pid)
        nodename = env.get("RABBITMQ_NODENAME", "")
        if OWNER_VAR in env and _NODENAME_RE.match(nodename) and _is_server(pid):
            yield pid, env


def _is_server(pid: int) -> bool:
    """A broker's beam (``-s rabbit boot``), not a CLI tool's (an escript)."""
    try:
        return b"\0rabbit\0boot\0" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def live_private_nodes() -> dict[str, int]:
    """Node name -> beam pid of every private node running on this machine (any run)."""
    return {env["RABBITMQ_NODENAME"]: pid for pid, env in _private_beams()}


def _kill_and_wait(pids: Sequence[int], timeout: float = 10.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(_pid_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            raise BrokerNodeError(f"beam processes {list(pids)} survived SIGKILL")
        time.sleep(0.02)


def cleanup_stale() -> list[str]:
    """Kill private nodes left by earlier interrupted runs and remove their directories.

    Only beam processes whose environment carries this harness's owner tag and node-name scheme
    are considered, and only those whose owning Python process is gone: never the shared
    ``rabbit@...`` node, never the nodes of another run that is still going. Returns the node
    names it killed.
    """
    killed: list[str] = []
    pids: list[int] = []
    for pid, env in _private_beams():
        nodename = env["RABBITMQ_NODENAME"]
        if nodename.startswith("rabbit@") or _owner_alive(env[OWNER_VAR]):
            continue
        pids.append(pid)
        killed.append(nodename)
    _kill_and_wait(pids)
    tmp = Path(tempfile.gettempdir())
    for workdir in tmp.glob(f"{WORKDIR_PREFIX}*"):
        owner = workdir / "owner"
        try:
            tag = owner.read_text().strip()
        except OSError:
            continue
        if not _owner_alive(tag):
            shutil.rmtree(workdir, ignore_errors=True)
    return killed


# --------------------------------------------------------------------------- ports


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the broker's listeners do; a port in LISTEN is still refused.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def find_free_ports(count: int = 1, *, start: int | None = None) -> list[int]:
    """``count`` consecutive AMQP ports, each free with its distribution port (+20000) free too.

    The search starts at a random point of 5700..9899 (below the ephemeral range) unless
    ``start`` is given, so that concurrent runs rarely race for the same ports.
    """
    low, high = 5700, 9900 - count
    first = start if start is not None else low + secrets.randbelow(high - low)
    candidates = [*range(first, high), *range(low, first)] if start is None else [first]
    with _LIVE_LOCK:
        for base in candidates:
            ports = list(range(base, base + count))
            if all(
                p not in _RESERVED_PORTS and _port_free(p) and _port_free(p + DIST_PORT_OFFSET)
                for p in ports
            ):
                _RESERVED_PORTS.update(ports)
                return ports
    raise BrokerNodeError(f"no {count} free AMQP/distribution port pairs")


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- one node


class PrivateNode:
    """One RabbitMQ node of its own: ``tracker-<run>-<name>@localhost`` on ``amqp_port``.

    ``workdir``: where its data, logs and config go. When omitted a temporary directory is
    created and removed by ``close()``; a given directory belongs to the caller (only the node's
    own subdirectory is removed).
    """

    def __init__(
        self,
        name: str,
        amqp_port: int,
        *,
        workdir: Path | None = None,
        dist_port: int | None = None,
        cookie: str | None = None,
        heartbeat: int = 10,
        extra_config: str = "",
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ValueError(f"node name {name!r}: use letters, digits, '-' and '_'")
        self.name = name
        self.nodename = f"{NAME_PREFIX}{RUN_ID}-{name}@{HOST}"
        self.amqp_port = amqp_port
        self.dist_port = dist_port if dist_port is not None else amqp_port + DIST_PORT_OFFSET
        self.url = f"amqp://guest:guest@127.0.0.1:{amqp_port}/"
        self._own_root = workdir is None
        root = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX)) if workdir is None else workdir
        if self._own_root:
            (root / "owner").write_text(_owner_tag())
        self.root = root
        self.workdir = root / name
        self.cookie = cookie or secrets.token_hex(16)
        self.heartbeat = heartbeat
        self.extra_config = extra_config
        self._process: subprocess.Popen[bytes] | None = None
        self._prepare()

    # ----------------------------------------------------------------- layout

    @property
    def log_dir(self) -> Path:
        return self.workdir / "log"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "node.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.nodename}.log"

    def _prepare(self) -> None:
        home = self.workdir / "home"
        for directory in (home, self.workdir / "mnesia", self.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(self.cookie)
            cookie.chmod(0o400)
        (self.workdir / "enabled_plugins").write_text("[].\n")
        # Keeps /etc/rabbitmq/rabbitmq-env.conf (NODENAME=rabbit@localhost) out of the picture.
        (self.workdir / "rabbitmq-env.conf").write_text(
            "# private node: see tests/broker_nodes.py\n"
        )
        (self.workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            f"heartbeat = {self.heartbeat}\n"
            "log.file.level = info\n"
            "log.console = false\n" + self.extra_config
        )

    def env(self, *, server: bool = False) -> dict[str, str]:
        """The environment of every CLI call aimed at the node; with ``server`` the node's own
        (which also carries the owner tag that ``cleanup_stale`` looks for)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RABBITMQ_", "ERL_")) and k != "HOME"
        }
        dist_interface = "-kernel inet_dist_use_interface {127,0,0,1}"
        env.update(
            HOME=str(self.workdir / "home"),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_CONF_ENV_FILE=str(self.workdir / "rabbitmq-env.conf"),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.workdir / "mnesia"),
            RABBITMQ_MNESIA_DIR=str(self.workdir / "mnesia" / self.nodename),
            RABBITMQ_LOG_BASE=str(self.log_dir),
            RABBITMQ_PID_FILE=str(self.pid_file),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.workdir / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(self.workdir / "rabbitmq.conf"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=dist_interface,
            RABBITMQ_CTL_ERL_ARGS=dist_interface,
        )
        if server:
            env[OWNER_VAR] = _owner_tag()
        return env

    # ----------------------------------------------------------------- CLI

    def cli(self, tool: str, *args: str, timeout: float = 60.0, check: bool = True) -> str:
        """Run ``tool -n NODE args`` (rabbitmqctl, rabbitmq-queues, rabbitmq-diagnostics...)."""
        assert _NODENAME_RE.match(self.nodename), self.nodename  # never the shared node
        try:
            done = subprocess.run(
                [str(SBIN / tool), "-n", self.nodename, *args],
                env=self.env(),
                cwd=self.workdir,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerNodeError(f"{tool} {' '.join(args)} on {self.nodename}: timed out") from exc
        output = done.stdout.decode(errors="replace")
        if check and done.returncode != 0:
            raise BrokerNodeError(
                f"{tool} {' '.join(args)} on {self.nodename} exited {done.returncode}:\n"
                f"{output}{done.stderr.decode(errors='replace')}"
            )
        return output

    def rabbitmqctl(self, *args: str, timeout: float = 60.0) -> str:
        return self.cli("rabbitmqctl", *args, timeout=timeout)

    def rabbitmq_queues(self, *args: str, timeout: float = 60.0) -> str:
        return self.cli("rabbitmq-queues", *args, timeout=timeout)

    def list_queues(self, *fields: str) -> list[dict[str, Any]]:
        """``rabbitmqctl list_queues FIELDS`` as dicts (e.g. name, type, leader, members)."""
        fields = fields or ("name", "type", "messages", "leader", "members")
        out = self.rabbitmqctl("-q", "list_queues", *fields, "--formatter", "json")
        return list(json.loads(out))

    def queue_info(self, queue: str) -> dict[str, Any]:
        for info in self.list_queues("name", "type", "messages", "leader", "members"):
            if info["name"] == queue:
                return info
        raise BrokerNodeError(f"no queue {queue!r} on {self.nodename}")

    def close_connections(self, reason: str = "closed by the test") -> None:
        self.rabbitmqctl("close_all_connections", reason)

    def set_policy(self, name: str, pattern: str, definition: dict[str, Any]) -> None:
        self.rabbitmqctl(
            "set_policy", "--apply-to", "queues", name, pattern, json.dumps(definition)
        )

    # ----------------------------------------------------------------- lifecycle

    @property
    def pid(self) -> int | None:
        """The beam process of the running node, if any."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            pid = None
        if pid is not None and _pid_alive(pid) and self._is_mine(pid):
            return pid
        for candidate, env in _private_beams():
            if env.get("RABBITMQ_NODENAME") == self.nodename:
                return candidate
        return None

    def _is_mine(self, pid: int) -> bool:
        """Guards against a recycled pid in a stale pid file."""
        return _environ(pid).get("RABBITMQ_NODENAME") == self.nodename and _is_server(pid)

    def is_running(self) -> bool:
        return self.pid is not None

    def start(self, timeout: float = 60.0, *, wait: bool = True) -> PrivateNode:
        """Start the node in the background (logs in ``log_dir``) and wait until it is ready."""
        if self._process is not None and self._process.poll() is None:
            raise BrokerNodeError(f"{self.nodename} is already running")
        if self.is_running():
            raise BrokerNodeError(f"{self.nodename} is already running (pid {self.pid})")
        server = SBIN / "rabbitmq-server"
        if not server.exists():
            raise BrokerNodeError(f"{server} not found (set TRACKER_RABBITMQ_SBIN)")
        if _tcp_open(self.amqp_port):
            raise BrokerNodeError(f"port {self.amqp_port} is already taken by another server")
        _hook_termination_signals()
        with _LIVE_LOCK:
            _LIVE.add(self)
        self._reap()
        with (
            (self.log_dir / "startup_log").open("ab") as out,
            (self.log_dir / "startup_err").open("ab") as err,
        ):
            # Called directly, not through /usr/sbin/rabbitmq-server (which su's to rabbitmq
            # and reads /etc/rabbitmq). Its own session: a Ctrl-C in the terminal is ours.
            self._process = subprocess.Popen(
                [str(server)],
                env=self.env(server=True),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        if wait:
            self.wait_until_ready(timeout)
        return self

    def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Until the AMQP port accepts connections and ``rabbitmqctl await_startup`` agrees."""
        deadline = time.monotonic() + timeout
        while not _tcp_open(self.amqp_port):
            if self._process is not None and self._process.poll() is not None:
                raise BrokerNodeError(
                    f"{self.nodename} exited with {self._process.returncode}: {self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise BrokerNodeError(
                    f"{self.nodename} not listening on {self.amqp_port} after {timeout}s: "
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)
        remaining = max(1.0, deadline - time.monotonic())
        self.rabbitmqctl(
            "await_startup", "--timeout", str(int(remaining) + 1), timeout=remaining + 10
        )

    def stop(self, timeout: float = 60.0) -> None:
        """Graceful ``rabbitmqctl -n NODE stop``: clients get connection.close (320)."""
        if not self.is_running():
            self._reap()
            return
        try:
            self.rabbitmqctl("stop", str(self.pid_file), timeout=timeout)
        except BrokerNodeError:
            self.kill()
            raise
        self._wait_gone(timeout)

    def kill(self) -> None:
        """SIGKILL of the node's beam process: a crash, no goodbye to the clients."""
        pid = self.pid
        if pid is not None:
            _kill_and_wait([pid])
        self._wait_gone(10.0)

    def restart(self, timeout: float = 60.0) -> PrivateNode:
        self.stop(timeout)
        return self.start(timeout)

    def _wait_gone(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.is_running():
            if time.monotonic() > deadline:
                self.kill()
                break
            time.sleep(0.05)
        self._reap()

    def _reap(self) -> None:
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=10)
            self._process = None

    def close(self) -> None:
        """Teardown: kill the node (its data is discarded anyway) and remove its directories."""
        try:
            self.kill()
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(self)
                _RESERVED_PORTS.discard(self.amqp_port)
            shutil.rmtree(self.root if self._own_root else self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        parts = []
        for path in (self.log_dir / "startup_err", self.log_dir / "startup_log", self.log_file):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").strip().splitlines()
                if text:
                    parts.append(f"--- {path.name}\n" + "\n".join(text[-lines:]))
        return "\n".join(parts) or "(no log output)"

    def memory_mb(self) -> float:
        """Resident memory of the beam process, in MiB."""
        pid = self.pid
        if pid is None:
            return 0.0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def __enter__(self) -> PrivateNode:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PrivateNode({self.nodename}, amqp={self.amqp_port}, dist={self.dist_port})"


# --------------------------------------------------------------------------- a cluster

_CLUSTER_IDS = iter(range(1, 1_000_000))


class PrivateCluster:
    """``size`` private nodes on ``base_port..base_port+size-1`` joined into one cluster.

    Node ``i`` (0-based) is ``nodes[i]``; nodes 1..n-1 join node 0.
    """

    def __init__(self, size: int = 3, base_port: int | None = None, *, name: str = "") -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        ports = find_free_ports(size, start=base_port)
        self.root = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        (self.root / "owner").write_text(_owner_tag())
        cookie = secrets.token_hex(16)
        prefix = name or f"c{next(_CLUSTER_IDS)}"
        self.nodes = [
            PrivateNode(f"{prefix}n{i + 1}", port, workdir=self.root, cookie=cookie)
            for i, port in enumerate(ports)
        ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url_list(self) -> str:
        return ",".join(self.urls)

    @property
    def nodenames(self) -> list[str]:
        return [node.nodename for node in self.nodes]

    def start(self, timeout: float = 90.0) -> PrivateCluster:
        deadline = time.monotonic() + timeout
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            for node in self.nodes:
                node.start(wait=False)
            list(pool.map(lambda n: n.wait_until_ready(timeout), self.nodes))
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            node.rabbitmqctl("stop_app")
            node.rabbitmqctl("reset")
            node.rabbitmqctl("join_cluster", seed.nodename)
            node.rabbitmqctl("start_app")
        self.wait_until_running(max(1.0, deadline - time.monotonic()))
        return self

    def running_nodes(self, via: int | None = None) -> list[str]:
        """``cluster_status`` running nodes, asked of node ``via`` (or the first one up)."""
        candidates = [self.nodes[via]] if via is not None else self.nodes
        for node in candidates:
            if not node.is_running():
                continue
            status = json.loads(node.rabbitmqctl("-q", "cluster_status", "--formatter", "json"))
            return sorted(status.get("running_nodes", []))
        return []

    def wait_until_running(self, timeout: float = 60.0, nodes: Sequence[int] | None = None) -> None:
        """Until ``cluster_status`` lists the given nodes (default: all) as running."""
        wanted = sorted(self.nodes[i].nodename for i in (nodes or range(len(self.nodes))))
        deadline = time.monotonic() + timeout
        while True:
            running = self.running_nodes()
            if all(n in running for n in wanted):
                return
            if time.monotonic() > deadline:
                raise BrokerNodeError(f"cluster running {running}, expected {wanted}")
            time.sleep(0.2)

    def node_index(self, nodename: str) -> int:
        return self.nodenames.index(nodename)

    def stop_node(self, i: int) -> None:
        self.nodes[i].stop()

    def kill_node(self, i: int) -> None:
        self.nodes[i].kill()

    def start_node(self, i: int, timeout: float = 90.0) -> None:
        self.nodes[i].start(timeout)
        self.wait_until_running(timeout)

    def ensure_all_running(self, timeout: float = 90.0) -> None:
        """Restart every node that a test stopped or killed; wait until all are clustered."""
        stopped = [node for node in self.nodes if not node.is_running()]
        for node in stopped:
            node.start(wait=False)
        for node in stopped:
            node.wait_until_ready(timeout)
        self.wait_until_running(timeout)

    def memory_mb(self) -> list[float]:
        return [node.memory_mb() for node in self.nodes]

    def close(self) -> None:
        errors: list[BaseException] = []
        for node in self.nodes:
            try:
                node.close()
            except BaseException as exc:
                errors.append(exc)
        shutil.rmtree(self.root, ignore_errors=True)
        if errors:
            raise errors[0]

    def __enter__(self) -> PrivateCluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@atexit.register
def _kill_live_nodes() -> None:
    with _LIVE_LOCK:
        nodes = list(_LIVE)
    for node in nodes:
        with contextlib.suppress(Exception):
            node.close()
    mine = _owner_tag()
    for root in {node.root for node in nodes}:  # a cluster's directory too
        with contextlib.suppress(OSError):
            if (root / "owner").read_text().strip() == mine:
                shutil.rmtree(root, ignore_errors=True)


_SIGNALS_HOOKED = False


def _on_termination(signum: int, _frame: object) -> None:
    _kill_live_nodes()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _hook_termination_signals() -> None:
    """atexit does not run on SIGTERM/SIGHUP: when nobody handles them (a plain pytest run),
    kill this process's nodes first, then die of the signal as before. Main thread only."""
    global _SIGNALS_HOOKED
    if _SIGNALS_HOOKED or threading.current_thread() is not threading.main_thread():
        return
    _SIGNALS_HOOKED = True
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, _on_termination)


# --------------------------------------------------------------------------- CLI


def _serve(target: PrivateNode | PrivateCluster) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        target.start()
        nodes = target.nodes if isinstance(target, PrivateCluster) else [target]
        for node in nodes:
            print(node.url, flush=True)
        for node in nodes:
            print(f"{node.nodename} pid={node.pid} log={node.log_file}", file=sys.stderr)
        while not stop.wait(0.5):
            pass
        return 0
    except BrokerNodeError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        target.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.broker_nodes", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cluster = sub.add_parser("cluster", help="start a private cluster; Ctrl-C tears it down")
    cluster.add_argument("--nodes", type=int, default=3)
    cluster.add_argument("--base-port", type=int, default=None)
    node = sub.add_parser("node", help="start one private node; Ctrl-C tears it down")
    node.add_argument("--port", type=int, default=None)
    node.add_argument("--name", default="n1")
    sub.add_parser("cleanup", help="kill private nodes left behind by interrupted runs")
    args = parser.parse_args(argv)
    if args.command == "cleanup":
        for nodename in cleanup_stale():
            print(f"killed {nodename}")
        return 0
    cleanup_stale()
    if args.command == "cluster":
        return _serve(PrivateCluster(args.nodes, args.base_port))
    port = args.port if args.port is not None else find_free_ports(1)[0]
    return _serve(PrivateNode(args.name, port))


if __name__ == "__main__":
    sys.exit(main())
