"""Real services the action tests talk to: Debian's Alertmanager, and a local webhook receiver.

The receiver stands in for the systems on the other end of a webhook (a deployment
controller, Slack, PagerDuty): it records what it gets and answers with scripted statuses.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from streams.local.broker import free_port

ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")


class Receiver:
    """Records every POST: path, headers, raw body. ``fail_first[path] = n`` answers 503 n times first."""

    def __init__(self):
        self.requests: list[dict] = []
        self.fail_first: dict[str, int] = {}
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer._lock:
                    left = outer.fail_first.get(self.path, 0)
                    if left:
                        outer.fail_first[self.path] = left - 1
                    outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body, "status": 503 if left else 200})
                self.send_response(503 if left else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def received(self, path: str, ok_only: bool = True) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["path"] == path and (r["status"] == 200 or not ok_only)]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def alertmanager_binary() -> str:
    for name in ALERTMANAGER_BINARIES:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("Alertmanager is not installed: `apt-get install prometheus-alertmanager` (make test installs it)")


class Alertmanager:
    """A real Alertmanager on 127.0.0.1, routing every alert to ``webhook_url`` within about a second; or, with
    ``config``, running that configuration as it is (the compose stack's, say)."""

    def __init__(self, workdir: Path, webhook_url: str = "", config: dict | None = None):
        self.port = free_port()
        self.workdir = workdir
        config = config or {
            "route": {
                "receiver": "hook",
                "group_by": ["alertname", "model"],
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [{"name": "hook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}],
        }
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "alertmanager.yml").write_text(json.dumps(config))
        self.log_path = workdir / "alertmanager.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                alertmanager_binary(),
                f"--config.file={self.workdir / 'alertmanager.yml'}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"Alertmanager did not start; see {self.log_path}:\n{self.log_path.read_text()[-2000:]}")

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()
