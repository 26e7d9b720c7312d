"""The faust application: where events enter the monitor and findings and metrics leave it.

inference topic --take_events(n, within=t)--> Pipeline (decode, detectors)
    -> findings topic (key event_id), dead-letter topic (redacted by default, reason in headers)
    -> WindowAggregator --timer--> metrics topic;   Prometheus /metrics on the web server

Delivery is at-least-once: faust acks a micro-batch's offsets only after the body of the
loop has handed every output to the producer, and flushes the producer before it commits.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faust
import numpy as np
from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from detectors import registry

from .metrics import CommitGate, WindowAggregator, WorkerMetrics
from .pipeline import BatchResult, Pipeline, RawRecord
from .settings import Settings
from .topics import topic_specs

log = logging.getLogger(__name__)


_REPORT_NAME = re.compile(r"[A-Za-z0-9._-]+\.html")


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:64]


def faust_broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{hp.strip()}" for hp in bootstrap.split(",") if hp.strip()]


def faust_credentials(settings: Settings):
    """faust's credentials object for TLS and/or SASL, or None for PLAINTEXT."""
    import ssl

    k = settings.kafka
    if k.security_protocol == "PLAINTEXT":
        return None
    context = None
    if k.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=str(k.ssl_cafile) if k.ssl_cafile else None)
        if k.ssl_certfile:
            context.load_cert_chain(str(k.ssl_certfile), str(k.ssl_keyfile) if k.ssl_keyfile else None)
    if k.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    password = k.sasl_password.get_secret_value() if k.sasl_password else None
    return faust.SASLCredentials(
        username=k.sasl_username,
        password=password,
        mechanism=k.sasl_mechanism,
        ssl_context=context,
    )


def faust_options(settings: Settings) -> dict:
    options = dict(
        broker=faust_broker_urls(settings.bootstrap),
        broker_credentials=faust_credentials(settings),
        store="memory://",  # the worker keeps no faust tables: correctness never rests on table recovery
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        topic_partitions=settings.output_partitions,
        producer_max_request_size=max(1_048_576, settings.max_event_bytes + 65_536),
        # Metrics count a batch when its offsets are committed: commit about as often as windows close.
        broker_commit_interval=min(2.8, max(0.5, settings.metrics_window_s)),
        consumer_max_fetch_size=max(4_194_304, settings.max_event_bytes * 2),
        # Backpressure: when the detectors are slower than the input, faust stops taking records
        # once this many wait in memory; the backlog stays in Kafka (streamwarden_consumer_lag_records).
        stream_buffer_maxsize=max(settings.stream_buffer_events, settings.batch_size),
    )
    if settings.effective_replication_factor:
        options["topic_replication_factor"] = settings.effective_replication_factor
    if settings.embedded:
        options.update(broker_session_timeout=6, broker_heartbeat_interval=1, topic_replication_factor=1)
    return options


