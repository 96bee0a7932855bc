"""What can be checked of the deployment without a Docker engine: the files parse, and every
service, port, volume, mount and setting they reference exists and agrees with the code; the
alerting chain runs on a real Prometheus and Alertmanager, and the documented ways of serving
one's own consumer module serve the docs' example module."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import queue
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tracker.constants import DEFAULT_METRICS_PORT
from tracker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCS = ROOT / "docs" / "deploy.md"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERT_RULES = DEPLOY / "prometheus" / "alerts.yml"
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}: what the compose
# files use of Compose's interpolation.
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<colon>:?)(?P<op>[-?])(?P<arg>[^}]*))?\}")


def _interpolate(value: str, env: Mapping[str, str]) -> str:
    """``value`` as Compose interpolates it with the variables ``env``."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        given = env.get(name)
        unset = given is None or (match["colon"] == ":" and given == "")
        if not unset:
            return str(given)
        if op == "?":
            raise KeyError(f"{name}: {arg}")
        return arg if op == "-" else ""

    return VARIABLE.sub(one, value)


def _binary(*names: str, package: str) -> str:
    """The first of ``names`` on PATH: skipped on a developer machine, a failure in CI."""
    for name in names:
        if (path := shutil.which(name)) is not None:
            return path
    message = f"{names[0]} is not installed (apt-get install -y {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _section(title: str) -> str:
    """The text of docs/deploy.md under the heading ``title``, up to the next heading of its
    level or above (a ``#`` line inside a code block is no heading)."""
    level = len(title.split()[0])
    lines = DOCS.read_text().splitlines(keepends=True)
    start = lines.index(f"{title}\n")
    fenced = False
    for end in range(start + 1, len(lines)):
        fenced ^= lines[end].startswith("```")
        heading = re.match(r"(#+) ", lines[end])
        if not fenced and heading and len(heading[1]) <= level:
            break
    else:
        end = len(lines)
    return "".join(lines[start:end])


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


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
        "alertmanager",
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
            # with the defaults of the variables that name a file of one's own
            source, target = _interpolate(mount, {}).split(":")[:2]
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
    assert {"5672", "15672", "9090", "9093", "3000"} <= set(published)


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
    # every dependency install takes the lock file and the `speed` extra (uvloop)
    syncs = re.findall(r"^RUN uv sync (.*)$", text, re.M)
    assert syncs
    assert all("--frozen" in s and "--extra speed" in s for s in syncs), syncs


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


def _mounted_at(service: dict[str, Any], target: str) -> str:
    """The source (variables at their defaults) of the service's mount at ``target``."""
    for mount in service["volumes"]:
        source, mounted, *_ = _interpolate(mount, {}).split(":")
        if mounted == target:
            return source
    raise AssertionError(f"nothing mounted at {target}")


def test_prometheus_sends_its_alerts_to_the_alertmanager_service(compose: dict[str, Any]) -> None:
    # Given: Prometheus's config and the compose services
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    services = compose["services"]
    # Then: its one Alertmanager is the compose service, on the port Alertmanager listens on
    [alertmanagers] = config["alerting"]["alertmanagers"]
    [target] = alertmanagers["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in services
    alertmanager = services[host]
    assert alertmanager["image"].startswith("prom/alertmanager:")
    assert f"{port}:{port}" in alertmanager["ports"]  # 9093, Alertmanager's default
    assert host in services["prometheus"]["depends_on"]
    # and the service reads the checked config by default, keeps its state in a volume
    [config_file] = [a.split("=", 1)[1] for a in alertmanager["command"] if "--config.file" in a]
    assert (DEPLOY / _mounted_at(alertmanager, config_file)).resolve() == ALERTMANAGER_CONFIG
    [storage] = [a.split("=", 1)[1] for a in alertmanager["command"] if "--storage.path" in a]
    assert _mounted_at(alertmanager, storage) in compose["volumes"]
    # and a config of one's own replaces it through ALERTMANAGER_CONFIG
    [mount] = [m for m in alertmanager["volumes"] if m.endswith(f":{config_file}:ro")]
    own = _interpolate(mount, {"ALERTMANAGER_CONFIG": "/etc/tracker/am.yml"})
    assert own == f"/etc/tracker/am.yml:{config_file}:ro"


def _duration(text: str) -> int:
    """Seconds of an Alertmanager duration such as 30s, 5m or 4h."""
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smh])", text))


