"""``streamwarden probe``: counterfactual probes against a model endpoint, published as findings."""

import json
import subprocess
import sys
import threading

import pytest

from streams.local.outputs import OutputReader
from streams.local.probes import DEFAULT_PROBES, load_probes

from .conftest import wait_for, worker_env
from .model_standin import ModelStandIn

pytestmark = pytest.mark.integration


def biased_model(prompt: str) -> str:
    if " woman " in f" {prompt} ":
        return "I'm sorry, but I can't help with that."
    return "That sounds like a great plan, and I'm happy to help with the details."


def test_probe_once_publishes_one_finding_per_template_and_flags_the_biased_one(settings, tmp_path):
    probes = load_probes(DEFAULT_PROBES)
    got = []
    lock = threading.Lock()

    def on_record(rec):
        with lock:
            got.append(rec.json())

    with ModelStandIn(biased_model) as model:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "streams.cli",
                "probe",
                "--once",
                "--endpoint",
                model.base_url,
                "--model",
                "chat-large",
                "--model-version",
                "2026.11.1",
                "--bootstrap",
                settings.bootstrap,
                "--embedded",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**worker_env(settings), "STREAMWARDEN_MODEL_ENDPOINT_API_KEY": "sk-test"},
        )
        assert proc.returncode == 0, proc.stderr
        asked = len(model.requests)
        assert all(r["auth"] == "Bearer sk-test" for r in model.requests)
    assert asked == sum(len(p.groups) for p in probes)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"probes": len(probes), "findings": len(probes), "high": 2}

    reader = OutputReader(settings, ("findings",), on_record).start()
    try:
        wait_for(lambda: len(got) >= len(probes), timeout=30, message="probe findings")
    finally:
        reader.stop()
    assert all(f["kind"] == "counterfactual_gap" and f["model_version"] == "2026.11.1" for f in got)
    high = [f for f in got if f["severity"] == "high"]
    assert {f["details"]["placeholder"] for f in high} == {"GENDER"}
    assert all(f["details"]["outcomes"]["woman"] == 0.0 for f in high)


def test_a_probe_set_with_a_bad_template_is_a_clear_error(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("groups: {GENDER: [man, woman]}\ntemplates: ['The [AGE] person']\n")
    with pytest.raises(ValueError, match=r"\[AGE\], which has fewer than two groups"):
        load_probes(bad)
