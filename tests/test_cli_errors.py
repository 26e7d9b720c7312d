"""Every command turns an error into one line on stderr and a non-zero exit code, never a traceback."""

import os
import subprocess
import sys

import pytest

from streams.cli import exit_code
from streams.errors import ActionError, ConfigurationError, SchemaError, UpstreamError


def cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


@pytest.fixture
def bad_config(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("batch_size: 0\nkafka:\n  sasl_password: hunter2\n")
    return path


@pytest.fixture
def bad_policy(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nrules:\n  - name: x\n    metric: error_rate\n    op: '~'\n    threshold: 1\n    action: alert\n")
    return path


def _one_line_error(p, code):
    assert p.returncode == code, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, p.stderr
    return lines[0]


def test_an_unknown_detector_is_one_line_and_exit_2():
    line = _one_line_error(cli("worker", "--detectors", "descriptors,nope", "--bootstrap", "127.0.0.1:1"), 2)
    assert "unknown detector 'nope'" in line


def test_a_bad_settings_file_names_the_field_and_never_its_value(bad_config):
    line = _one_line_error(cli("--config", str(bad_config), "topics", "list"), 2)
    assert "batch_size" in line and "hunter2" not in line


def test_a_bad_policy_file_names_its_line(bad_policy):
    p = cli("policy", "check", str(bad_policy))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"{bad_policy}:5" in p.stderr


def test_an_unreadable_probe_set_is_one_line(tmp_path):
    probes = tmp_path / "probes.yaml"
    probes.write_text("- not: a probe set\n")
    p = cli("probe", "--once", "--endpoint", "http://127.0.0.1:1/v1", "--model", "m", "--probes", str(probes))
    _one_line_error(p, 2)


def test_exit_codes_say_whose_fault_it_is():
    assert exit_code(ConfigurationError("x")) == exit_code(SchemaError("x")) == 2
    assert exit_code(ActionError("x")) == exit_code(UpstreamError("x")) == exit_code(RuntimeError("x")) == 1


def test_unexpected_errors_are_one_line_too(monkeypatch, capsys):
    import streams.cli as cli_module
    from streams.cli import main

    def boom(**kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(cli_module.events.common, "settings", boom)
    assert main(["topics", "list"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: OSError: disk on fire"


def test_a_rollout_stage_the_rollout_lacks_is_refused_before_anything_is_sent():
    # The bootstrap leads nowhere: the stage is checked against the policy before any Kafka client exists.
    line = _one_line_error(
        cli("rollout", "set", "m", "v9", "--stage", "half", env={**os.environ, "STREAMWARDEN_BOOTSTRAP": "127.0.0.1:1"}), 2
    )
    assert "'half' is not a stage" in line and "internal, 1%, 10%, 100%" in line
