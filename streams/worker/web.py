"""The worker's web pages: Prometheus ``/metrics``, ``/healthz`` and the drift reports.

Served by faust's web server on ``web_host:web_port`` (127.0.0.1 by default).
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from detectors.contracts import BuildsReports

if TYPE_CHECKING:
    from streams.worker.app import Worker

_REPORT_NAME = re.compile(r"[A-Za-z0-9._-]+\.html")


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:64]


def register_pages(worker: Worker) -> None:
    app = worker.app
    registry = worker.metrics.registry
    reports_dir = Path(worker.settings.reports_dir)

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/reports")
    async def list_reports(web: Any, request: Any) -> Any:
        files = sorted(reports_dir.glob("*.html"), key=lambda p: p.stat().st_mtime, reverse=True) if reports_dir.is_dir() else []
        return web.json({"reports": [{"name": f.name, "bytes": f.stat().st_size, "url": f"/reports/{f.name}"} for f in files]})

    @app.page("/reports/{name}")
    async def get_report(web: Any, request: Any, name: str) -> Any:
        path = reports_dir / name
        if not _REPORT_NAME.fullmatch(name) or not path.is_file():
            return web.json({"error": "no such report"}, status=404)
        return web.html(path.read_text(encoding="utf-8"))

    @app.page("/reports/{detector}/{model}/{version}")
    async def build_report(web: Any, request: Any, detector: str, model: str, version: str) -> Any:
        """On demand: a detector's report (e.g. evidently's descriptor drift) of a model version's current window."""
        det = next((d for d in worker.detectors if d.name == detector.replace("-", "_") and isinstance(d, BuildsReports)), None)
        if det is None or not det.has_reference(model, version):
            return web.json({"error": f"no {detector} reference for that model version yet"}, status=404)
        path = reports_dir / f"{_safe(detector)}-{_safe(model)}-{_safe(version)}-{int(time.time())}.html"
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(worker.background, det.report, (model, version), path)
        except LookupError as exc:  # e.g. a restored reference and no traffic since
            return web.json({"error": str(exc)}, status=404)
        return web.json({"report": f"/reports/{path.name}"})

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "worker": worker.worker_id, "detectors": [d.name for d in worker.detectors]})