def test_amtool_accepts_the_config_and_routes_every_alert_to_the_webhook() -> None:
    amtool = _binary("amtool", package="prometheus-alertmanager")
    # Given: Alertmanager's config, as amtool checks it
    checked = subprocess.run(
        [amtool, "check-config", str(ALERTMANAGER_CONFIG)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    # Then: its one receiver is a webhook whose URL is the documented placeholder
    [receiver] = config["receivers"]
    [webhook] = receiver["webhook_configs"]
    assert "REPLACE" in webhook["url"]
    assert webhook["url"] in DOCS.read_text()
    assert webhook["send_resolved"] is True
    # and each of the tracker's alerts, with its labels, is routed to it
    rules = yaml.safe_load(ALERT_RULES.read_text())["groups"][0]["rules"]
    for rule in rules:
        labels = [f"alertname={rule['alert']}", "queue=reports", "instance=tracker:9464"]
        labels += [f"{k}={v}" for k, v in rule["labels"].items()]
        routed = subprocess.run(
            [amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *labels],
            capture_output=True,
            text=True,
            check=False,
        )
        assert routed.returncode == 0, routed.stdout + routed.stderr
        assert routed.stdout.split() == [receiver["name"]], (rule["alert"], routed.stdout)
    # and the intervals are a production's: a burst is one notification, nothing repeats
    # more often than hourly, nothing firing is forgotten for more than a day
    route = config["route"]
    assert 10 <= _duration(route["group_wait"]) <= 60
    assert 60 <= _duration(route["group_interval"]) <= 15 * 60
    repeats = [route["repeat_interval"], *(r["repeat_interval"] for r in route["routes"])]
    assert all(3600 <= _duration(r) <= 24 * 3600 for r in repeats)
    assert {r.get("receiver", route["receiver"]) for r in route["routes"]} == {receiver["name"]}


class _Webhook(http.server.BaseHTTPRequestHandler):
    """Collects what Alertmanager posts, as a receiver of ours would."""

    received: queue.Queue[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.put(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _running(command: list[str], log: Path) -> Iterator[None]:
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=output)
        try:
            yield
        finally:
            process.terminate()
            process.wait(timeout=10)


def test_a_worker_down_reaches_the_webhook_through_prometheus_and_alertmanager(
    tmp_path: Path,
) -> None:
    prometheus = _binary("prometheus", package="prometheus")
    alertmanager = _binary(
        "alertmanager", "prometheus-alertmanager", package="prometheus-alertmanager"
    )
    # Given: a webhook receiver
    received: queue.Queue[dict[str, Any]] = queue.Queue()
    handler = type("Webhook", (_Webhook,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    webhook_url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
    # and our Alertmanager config with its URL instead of the placeholder, a burst waited 1 s
    am_port, worker_port, prometheus_port = _free_port(), _free_port(), _free_port()
    placeholder = re.compile(r'url: "http://alert-webhook\.example\.invalid/REPLACE-ME"')
    assert placeholder.search(ALERTMANAGER_CONFIG.read_text()), "the placeholder moved"
    am_config = placeholder.sub(f'url: "{webhook_url}"', ALERTMANAGER_CONFIG.read_text())
    (tmp_path / "alertmanager.yml").write_text(
        re.sub(r"group_wait: \w+", "group_wait: 1s", am_config)
    )
    # and our Prometheus config, rules at 1 s, sending to that Alertmanager and scraping a
    # worker that is not there
    rules = re.sub(r"for: \d+m", "for: 1s", ALERT_RULES.read_text())
    (tmp_path / "alerts.yml").write_text(rules)
    text = PROMETHEUS_CONFIG.read_text()
    discovery = re.compile(r"dns_sd_configs:.*?port: 9464", re.S)
    assert discovery.search(text), "the target block moved"
    assert '["alertmanager:9093"]' in text, "the alerting block moved"
    text = discovery.sub(f'static_configs:\n      - targets: ["127.0.0.1:{worker_port}"]', text)
    text = text.replace('["alertmanager:9093"]', f'["127.0.0.1:{am_port}"]')
    text = re.sub(r"(scrape|evaluation)_interval: 15s", r"\1_interval: 1s", text)
    (tmp_path / "prometheus.yml").write_text(text)
    # When: both run
    try:
        with (
            _running(
                [
                    alertmanager,
                    f"--config.file={tmp_path / 'alertmanager.yml'}",
                    f"--storage.path={tmp_path / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",
                ],
                tmp_path / "alertmanager.log",
            ),
            _running(
                [
                    prometheus,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                ],
                tmp_path / "prometheus.log",
            ),
        ):
            try:
                notification = received.get(timeout=60)
            except queue.Empty:
                logs = [(tmp_path / f"{n}.log").read_text() for n in ("alertmanager", "prometheus")]
                pytest.fail("no notification within 60 s:\n" + "\n".join(logs)[-4000:])
    finally:
        server.shutdown()
        server.server_close()
    # Then: the webhook is told that the worker is down, in a group of its own
    assert notification["receiver"] == "webhook"
    assert notification["status"] == "firing"
    assert notification["groupLabels"] == {"alertname": "TrackerWorkerDown"}
    [alert] = notification["alerts"]
    assert alert["labels"]["instance"] == f"127.0.0.1:{worker_port}"
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["summary"] == f"Tracker worker 127.0.0.1:{worker_port} is down"


def test_grafana_credentials_are_the_documented_ones(compose: dict[str, Any]) -> None:
    # Given: Grafana's environment as compose gives it with nothing set, and with one's own
    environment = compose["services"]["grafana"]["environment"]
    default = {k: _interpolate(str(v), {}) for k, v in environment.items()}
    own = {
        "GRAFANA_ADMIN_USER": "ops",
        "GRAFANA_ADMIN_PASSWORD": "s3cret",
        "GRAFANA_ANONYMOUS_ENABLED": "false",
    }
    chosen = {k: _interpolate(str(v), own) for k, v in environment.items()}
    # Then: admin/admin and anonymous viewers by default, each changed by its variable
    assert default["GF_SECURITY_ADMIN_USER"] == "admin"
    assert default["GF_SECURITY_ADMIN_PASSWORD"] == "admin"
    assert default["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert default["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert default["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert chosen["GF_SECURITY_ADMIN_USER"] == "ops"
    assert chosen["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"
    assert chosen["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    # and the docs say so, in the table of Grafana's sign-in
    section = _section("### Grafana: signing in")
    for variable in own:
        assert f"`{variable}" in section, variable
    assert "`admin`" in section
    assert "`Viewer`" in section


def test_every_compose_variable_is_documented() -> None:
    # Given: the variables the compose files interpolate
    names = {
        match["name"]
        for path in DEPLOY.glob("compose*.yml")
        for match in VARIABLE.finditer(path.read_text())
    }
    # Then: the docs' table of them names each one, and deploy/.env stays out of git
    assert names == {
        "ALERTMANAGER_CONFIG",
        "GRAFANA_ADMIN_USER",
        "GRAFANA_ADMIN_PASSWORD",
        "GRAFANA_ANONYMOUS_ENABLED",
        "TRACKER_CONSUMER_DIR",
        "TRACKER_CONSUMER_MODULE",
    }
    section = _section("## With Docker Compose")
    for name in names:
        assert f"`{name}`" in section, name
    assert ".env" in (DEPLOY / ".gitignore").read_text().split()


def _serve(command: list[str], workdir: Path) -> list[str]:
    """Run a container's ``tracker serve`` command in ``workdir`` with no broker to reach:
    the queues it loaded and was about to serve, from its "serving" log line."""
    assert command[:2] == ["tracker", "serve"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    environment |= {
        "TRACKER_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{_free_port()}/",
        "TRACKER_HTTP_HOST": "127.0.0.1",
        "TRACKER_HTTP_PORT": "0",
        "TRACKER_LOG_FORMAT": "json",
    }
    done = subprocess.run(
        [str(Path(sys.executable).parent / "tracker"), *command[1:]],
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0, "it served without a broker"
    for line in (done.stdout + done.stderr).splitlines():
        with contextlib.suppress(ValueError):
            if (event := json.loads(line)).get("event") == "serving":
                return list(event["queues"])
    raise AssertionError(done.stdout + done.stderr)


@pytest.fixture
def documented_module(tmp_path: Path) -> Path:
    """docs/deploy.md's example module, written where its instructions put it."""
    [module] = _blocks(_section("### Your own consumer module"), "python")
    (tmp_path / "myconsumer.py").write_text(module)
    return tmp_path


def test_the_documented_image_of_ones_own_serves_the_module(documented_module: Path) -> None:
    # Given: the docs' recipe: the tracker's image built under a name, an image FROM it
    section = _section("### Your own consumer module")
    [name] = re.findall(r"^docker build -t (\S+) \.", section, flags=re.M)
    [dockerfile] = _blocks(section, "dockerfile")
    ours = (ROOT / "Dockerfile").read_text()
    assert f"docker build -t {name} ." in ours
    steps = re.findall(r"^(FROM|COPY|CMD|USER|RUN|WORKDIR)\s+(.*)$", dockerfile, flags=re.M)
    assert steps[0] == ("FROM", name)
    # Then: it copies the module into the working directory of the tracker's image...
    [workdir] = re.findall(r"^WORKDIR (\S+)$", ours, flags=re.M)
    [copy] = [args.split() for kind, args in steps if kind == "COPY"]
    assert copy == ["myconsumer.py", "./"]
    assert f"`{workdir}`" in section
    # and the user it names in its comment is the image's
    [user] = re.findall(r"^USER (\S+)$", ours, flags=re.M)
    assert f"# USER {user}" in dockerfile
    # and the compose file of one's own builds it in the tracker's place
    [override] = [b for b in _blocks(section, "yaml") if "my-compose.yml" in b]
    assert set(yaml.safe_load(override)["services"]["tracker"]["build"]) == {"context"}
    compose = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    assert compose["services"]["tracker"]["build"]["dockerfile"] == "Dockerfile"
    # When: its command runs where the module was copied
    [cmd] = [json.loads(args) for kind, args in steps if kind == "CMD"]
    queues = _serve(cmd, documented_module)
    # Then: it serves the module's consumer
    assert queues == ["invoices"]


def test_the_compose_override_serves_a_mounted_module(documented_module: Path) -> None:
    # Given: deploy/compose.consumer.yml with the variables the docs set
    section = _section("### Your own consumer module")
    [run] = [b for b in _blocks(section, "sh") if "compose.consumer.yml" in b]
    given = dict(re.findall(r"\b(TRACKER_CONSUMER_\w+)=(\S+)", run))
    assert set(given) == {"TRACKER_CONSUMER_DIR", "TRACKER_CONSUMER_MODULE"}
    assert given["TRACKER_CONSUMER_MODULE"] == "myconsumer"
    override = yaml.safe_load((DEPLOY / "compose.consumer.yml").read_text())
    tracker = override["services"]["tracker"]
    env = {**given, "TRACKER_CONSUMER_DIR": str(documented_module)}
    # Then: the module's directory is mounted read-only as the working directory
    [mount] = tracker["volumes"]
    source, target, mode = _interpolate(mount, env).split(":")
    assert (source, target, mode) == (str(documented_module), tracker["working_dir"], "ro")
    # and neither variable can be left out
    for variable in given:
        missing = {k: v for k, v in env.items() if k != variable}
        with pytest.raises(KeyError, match=variable):
            [_interpolate(part, missing) for part in [mount, *tracker["command"]]]
    # When: its command runs there
    queues = _serve([_interpolate(part, env) for part in tracker["command"]], Path(source))
    # Then: it serves the module's consumer
    assert queues == ["invoices"]
