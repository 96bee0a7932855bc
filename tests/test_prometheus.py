"""Our Prometheus config, rules and dashboard against a real Prometheus server: promtool
accepts them, and every dashboard query and alert signal returns data once a worker that
processed real messages has been scraped."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import tracker
from tests.rabbit import FAST, Broker
from tracker import TaskContext
from tracker.operations import groups

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERT_RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "tracker.json"
COMPARISON = re.compile(r"^(?P<signal>.+?)\s*(?:>|<|>=|<=|==|!=)\s*[-+0-9.e]+\s*$", re.S)


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install -y prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def test_promtool_accepts_the_config_and_the_rules() -> None:
    promtool = _binary("promtool")
    for command in (
        ["check", "config", str(PROMETHEUS_CONFIG)],
        ["check", "rules", str(ALERT_RULES)],
    ):
        done = subprocess.run([promtool, *command], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


DESCRIPTION = (
    "3 failovers to another node in 15 minutes: a node flapping, or the network to it. A node "
    "restarted for maintenance costs one. See tracker_broker_node for the node in use."
)


def test_the_repeated_failovers_alert_fires_on_the_third_failover_only(tmp_path: Path) -> None:
    # Given: two workers' failover counters, one moving nodes three times in 15 minutes, the
    # other once (a node restarted for maintenance)
    promtool = _binary("promtool")
    cases = tmp_path / "failovers_test.yml"
    cases.write_text(
        f"""rule_files: [{ALERT_RULES}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'tracker_broker_failovers_total{{instance="w1:9464", job="tracker"}}'
        values: '0 0 1 1 2 2 3 3 3 3'
      - series: 'tracker_broker_failovers_total{{instance="w2:9464", job="tracker"}}'
        values: '0 0 0 1 1 1 1 1 1 1'
    alert_rule_test:
      - eval_time: 5m
        alertname: TrackerBrokerFailoversRepeated
        exp_alerts: []
      - eval_time: 7m
        alertname: TrackerBrokerFailoversRepeated
        exp_alerts:
          - exp_labels: {{severity: warning, instance: "w1:9464"}}
            exp_annotations:
              summary: "w1:9464 keeps losing its RabbitMQ node"
              description: "{DESCRIPTION}"
"""
    )
    # When
    done = subprocess.run(
        [promtool, "test", "rules", str(cases)], capture_output=True, text=True, check=False
    )
    # Then: it fires for w1 at its third failover, never for w2
    assert done.returncode == 0, done.stdout + done.stderr


def alert_rules() -> list[dict[str, str]]:
    """(name, expr) of every alert, read without a YAML library: the file keeps one shape."""
    text = ALERT_RULES.read_text()
    rules = []
    for block in text.split("- alert: ")[1:]:
        name = block.split("\n", 1)[0].strip()
        expr_part = block.split("expr:", 1)[1].split("\n        for:", 1)[0]
        expr = " ".join(line.strip() for line in expr_part.replace(">-", "").splitlines()).strip()
        rules.append({"name": name, "expr": expr})
    return rules


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def test_every_alert_expression_has_a_signal_and_a_threshold() -> None:
    rules = alert_rules()
    assert {r["name"] for r in rules} == {
        "TrackerDeadLetterQueueGrowing",
        "TrackerExecutionsStuck",
        "TrackerHighFailureRatio",
        "TrackerNoProgress",
        "TrackerWorkerDown",
        "TrackerFailureGroupNewOrRegressed",
        "TrackerBrokerFailoversRepeated",
    }
    for rule in rules:
        assert COMPARISON.match(rule["expr"]), rule


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


class PrometheusServer:
    def __init__(self, workdir: Path, target_port: int) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        rules = re.sub(r"for: \d+m", "for: 1s", ALERT_RULES.read_text())
        (workdir / "alerts.yml").write_text(rules)
        discovery = re.compile(r"dns_sd_configs:.*?port: 9464", re.S)
        assert discovery.search(PROMETHEUS_CONFIG.read_text()), "the target block moved"
        config = (
            discovery.sub(
                f'static_configs:\n      - targets: ["127.0.0.1:{target_port}"]',
                PROMETHEUS_CONFIG.read_text(),
            )
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        )
        (workdir / "prometheus.yml").write_text(config)
        self.log = open(workdir / "prometheus.log", "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                _binary("prometheus"),
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    async def query(self, expr: str) -> list[Any]:
        answer = await asyncio.to_thread(_api, self.base, "/api/v1/query", query=expr)
        assert answer["status"] == "success", (expr, answer)
        return list(answer["data"]["result"])

    async def wait_ready(self) -> None:
        async with asyncio.timeout(30):
            while True:
                try:
                    await asyncio.to_thread(_api, self.base, "/api/v1/status/buildinfo")
                    return
                except OSError:
                    await asyncio.sleep(0.2)

    async def wait_for(self, expr: str, timeout: float = 30) -> list[Any]:
        async with asyncio.timeout(timeout):
            while not (result := await self.query(expr)):
                await asyncio.sleep(0.5)
        return result

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture
def prometheus_dir(tmp_path: Path) -> Path:
    _binary("prometheus")
    return tmp_path


@pytest.fixture
async def scraped_worker(
    broker: Broker, store: str, prometheus_dir: Path
) -> AsyncIterator[tuple[PrometheusServer, str]]:
    """A worker that processes completions, retries, dead letters and duplicates while a
    real Prometheus scrapes it every second."""
    queue = await broker.new_queue()

    @tracker.tracked(queue, max_retries=1, retry_policy=FAST)
    async def handle(task: TaskContext) -> None:
        await asyncio.sleep(0.01)
        if task.payload["n"] % 5 == 0:
            raise tracker.ValidationError("bad request")
        if task.payload["n"] % 3 == 0 and task.retry_count == 0:
            raise tracker.TransientError("flaky")

    async with tracker.Worker(
        [handle], broker.url, metrics_port=0, metrics_host="127.0.0.1", stats_interval=0.5
    ) as running:
        assert running.http_server is not None
        prometheus = PrometheusServer(prometheus_dir, running.http_server.port)
        try:
            await prometheus.wait_ready()
            await prometheus.wait_for('tracker_executions{status="dlq"}')
            async with tracker.Publisher(broker.url, middleware=running.middleware[:1]) as pub:
                for n in range(1, 31):
                    await pub.enqueue(queue, {"n": n}, task_id=f"p:{n}")
                    await pub.enqueue(queue, {"n": n}, task_id=f"p:{n}")
                    await asyncio.sleep(0.1)
            await prometheus.wait_for(f'tracker_executions{{status="dlq", queue="{queue}"}} > 0')
            await asyncio.sleep(3)  # a few more scrapes after the traffic
            yield prometheus, queue
        finally:
            prometheus.stop()


@pytest.mark.rabbitmq
async def test_every_dashboard_query_and_alert_signal_returns_data(
    scraped_worker: tuple[PrometheusServer, str],
) -> None:
    prometheus, _ = scraped_worker
    empty = []
    for title, expr in dashboard_queries():
        concrete = expr.replace("$queue", ".*").replace("$__rate_interval", "1m")
        if not await prometheus.query(concrete):
            empty.append((title, concrete))
    for rule in alert_rules():
        match = COMPARISON.match(rule["expr"])
        assert match is not None
        if not await prometheus.query(match["signal"]):
            empty.append((rule["name"], match["signal"]))
    assert empty == []


@pytest.mark.rabbitmq
async def test_the_growing_dlq_alert_fires(scraped_worker: tuple[PrometheusServer, str]) -> None:
    prometheus, queue = scraped_worker
    firing = await prometheus.wait_for(
        f'ALERTS{{alertname="TrackerDeadLetterQueueGrowing", alertstate="firing", queue="{queue}"}}'
    )
    assert firing
    quiet = await prometheus.query('ALERTS{alertname="TrackerWorkerDown"}')
    assert quiet == []


@pytest.mark.rabbitmq
async def test_the_failure_group_alert_fires_with_the_group_id(
    scraped_worker: tuple[PrometheusServer, str],
) -> None:
    # Given: the worker dead-lettered "bad request" failures, a new group of its queue
    prometheus, queue = scraped_worker
    [group] = (await groups.list_groups(queue=queue)).items
    # When
    firing = await prometheus.wait_for(
        f'ALERTS{{alertname="TrackerFailureGroupNewOrRegressed", alertstate="firing", '
        f'queue="{queue}"}}'
    )
    # Then: the alert names the group by the id the CLI takes
    assert [series["metric"]["group"] for series in firing] == [group.id]
    assert firing[0]["metric"]["state"] == "open"