class Worker:
    """Builds the faust app and its agents from settings; one instance per worker process."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.worker_id = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"
        if settings.torch_threads:
            import torch

            torch.set_num_threads(settings.torch_threads)
        self.detectors = registry.build(settings.detectors, settings.detector_kwargs())
        for detector in self.detectors:
            detector.warm_up()
        self.pipeline = Pipeline(self.detectors, settings.max_event_bytes)
        self.metrics = WorkerMetrics()
        self.windows = WindowAggregator(self.worker_id)
        # Detectors run off the event loop (they may be CPU- or GPU-bound), one batch at a time:
        # the agent awaits each batch, so in-flight work is bounded and consumption slows with it.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detectors")
        self.sampler = self._make_sampler(settings)
        self.app = faust.App(settings.app_id, **faust_options(settings))
        specs = topic_specs(settings)

        def raw_topic(role: str):
            spec = specs[role]
            return self.app.topic(spec.name, key_serializer="raw", value_serializer="raw", partitions=spec.partitions)

        self.inference_topic = raw_topic("inference")
        self.findings_topic = raw_topic("findings")
        self.deadletter_topic = raw_topic("deadletter")
        self.metrics_topic = raw_topic("metrics")
        self.drift_topic = raw_topic("drift")
        self._drift_publishers = [d for d in self.detectors if getattr(d, "mode", None) == "publish"]
        self.drift_merger = None
        # Drift merging and on-demand reports: off the event loop, and never queued behind a batch.
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="background")
        if self._drift_publishers:
            from detectors.drift import DriftMerger

            self.drift_merger = DriftMerger(settings.drift_merge_window, settings.drift_merge_intervals)
        self._redactor = None  # for deadletter_payload="redacted"
        self.gate = CommitGate(self._count)
        self._hook_commits()
        self._register()

    def _count(self, result: BatchResult) -> None:
        self.metrics.count(result)
        self.windows.add(result)

    def _hook_commits(self) -> None:
        """faust tells its monitor every offset commit: release the batches it covers, and publish
        their counts right away (the less time between a commit and the metrics, the less a crash loses)."""
        monitor = self.app.monitor
        original = monitor.on_tp_commit

        def on_tp_commit(tp_offsets):
            original(tp_offsets)
            if self.gate.on_commit(tp_offsets):
                try:
                    asyncio.get_running_loop().create_task(self.flush_metrics())
                except RuntimeError:  # no loop (tests calling it directly): the timer will flush
                    pass

        monitor.on_tp_commit = on_tp_commit

        @self.app.on_before_shutdown.connect
        async def on_shutdown(app, **kwargs):
            # The consumer made its last commit as it stopped: publish what that released.
            await self.flush_metrics()

        @self.app.on_partitions_revoked.connect
        async def on_revoked(app, revoked, **kwargs):
            dropped = self.gate.forget(revoked)
            if dropped:
                log.info("%d uncommitted batch(es) of revoked partitions left to their next owner", dropped)

    def _make_sampler(self, settings: Settings):
        """A sampler when an endpoint and a budget are configured and a consistency detector runs."""
        self._consistency = next((d for d in self.detectors if d.name == "consistency"), None)
        has_source = settings.sampler_local_model or (settings.model_endpoint and settings.model_endpoint_model)
        if not (settings.sampler_fraction > 0 and has_source and self._consistency):
            return None
        from .model_client import ChatModel, LocalModel
        from .sampler import Sampler, SamplerBudget

        if settings.sampler_local_model:
            client = LocalModel(settings.sampler_local_model)
        else:
            client = ChatModel(settings.model_endpoint, settings.model_endpoint_model, settings.model_endpoint_api_key)
        budget = SamplerBudget(settings.sampler_fraction, settings.sampler_max_rps, settings.sampler_k, settings.sampler_max_in_flight)
        return Sampler(client, budget)

    # -- agents, timers, pages ------------------------------------------------------------

    def _register(self) -> None:
        app = self.app
        settings = self.settings

        @app.agent(self.inference_topic, name="streamwarden.detect")
        async def detect(stream):
            async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
                records = [
                    RawRecord(e.value, e.key, e.message.topic, e.message.partition, e.message.offset) for e in events
                ]
                await self.handle(records)

        @app.timer(interval=settings.metrics_window_s, name="streamwarden.metrics")
        async def publish_metrics():
            await self.flush_metrics()

        if self.drift_merger is not None:

            @app.timer(interval=settings.drift_interval_s, name="streamwarden.drift.publish")
            async def publish_drift_samples():
                await self.publish_drift_samples()

            @app.agent(self.drift_topic, name="streamwarden.drift.merge")
            async def merge_drift(stream):
                # Keyed by model|version|field: each model version is merged by one worker.
                async for value in stream:
                    self.add_drift_sample(value)

        if self.sampler is not None:

            @app.timer(interval=1.0, name="streamwarden.sampled")
            async def check_sampled():
                await self.check_sampled()

        metrics = self.metrics

        @app.page("/metrics")
        async def prometheus(web, request):
            return web.bytes(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

        reports_dir = Path(settings.reports_dir)

        @app.page("/reports")
        async def list_reports(web, request):
            files = sorted(reports_dir.glob("*.html"), key=lambda p: p.stat().st_mtime, reverse=True) if reports_dir.is_dir() else []
            return web.json({"reports": [{"name": f.name, "bytes": f.stat().st_size, "url": f"/reports/{f.name}"} for f in files]})

        @app.page("/reports/{name}")
        async def get_report(web, request, name):
            path = reports_dir / name
            if not _REPORT_NAME.fullmatch(name) or not path.is_file():
                return web.json({"error": "no such report"}, status=404)
            return web.html(path.read_text(encoding="utf-8"))

        @app.page("/reports/descriptor-drift/{model}/{version}")
        async def build_report(web, request, model, version):
            """On demand: evidently's drift report of a model version's current window, now."""
            det = next((d for d in self.detectors if d.name == "descriptor_drift"), None)
            if det is None or not det.has_reference(model, version):
                return web.json({"error": "no descriptor drift reference for that model version yet"}, status=404)
            path = reports_dir / f"descriptor-drift-{_safe(model)}-{_safe(version)}-{int(time.time())}.html"
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._background, det.report, (model, version), path)
            return web.json({"report": f"/reports/{path.name}"})

        @app.page("/healthz")
        async def healthz(web, request):
            return web.json({"status": "ok", "worker": self.worker_id, "detectors": [d.name for d in self.detectors]})

    async def handle(self, records: list[RawRecord]) -> BatchResult:
        """Process one micro-batch and hand every output to the producer."""
        t0 = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._executor, self.pipeline.process, records)
        finally:
            self.metrics.in_flight.dec()
        await self.publish(result)
        self.metrics.observe(result, len(records), time.perf_counter() - t0)
        self._observe_lag(records)
        self.metrics.set_detector_gauges(self.detectors)
        self.gate.add(records, result)  # counted in metrics once its offsets are committed
        if self.sampler is not None:
            for event in result.events:
                self.sampler.offer(event)
        return result

    def _observe_lag(self, records: list[RawRecord]) -> None:
        last: dict[tuple[str, int], int] = {}
        for r in records:
            last[(r.topic, r.partition)] = max(r.offset, last.get((r.topic, r.partition), -1))
        try:
            consumer = self.app.consumer
            for (topic, partition), offset in last.items():
                highwater = consumer.highwater(TP(topic, partition))
                if highwater is not None and highwater >= 0:
                    self.metrics.lag.labels(topic, str(partition)).set(max(0, highwater - (offset + 1)))
        except Exception:  # noqa: BLE001 - lag is best effort; processing never depends on it
            pass

    def drift_interval(self) -> int:
        return int(time.time() // self.settings.drift_interval_s)

    async def publish_drift_samples(self) -> None:
        """Send this interval's reservoirs, then test the merged windows this worker owns."""
        interval = self.drift_interval() - 1  # the interval that just ended
        for detector in self._drift_publishers:
            samples = detector.export_samples()  # cheap, and never queued behind a slow batch
            for model, version, fname, count, vectors in samples:
                message = {
                    "model": model, "model_version": version, "field": fname, "producer": self.worker_id,
                    "interval": interval, "count": count, "shape": list(vectors.shape),
                    "data": base64.b64encode(vectors.astype(np.float16).tobytes()).decode(),
                }
                await self.drift_topic.send(key=f"{model}|{version}|{fname}".encode(), value=json.dumps(message).encode())
        loop = asyncio.get_running_loop()
        findings = await loop.run_in_executor(self._background, self.drift_merger.evaluate, interval)
        result = BatchResult(findings=findings)
        await self.publish(result)
        self.metrics.observe_findings(result)
        self.windows.add_findings(findings)
        for (model, version, fname), r in self.drift_merger.last.items():
            labels = {"model": model, "model_version": version, "field": fname}
            self.metrics.set_gauge("drift_merged_p_value", labels, r.p_value, "p-value of the drift test on the window merged across workers")

    def add_drift_sample(self, value: bytes) -> None:
        try:
            m = json.loads(value)
            vectors = np.frombuffer(base64.b64decode(m["data"]), dtype=np.float16).astype(np.float32).reshape(m["shape"])
            self.drift_merger.add(m["model"], m["model_version"], m["field"], m["producer"], int(m["interval"]), int(m["count"]), vectors)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("drift sample ignored: %s", type(exc).__name__)

    async def check_sampled(self) -> None:
        """Run self-consistency on the events whose samples came back, and publish the findings."""
        ready = self.sampler.drain()
        for name, n in self.sampler.counts.items():
            self.metrics.sampler.labels(name).inc(n)
        self.sampler.counts.clear()
        if not ready:
            return
        loop = asyncio.get_running_loop()
        result = BatchResult(events=ready)
        try:
            result.findings = await loop.run_in_executor(self._executor, self._consistency.score_batch, ready)
        except Exception as exc:  # noqa: BLE001 - isolated like any detector failure
            result.detector_errors[self._consistency.name] += 1
            log.error("consistency on sampled events failed: %s", type(exc).__name__)
        await self.publish(result)
        self.metrics.observe_findings(result)
        for name, n in result.detector_errors.items():
            self.metrics.detector_errors.labels(name).inc(n)
        self.windows.add_findings(result.findings)

    async def publish(self, result: BatchResult) -> None:
        for finding in result.findings:
            await self.findings_topic.send(
                key=(finding.event_id or finding.finding_id).encode(),
                value=finding.model_dump_json().encode(),
            )
        for dead in result.dead_letters:
            value, headers = dead.record.value, dead.headers(self.worker_id)
            if self.settings.deadletter_payload == "redacted":
                value = self._redact(value)
                headers.append(("streamwarden.dlq.payload", b"redacted"))
            await self.deadletter_topic.send(key=dead.record.key, value=value, headers=headers)
            log.warning(
                "dead letter: %s at %s[%d]@%d: %s",
                dead.reason_code,
                dead.record.topic,
                dead.record.partition,
                dead.record.offset,
                dead.reason,
            )

    def current_gauges(self) -> list[tuple[str, dict[str, str], float]]:
        """Every detector's gauges, and the merged drift p-values this worker owns."""
        out = [g for d in self.detectors for g in d.gauges()]
        if self.drift_merger is not None:
            for (model, version, fname), r in self.drift_merger.last.items():
                out.append(("drift_merged_p_value", {"model": model, "model_version": version, "field": fname}, r.p_value))
        return out

    def _redact(self, value: bytes | None) -> bytes | None:
        if not value:
            return value
        if self._redactor is None:
            from detectors.pii import PIILeakDetector

            self._redactor = next((d for d in self.detectors if isinstance(d, PIILeakDetector)), None) or PIILeakDetector()
        return self._redactor.redact(value.decode("utf-8", "replace")).encode("utf-8")

    async def flush_metrics(self) -> None:
        self.windows.add_gauges(self.current_gauges())
        for record in self.windows.flush():
            await self.metrics_topic.send(key=record.key.encode(), value=record.model_dump_json().encode())

    def run(self) -> None:
        """Run the faust worker in this process until it is stopped (SIGTERM/SIGINT)."""
        from faust.worker import Worker as FaustWorker

        worker = FaustWorker(self.app, loglevel=self.settings.log_level, quiet=True)
        # At DEBUG the Kafka clients log every message they send, payload included: the
        # monitor's logs must not carry user data, so they stay at INFO whatever the level.
        client_level = max(logging.INFO, getattr(logging, self.settings.log_level.upper()))
        for name in ("faust", "aiokafka", "kafka", "mode"):
            logging.getLogger(name).setLevel(client_level)
        worker.execute_from_commandline()
