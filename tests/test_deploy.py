"""What can be checked of the deployment without a Docker engine: the files parse, and every
service, port, volume, mount and setting they reference exists and agrees with the code."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tracker.constants import DEFAULT_METRICS_PORT
from tracker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_has_every_service(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "mongo1",
        "mongo2",
        "mongo3",
        "mongo-init",
        "rabbitmq",
        "tracker",
        "prometheus",
        "grafana",
    }


def test_mongodb_is_a_three_member_replica_set(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("mongo1", "mongo2", "mongo3"):
        command = services[name]["command"]
        assert command[command.index("--replSet") + 1] == "rs0"
    init = " ".join(services["mongo-init"]["command"])
    assert all(f"{name}:27017" in init for name in ("mongo1", "mongo2", "mongo3"))
    url = services["tracker"]["environment"]["TRACKER_MONGODB_URL"]
    assert "replicaSet=rs0" in url
    assert "w=majority" in url
    assert Settings.from_env(services["tracker"]["environment"]).mongodb_url == url


def test_the_tracker_service_settings_are_the_ones_the_code_reads(compose: dict[str, Any]) -> None:
    tracker = compose["services"]["tracker"]
    environment = tracker["environment"]
    assert {k for k in environment if k.startswith("TRACKER_")} <= {
        "TRACKER_MONGODB_URL",
        "TRACKER_DATABASE",
        "TRACKER_AMQP_URL",
        "TRACKER_HTTP_PORT",
        "TRACKER_HTTP_HOST",
        "TRACKER_LOG_FORMAT",
        "TRACKER_LOG_LEVEL",
    }
    settings = Settings.from_env(environment)
    assert settings.amqp_url.startswith("amqp://guest:guest@rabbitmq:5672")
    assert str(settings.service_http_port) in tracker["expose"]
    build = tracker["build"]
    assert (DEPLOY / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).exists()
    # the graceful stop gets longer than the worker's default shutdown timeout (30 s)
    assert int(tracker["stop_grace_period"].rstrip("s")) > 30


def test_every_mount_and_volume_exists(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = set()
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source, target = mount.split(":")[:2]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), (name, source)
            else:
                used.add(source)
                assert source in declared, (name, source)
            assert target.startswith("/"), (name, target)
    assert used == declared


def test_published_ports_do_not_collide(compose: dict[str, Any]) -> None:
    published = [
        port.split(":")[0]
        for service in compose["services"].values()
        for port in service.get("ports", [])
    ]
    assert len(published) == len(set(published))
    assert {"5672", "15672", "9090", "3000"} <= set(published)


def test_depends_on_names_existing_services(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for dependency in service.get("depends_on", []):
            assert dependency in compose["services"], (name, dependency)


def test_prometheus_and_grafana_use_the_checked_files(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    [job] = config["scrape_configs"]
    assert job["dns_sd_configs"][0]["names"] == ["tracker"]
    assert job["dns_sd_configs"][0]["port"] == DEFAULT_METRICS_PORT
    grafana = compose["services"]["grafana"]
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/tracker.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert f"./grafana/dashboards:{path}:ro" in grafana["volumes"]
    datasource = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    dashboard = json.loads((DEPLOY / "grafana/dashboards/tracker.json").read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {datasource["datasources"][0]["uid"]}


def test_the_dockerfile_copies_what_exists_and_serves_the_reports(compose: dict[str, Any]) -> None:
    text = (ROOT / "Dockerfile").read_text()
    instructions = re.findall(
        r"^(FROM|COPY|CMD|EXPOSE|HEALTHCHECK|USER|STOPSIGNAL)\b(.*)$", text, re.M
    )
    copies = [shlex.split(args)[:-1] for kind, args in instructions if kind == "COPY"]
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
    cmd = next(args for kind, args in instructions if kind == "CMD")
    assert json.loads(cmd) == ["tracker", "serve", "consumers.reports"]
    assert next(args for kind, args in instructions if kind == "EXPOSE").strip() == str(
        DEFAULT_METRICS_PORT
    )
    assert "/healthz" in text
    assert ("STOPSIGNAL", " SIGTERM") in instructions
    assert any(kind == "USER" for kind, _ in instructions)


def test_the_cluster_variant_gives_the_tracker_every_node_of_one_cluster(
    compose: dict[str, Any],
) -> None:
    # Given: the override that turns the one broker into a three-node cluster
    cluster = yaml.safe_load((DEPLOY / "compose.cluster.yml").read_text())
    services = cluster["services"]
    nodes = ["rabbitmq", "rabbitmq2", "rabbitmq3"]
    # Then: three nodes, one cookie, each with its own data and the cluster's config
    assert set(services) == {*nodes, "tracker"}
    assert "rabbitmq" in compose["services"]
    cookies = {services[n]["environment"]["RABBITMQ_ERLANG_COOKIE"] for n in nodes}
    assert len(cookies) == 1
    conf = DEPLOY / "rabbitmq" / "cluster.conf"
    listed = re.findall(
        r"^cluster_formation\.classic_config\.nodes\.\d+ = rabbit@(\S+)$",
        conf.read_text(),
        flags=re.M,
    )
    assert listed == [services[n]["hostname"] for n in nodes]
    data_volumes = set()
    for name in nodes:
        mounts = services[name]["volumes"]
        assert "./rabbitmq/cluster.conf:/etc/rabbitmq/conf.d/20-cluster.conf:ro" in mounts
        data_volumes |= {m.split(":")[0] for m in mounts if m.endswith(":/var/lib/rabbitmq")}
    assert len(data_volumes) == 3
    assert data_volumes <= set(cluster["volumes"]) | set(compose["volumes"])
    # and the tracker is given the three nodes, waits for them, and replicates on three
    tracker = services["tracker"]
    settings = Settings.from_env(tracker["environment"])
    assert [u.split("@")[1].split(":")[0] for u in settings.amqp_url.split(",")] == nodes
    assert settings.quorum_group_size == 3
    assert set(nodes) <= set(tracker["depends_on"])
