"""Every failure of the command is one line saying what to do, exit 1 or 2, within the bound
it is given; `--debug` shows the traceback. Run as an operator runs it: in a process of its
own, against a broker that refuses it, a MongoDB that is not there, a port already taken."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def tracker(*args: str, timeout: float = 60, **env: str) -> tuple[int, str, str, float]:
    """``tracker ARGS`` with only the given settings: exit code, stdout, stderr, seconds."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    clean["SERVE_TEST_QUEUE"] = f"failures-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "tracker.cli", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def error_line(stderr: str) -> str:
    """The one error line, last; nothing of a traceback anywhere."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    assert stderr.rstrip().splitlines()[-1] == errors[0], stderr
    return errors[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_mongodb_is_one_line_within_its_bound() -> None:
    # Given: nothing listens where TRACKER_MONGODB_URL points (measured: about 7 s, 5 s of
    # them the server selection bound)
    url = f"mongodb://127.0.0.1:{free_port()}/tracker"
    # When
    code, out, err, took = tracker("stats", TRACKER_MONGODB_URL=url)
    # Then
    line = error_line(err)
    assert (code, out) == (1, "")
    assert line.startswith(f"Error: cannot reach MongoDB at {url} within 5 s (")
    assert line.endswith("check TRACKER_MONGODB_URL and that the server is up")
    assert "Topology" not in line
    assert took < 35


def test_the_bound_is_the_url_s_own_server_selection_timeout() -> None:
    url = f"mongodb://127.0.0.1:{free_port()}/tracker?serverSelectionTimeoutMS=1500"
    code, _, err, took = tracker("stats", TRACKER_MONGODB_URL=url)
    assert code == 1
    assert "within 1.5 s" in error_line(err)
    assert took < 30


@pytest.mark.rabbitmq
@pytest.mark.parametrize(
    ("amqp", "advice"),
    [
        ("amqp://guest:guest@127.0.0.1:{port}/", "check that RabbitMQ runs there"),
        ("amqp://guest:not-the-password@127.0.0.1:5672/", "check the user and password"),
    ],
    ids=["wrong-port", "wrong-password"],
)
def test_serve_on_a_broker_that_refuses_is_one_line(amqp_url: str, amqp: str, advice: str) -> None:
    # Given
    url = amqp.format(port=free_port())
    # When
    code, _, err, took = tracker("serve", "tests.serve_target", "--port", "0", TRACKER_AMQP_URL=url)
    # Then
    line = error_line(err)
    assert code == 1
    assert line.startswith("Error: no RabbitMQ node reachable of 127.0.0.1:")
    assert advice in line
    assert "not-the-password" not in err
    # the aio-pika reconnection chatter is not shown: the one line says it all
    assert "Connection attempt" not in err
    assert took < 60


@pytest.mark.rabbitmq
def test_a_second_serve_on_the_same_port_is_one_line(amqp_url: str) -> None:
    # Given: the port taken, as a first `tracker serve` holds it
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        # When
        code, _, err, _ = tracker(
            "serve", "tests.serve_target", "--port", str(port), TRACKER_AMQP_URL=amqp_url
        )
    # Then
    line = error_line(err)
    assert code == 1
    assert line == (
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use (another process "
        "has it: stop it, or set TRACKER_HTTP_PORT / --port)"
    )


@pytest.mark.parametrize("concurrency", ["0", "99999999999"])
def test_serve_with_a_concurrency_out_of_bounds_is_a_usage_error(concurrency: str) -> None:
    code, _, err, _ = tracker("serve", "tests.serve_target", "-c", concurrency)
    assert code == 2
    assert "Traceback" not in err
    assert "is not in the range 1<=x<=10000" in err


def test_debug_shows_the_traceback_of_an_unexpected_error() -> None:
    # Given: a service URL that cannot be parsed once the command runs
    url = f"http://127.0.0.1:{free_port()}"
    # When
    plain = tracker("--service", url, "stats")
    debug = tracker("--debug", "--service", url, "stats")
    # Then: the same failure, one line, then with --debug the traceback behind it
    assert plain[0] == 1
    assert error_line(plain[2]).startswith(f"Error: cannot reach the service at {url}")
    assert debug[0] == 1
    assert "Traceback" in debug[2]
