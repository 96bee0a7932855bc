"""Pytest fixtures for private RabbitMQ nodes (the harness is tests/broker_nodes.py).

Load it with ``pytest_plugins = ("tests.conftest_broker_nodes",)`` (a test module, or the root
conftest). It registers the ``broker_nodes`` marker and puts it on every test that uses one of its
fixtures, so ``-m "not broker_nodes"`` deselects them. In CI (``CI=true``) a node that cannot
start fails the test; elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest

from tests.broker_nodes import (
    SBIN,
    BrokerNodeError,
    PrivateCluster,
    PrivateNode,
    cleanup_stale,
    find_free_ports,
)

MARKER = "broker_nodes: starts private RabbitMQ nodes and a 3-node cluster (tests/broker_nodes.py)"
T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    if not any(line.startswith("broker_nodes:") for line in config.getini("markers")):
        config.addinivalue_line("markers", MARKER)


_FIXTURES = {"private_node", "private_cluster", "broker_nodes_sbin"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test using ``private_node``/``private_cluster`` gets ``broker_nodes``, so that
    ``-m "not broker_nodes"`` deselects them."""
    for item in items:
        if _FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker("broker_nodes")


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


_STALE_CLEANED = False


def _start_or_skip(start: Callable[[], T], what: str) -> T:
    global _STALE_CLEANED
    if not _STALE_CLEANED:
        cleanup_stale()
        _STALE_CLEANED = True
    if not (SBIN / "rabbitmq-server").exists():
        _unavailable(f"{SBIN / 'rabbitmq-server'} not found: cannot start {what}")
    try:
        return start()
    except (BrokerNodeError, OSError) as exc:
        _unavailable(f"cannot start {what}: {exc}")


@pytest.fixture
def broker_nodes_sbin() -> Path:
    """The RabbitMQ scripts directory, for tests that start nodes themselves (also marks the
    test ``broker_nodes``)."""
    if not (SBIN / "rabbitmq-server").exists():
        _unavailable(f"{SBIN / 'rabbitmq-server'} not found")
    return SBIN


@pytest.fixture
def private_node() -> Iterator[PrivateNode]:
    """A started private node (function scope), killed and removed afterwards."""

    def start() -> PrivateNode:
        node = PrivateNode(f"t{secrets.token_hex(2)}", find_free_ports(1)[0])
        try:
            return node.start()
        except BaseException:
            node.close()
            raise

    node: PrivateNode = _start_or_skip(start, "a private RabbitMQ node")
    try:
        yield node
    finally:
        node.close()


@pytest.fixture(scope="session")
def private_cluster() -> Iterator[PrivateCluster]:
    """A started three-node private cluster (session scope). Tests that stop or kill nodes
    should call ``ensure_all_running()`` when done."""

    def start() -> PrivateCluster:
        cluster = PrivateCluster(3)
        try:
            return cluster.start()
        except BaseException:
            cluster.close()
            raise

    cluster: PrivateCluster = _start_or_skip(start, "a private 3-node RabbitMQ cluster")
    try:
        yield cluster
    finally:
        cluster.close()
