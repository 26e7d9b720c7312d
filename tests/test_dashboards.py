"""Dashboards as code: the committed JSON is what the code builds, and every panel's query
returns data from a real Prometheus (Debian's) scraping a real worker and policy agent that
process the demo's traffic with its incidents."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from dashboards.build import JSON_DIR, panel_queries, render_all
from streams.events.topics import ensure_topics
from streams.local.broker import free_port
from streams.local.traffic import Schedule, TrafficGenerator
from streams.tap import Tap

from .conftest import http_ok, wait_for

ROOT = Path(__file__).resolve().parent.parent
DEMO_DETECTOR_OPTIONS = {
    "drift": {"reference_size": 100, "window_size": 100, "test_every": 50, "sample_rate": 0.5},
    "descriptor_drift": {"reference_size": 150, "window_size": 150, "test_every": 75},
}


def committed() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(JSON_DIR.glob("*.json"))}


def test_committed_dashboards_are_what_the_code_builds():
    built = render_all()
    assert sorted(built) == sorted(p.name for p in JSON_DIR.glob("*.json")), "run: python -m dashboards.build"
    for name, text in built.items():
        assert (JSON_DIR / name).read_text() == text, f"{name} is stale: run python -m dashboards.build"


def test_dashboards_are_complete_and_provisioned():
    boards = committed()
    assert {"overview.json", "pipeline.json", "pii.json", "bias.json", "consistency.json", "drift.json"} <= set(boards)
    uids = {d["uid"] for d in boards.values()}
    for d in boards.values():
        assert any(a.get("name") == "actions" and "streamwarden_actions_total" in a.get("expr", "") for a in d["annotations"]["list"])
        for panel in d["panels"]:
            for t in panel.get("targets", []):
                assert t["refId"] and t["datasource"]["uid"] == "streamwarden-prometheus", (d["uid"], panel["title"])
        for link in d["links"]:
            m = re.match(r"/d/([^/]+)/", link["url"])
            assert m is None or m.group(1) in uids
    overview = {p["title"] for p in boards["overview.json"]["panels"]}
    assert {"events/s by model version", "findings/s by detector and kind", "kill switch by model", "actions by kind and rule"} <= overview
    assert any("reports_url" in json.dumps(d) for d in boards.values())
    ds = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["uid"] == "streamwarden-prometheus"
    prov = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/streamwarden.yml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/streamwarden"


def test_prometheus_config_is_valid():
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (make test installs it)"
    p = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(ROOT / "dashboards/prometheus/prometheus.yml")], capture_output=True, text=True
    )
    assert p.returncode == 0, p.stdout + p.stderr
    amtool = shutil.which("amtool")
    assert amtool, "amtool is missing: apt-get install prometheus-alertmanager"
    p = subprocess.run([amtool, "check-config", str(ROOT / "dashboards/alertmanager/alertmanager.yml")], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


class Prometheus:
    def __init__(self, workdir: Path, targets: dict[str, str]):
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [t]}]} for job, t in targets.items()],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.workdir = workdir
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: apt-get install prometheus (make test installs it)"
        self._log = open(self.workdir / "prometheus.log", "ab")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        wait_for(lambda: http_ok(self.url + "/-/ready"), 30, message="Prometheus")
        return self

    def query(self, expr: str, since: float | None = None) -> list:
        """An instant query now, or (``since``) a range query from then to now at 1 s steps."""
        if since is None:
            r = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        else:
            r = httpx.get(
                self.url + "/api/v1/query_range", params={"query": expr, "start": since, "end": time.time(), "step": 1}, timeout=10
            )
        body = r.json()
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(10)
        self._log.close()


def _concrete(expr: str) -> str:
    return expr.replace("$model_version", ".*").replace("$model", ".*").replace("$__rate_interval", "30s")


@pytest.mark.integration
def test_every_panel_query_returns_data_from_a_real_prometheus(settings, tmp_path, start_worker, start_process):
    ensure_topics(settings)
    agent_port = free_port()
    env = dict(
        STREAMWARDEN_DETECTOR_OPTIONS=json.dumps(DEMO_DETECTOR_OPTIONS),
        STREAMWARDEN_METRICS_WINDOW_S="1.0",
        STREAMWARDEN_POLICY_WEB_PORT=str(agent_port),
    )
    worker = start_worker(settings, **env)
    start_process(settings, "policy", "run", **env)
    targets = {"worker": f"127.0.0.1:{settings.web_port}", "policy": f"127.0.0.1:{agent_port}"}
    with Prometheus(tmp_path / "prometheus", targets) as prom:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{settings.web_port}/healthz"), 120, message="the worker")
        seconds, rate = 30.0, 120
        gen = TrafficGenerator(Schedule.for_run(seconds), seed=11)
        tap = Tap(settings=settings)
        start, t_start = time.monotonic(), time.time()
        sent = 0
        while (elapsed := time.monotonic() - start) < seconds:
            while sent < elapsed * rate:
                _, payload = gen.event(elapsed)
                tap.record(payload)
                sent += 1
            time.sleep(0.02)
        tap.close(timeout_s=30)
        queries = [q for d in committed().values() for q in panel_queries(d)]
        assert len(queries) >= 40

        def missing():
            # Annotations mark moments (an action): they must have shown during the run, not now.
            return [
                (uid, title, expr)
                for uid, title, expr in queries
                if not prom.query(_concrete(expr), since=t_start if title.startswith("annotation") else None)
            ]

        try:
            wait_for(lambda: not missing(), 120, 2.0, "every panel query to return data")
        except AssertionError:
            raise AssertionError(
                "panels without data:\n" + "\n".join(f"{u} / {t}: {e}" for u, t, e in missing()) + "\n" + worker.log()[-2000:]
            ) from None
        # Not only `or vector(0)`: the series behind the incidents are really there.
        for expr in (
            'streamwarden_findings_total{detector="pii", kind="pii_leak"}',
            "streamwarden_killswitch_engaged == 1",
            "streamwarden_actions_total",
            "streamwarden_consumer_lag_records",
            "streamwarden_bias_disparity_ratio",
            "streamwarden_drift_p_value",
            "streamwarden_model_errors_total",
        ):
            assert prom.query(expr), expr


class GrafanaStandIn:
    """A stand-in of Grafana's HTTP API (no Grafana server can run here): health, folders,
    datasources and dashboards/db, with token auth; it stores what it is sent."""

    def __init__(self, token: str):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.token = token
        self.folders: dict[str, dict] = {}
        self.dashboards: dict[str, dict] = {}
        self.datasources: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {outer.token}":
                    self._send(401, {"message": "Unauthorized"})
                    return False
                return True

            def do_GET(self):
                outer.requests.append(("GET", self.path))
                if self.path == "/api/health":
                    return self._send(200, {"database": "ok", "version": "11.3.0"})
                if not self._authorised():
                    return
                if self.path == "/api/frontend/settings":
                    return self._send(200, {"buildInfo": {"version": "11.3.0", "edition": "Open Source"}})
                if self.path.startswith("/api/folders/"):
                    uid = self.path.rsplit("/", 1)[1]
                    return self._send(200, outer.folders[uid]) if uid in outer.folders else self._send(404, {"message": "folder not found"})
                if self.path.startswith("/api/datasources/uid/"):
                    uid = self.path.rsplit("/", 1)[1]
                    return (
                        self._send(200, outer.datasources[uid]) if uid in outer.datasources else self._send(404, {"message": "not found"})
                    )
                self._send(404, {"message": "not found"})

            def _body(self):
                return json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def do_POST(self):
                outer.requests.append(("POST", self.path))
                if not self._authorised():
                    return
                body = self._body()
                if self.path == "/api/folders":
                    outer.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"]}
                    return self._send(200, outer.folders[body["uid"]])
                if self.path == "/api/datasources":
                    outer.datasources[body["uid"]] = body
                    return self._send(200, {"message": "Datasource added"})
                if self.path == "/api/dashboards/db":
                    d = body["dashboard"]
                    if not body.get("overwrite") and d["uid"] in outer.dashboards:
                        return self._send(412, {"status": "version-mismatch"})
                    if body.get("folderUid") not in outer.folders:
                        return self._send(400, {"message": "folder not found"})
                    outer.dashboards[d["uid"]] = body
                    return self._send(200, {"status": "success", "uid": d["uid"], "url": f"/d/{d['uid']}/x"})
                self._send(404, {"message": "not found"})

            def do_PUT(self):
                outer.requests.append(("PUT", self.path))
                if not self._authorised():
                    return
                if self.path.startswith("/api/datasources/uid/"):
                    uid = self.path.rsplit("/", 1)[1]
                    outer.datasources[uid] = self._body()
                    return self._send(200, {"message": "Datasource updated"})
                self._send(404, {"message": "not found"})

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _push(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os
    import sys

    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "dashboards", "push", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_dashboards_push_uploads_every_dashboard_into_a_folder_idempotently():
    with GrafanaStandIn("glsa_token") as grafana:
        p = _push("--grafana-url", grafana.url, "--prometheus-url", "http://prometheus:9090", env={"GRAFANA_TOKEN": "glsa_token"})
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        assert out["datasource"] == "created" and out["folder"] == "streamwarden"
        assert set(grafana.dashboards) == {d["uid"] for d in committed().values()}
        for uid, body in grafana.dashboards.items():
            assert body["overwrite"] is True and body["folderUid"] == "streamwarden"
            assert body["dashboard"] == {k: v for k, v in next(d for d in committed().values() if d["uid"] == uid).items() if k != "id"}
        assert grafana.datasources["streamwarden-prometheus"]["url"] == "http://prometheus:9090"
        again = _push("--grafana-url", grafana.url, "--token", "glsa_token", "--prometheus-url", "http://prometheus:9090")
        assert again.returncode == 0 and json.loads(again.stdout)["datasource"] == "updated"
        assert len(grafana.folders) == 1 and len(grafana.dashboards) == len(committed())
        denied = _push("--grafana-url", grafana.url, "--token", "wrong")
        assert denied.returncode == 1 and "push to" in denied.stderr and "Traceback" not in denied.stderr
        assert _push("--grafana-url", grafana.url).returncode == 2  # no credentials
