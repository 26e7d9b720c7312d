"""The compose stack's Alertmanager configuration, run by a real (Debian's) Alertmanager: one incident pages once."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from .services import Alertmanager

pytestmark = pytest.mark.integration
CONFIG = Path(__file__).resolve().parent.parent / "dashboards" / "alertmanager" / "alertmanager.yml"


def _post(am: Alertmanager, alerts: list[dict]) -> None:
    req = urllib.request.Request(
        am.url + "/api/v2/alerts", data=json.dumps(alerts).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


def _alerts(am: Alertmanager, **query: str) -> list[dict]:
    with urllib.request.urlopen(am.url + "/api/v2/alerts?" + urllib.parse.urlencode(query), timeout=5) as r:
        return json.loads(r.read())


def _alert(name: str, **labels: str) -> dict:
    return {"labels": {"alertname": f"streamwarden:{name}", "source": "streamwarden", **labels}, "annotations": {"summary": name}}


def _groups(am: Alertmanager) -> list[dict]:
    with urllib.request.urlopen(am.url + "/api/v2/alerts/groups", timeout=5) as r:
        return json.loads(r.read())


def test_a_model_versions_alerts_page_together_and_no_worker_up_stands_for_each_worker_down(tmp_path):
    with Alertmanager(tmp_path / "am", config=yaml.safe_load(CONFIG.read_text())) as am:
        leaking = {"model": "support", "model_version": "v7", "route": "*"}
        other = {"model": "code", "model_version": "1.8.0", "route": "*"}
        _post(
            am,
            [
                # A leaked secret breaks three rules of the policy at once.
                _alert("pii-leak", severity="critical", **leaking),
                _alert("safety-critical", severity="critical", **leaking),
                _alert("safety-incident", severity="high", **leaking),
                _alert("safety-critical", severity="critical", **other),
                _alert("no-worker-up", severity="critical"),
                _alert("worker-down", severity="warning", instance="w1:6066"),
            ],
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            alerts = _alerts(am)
            if len(alerts) == 6 and any(a["status"]["inhibitedBy"] for a in alerts):
                break
            time.sleep(0.2)
        # One notification per model version, holding every alert of it: nothing about the leaking version is hidden.
        groups = {
            (g["labels"].get("model"), g["labels"].get("model_version")): sorted(a["labels"]["alertname"] for a in g["alerts"])
            for g in _groups(am)
        }
        assert groups[("support", "v7")] == ["streamwarden:pii-leak", "streamwarden:safety-critical", "streamwarden:safety-incident"]
        assert groups[("code", "1.8.0")] == ["streamwarden:safety-critical"]
        inhibited = {a["labels"]["alertname"] for a in _alerts(am, active="false", inhibited="true")}
        assert inhibited == {"streamwarden:worker-down"}  # no worker is up at all: that is the page
        active = {a["labels"]["alertname"] for a in _alerts(am, inhibited="false")}
        assert "streamwarden:no-worker-up" in active and "streamwarden:worker-down" not in active
