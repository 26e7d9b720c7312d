"""docker-compose.yml, checked statically (no Docker engine runs here)."""

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
