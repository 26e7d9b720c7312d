"""The faust application: where events enter the monitor and findings and metrics leave it.

inference topic + OTLP topic --take_events(n, within=t)--> Pipeline (decode, detectors)
    -> findings topic (key event_id), dead-letter topic (redacted by default, reason in headers)
    -> WindowAggregator --commit / timer--> metrics topic;   Prometheus /metrics (streams.worker.web)

Delivery is at-least-once: faust acks a micro-batch's offsets only after the body of the
loop has handed every output to the producer, and flushes the producer before it commits.
The OTLP topic (GenAI spans from a Collector's kafka exporter or ``streamwarden otlp receive``)
is read by the same agent, so one consumer commits both topics' offsets the same way.
No exception of one batch stops the stream or loses its events: decoding is total (a bad
record is a dead letter), detectors are isolated from each other, and if handling the batch
still fails (publishing, say), every record of it goes to the dead-letter topic with the reason.

The reference windows the drift detectors pin go to the references topic, and a starting worker reads
them back before it consumes (streams.worker.references): a restart does not re-learn a reference from
traffic that has already drifted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import faust
from faust.types import TP

from detectors import embeddings, registry
from detectors.base import Detector, Finding
from detectors.contracts import KeepsReferences, PinnedReference, PublishesSamples, RunsInBackground, declared
from detectors.drift import DriftMerger, EmbeddingDriftDetector
from streams import kafka_clients
from streams.errors import ConfigurationError
from streams.events.topics import topic_specs
from streams.otlp.decode import DecodeOptions, OTLPDecoder
from streams.settings import Settings
from streams.worker import drift_wire
from streams.worker.commits import CommitGate, CommitMonitor
from streams.worker.deadletters import DeadLetterWriter
from streams.worker.metrics import WindowAggregator, WorkerMetrics
from streams.worker.pipeline import PROCESSING_FAILED, BatchResult, DeadLetter, Pipeline, RawRecord
from streams.worker.references import ReferenceWatcher, reference_key
from streams.worker.references import encode as encode_reference
from streams.worker.shutdown import bounded_stop, stopped_cleanly
from streams.worker.web import register_pages

log = logging.getLogger(__name__)


class Worker:
    """Builds the faust app and its agents from settings; one instance per worker process."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.worker_id = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"
        # One thread count for torch and both onnxruntime sessions (embeddings, NLI): this worker's share of the cores.
        threads = settings.cpu_threads()
        import torch

        torch.set_num_threads(threads)
        embeddings.configure(backend=settings.embedding_backend, threads=threads, precision=settings.embedding_precision)
        self.detectors = registry.build(settings.detectors, settings.detector_kwargs())
        for detector in self.detectors:
            detector.warm_up()
        # Detectors with a thread of their own (descriptor_drift's tests and reports): their findings come with
        # the next batch, or with the timer when traffic pauses; their threads stop with the worker.
        self._in_background = [cast(RunsInBackground, d) for d in self.detectors if RunsInBackground in declared(d)]
        self._background_unpublished: list[Finding] = []
        self._background_failed: dict[str, int] = {}  # failed runs of each detector's thread, counted so far
        self._processed: dict[tuple[str, int], int] = {}  # the last offset processed, per partition held (the lag)
        self.otlp_decoder = OTLPDecoder(settings.otlp_encoding, DecodeOptions.from_settings(settings)) if settings.otlp_enabled else None
        self.pipeline = Pipeline(
            self.detectors, settings.max_event_bytes, settings.otlp_topic_name if settings.otlp_enabled else None, self.otlp_decoder
        )
        self.metrics = WorkerMetrics()
        for detector in self.detectors:  # at 0 from the start, so that a first error is an increase (the health alerts)
            self.metrics.detector_errors.labels(detector.name)
        for detector in self.detectors:
            categories = getattr(detector, "categories", None)  # a bounded label set, declared by the detector
            if categories:
                self.metrics.declared_categories[detector.name] = frozenset(categories)
        self.windows = WindowAggregator(self.worker_id)
        # Detectors run off the event loop (they may be CPU- or GPU-bound), one batch at a time:
        # the agent awaits each batch, so in-flight work is bounded and consumption slows with it.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detectors")
        # Drift merging and on-demand reports: off the event loop, and never queued behind a batch.
        self.background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="background")
        self.sampler = self._make_sampler(settings)
        # Metrics count a batch once faust has committed its offsets: the app's monitor hears every commit.
        self.gate = CommitGate(self._count)
        # faust makes its data directory (one level) on start: its parents live in the state directory.
        (settings.state_dir / "worker").mkdir(parents=True, exist_ok=True)
        self.app = faust.App(settings.app_id, monitor=CommitMonitor(self.gate, self._flush_soon), **kafka_clients.faust_options(settings))
        transport = kafka_clients.faust_transport(settings, self.app)
        if transport is not None:  # before any topic asks the app for its transport
            self.app.transport = transport
        specs = topic_specs(settings)

        def raw_topic(role: str) -> Any:
            spec = specs[role]
            return self.app.topic(spec.name, key_serializer="raw", value_serializer="raw", partitions=spec.partitions)

        self.inference_topic = raw_topic("inference")
        # One agent reads the native events and the OTLP spans: one consumer, one commit, the same pipeline.
        sources = [specs["inference"].name] + ([specs["otlp"].name] if "otlp" in specs else [])
        self.source_topic = self.app.topic(*sources, key_serializer="raw", value_serializer="raw", partitions=settings.input_partitions)
        self.findings_topic = raw_topic("findings")
        self.deadletter_topic = raw_topic("deadletter")
        self.metrics_topic = raw_topic("metrics")
        self.drift_topic = raw_topic("drift")
        publishers = [cast(PublishesSamples, d) for d in self.detectors if PublishesSamples in declared(d)]
        self._drift_publishers = [d for d in publishers if d.publishes_samples]
        self.drift_merger = self._make_drift_merger()
        # Pinned references: persisted on the references topic, read back when the worker starts, followed after.
        self.references_topic = raw_topic("references")
        self._reference_keepers: list[Any] = [d for d in self.detectors if KeepsReferences in declared(d)]
        if self.drift_merger is not None:
            self._reference_keepers.append(self.drift_merger)
        self._references_unpublished: list[PinnedReference] = []
        self._references_lock = asyncio.Lock()
        self._reference_counts: dict[tuple[str, str], int] = {}
        self.references: ReferenceWatcher | None = None
        if settings.keep_references and self._reference_keepers:
            self.references = ReferenceWatcher(settings, self._restore_reference, self._reset_reference)
        if self.references is not None:
            self.metrics.references_read.set(0)
        for keeper in self._reference_keepers:  # at 0 from the start, so that a first write is an increase (the health alert)
            for outcome in ("persisted", "persist_failed"):
                self.metrics.references.labels(keeper.name, outcome)
        # A dead letter must fit both our producer's request limit and the topic's (the broker's default).
        dlq_limit = min(kafka_clients.max_message_bytes(settings), kafka_clients.BROKER_DEFAULT_MAX_MESSAGE_BYTES)
        self.dead_letters = DeadLetterWriter(
            settings, self.detectors, dlq_limit, otlp_topic=specs["otlp"].name if "otlp" in specs else None
        )
        self._register()

    def _count(self, result: BatchResult) -> None:
        self.metrics.count(result)
        self.windows.add(result)

    def _make_drift_merger(self) -> DriftMerger | None:
        """Merges the publishing workers' samples, tested as the publishing detector is configured."""
        if not self._drift_publishers:
            return None
        first = self._drift_publishers[0]
        assert isinstance(first, EmbeddingDriftDetector)  # the one detector that publishes samples
        return DriftMerger(
            self.settings.drift_merge_window,
            self.settings.drift_merge_intervals,
            permutations=first.permutations,
            alpha=first.alpha,
            device=first.device,
            interval_s=self.settings.drift_interval_s,  # the intervals of drift_interval() below
        )

    def _make_sampler(self, settings: Settings) -> Any:
        """A sampler when an endpoint and a budget are configured and a consistency detector runs."""
        self._consistency = next((d for d in self.detectors if d.name == "consistency"), None)
        has_source = settings.sampler_local_model or (settings.model_endpoint and settings.model_endpoint_model)
        if not (settings.sampler_fraction > 0 and has_source and self._consistency):
            return None
        from streams.worker.model_client import ChatModel, LocalModel
        from streams.worker.sampler import Sampler, SamplerBudget

        client: Any
        if settings.sampler_local_model:
            client = LocalModel(settings.sampler_local_model)
        elif settings.model_endpoint and settings.model_endpoint_model:
            client = ChatModel(settings.model_endpoint, settings.model_endpoint_model, settings.model_endpoint_api_key)
        else:
            return None
        min_samples = getattr(self._consistency, "min_samples", 2)
        if settings.sampler_k < min_samples:
            raise ConfigurationError(
                f"sampler_k {settings.sampler_k} is below consistency's min_samples {min_samples}: "
                "no re-sampled event could be judged (raise sampler_k or lower detector_options.consistency.min_samples)"
            )
        budget = SamplerBudget(settings.sampler_fraction, settings.sampler_max_rps, settings.sampler_k, settings.sampler_max_in_flight)
        return Sampler(client, budget, min_samples)

    # -- agents, timers, commits, pages ---------------------------------------------------

    def _register(self) -> None:
        app = self.app
        settings = self.settings

        @app.agent(self.source_topic, name="streamwarden.detect")
        async def detect(stream: Any) -> None:
            async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
                records = [RawRecord(e.value, e.key, e.message.topic, e.message.partition, e.message.offset) for e in events]
                await self.handle(records)

        @app.timer(interval=settings.metrics_window_s, name="streamwarden.metrics")
        async def publish_metrics() -> None:
            await self.flush_metrics()

        @app.timer(interval=5.0, name="streamwarden.lag")
        async def refresh_lag() -> None:
            self.refresh_lag()

        if self.drift_merger is not None:

            @app.timer(interval=settings.drift_interval_s, name="streamwarden.drift.publish")
            async def publish_drift_samples() -> None:
                await self.publish_drift_samples()

            @app.agent(self.drift_topic, name="streamwarden.drift.merge")
            async def merge_drift(stream: Any) -> None:
                # Keyed by model|version|field: each model version is merged by one worker.
                async for value in stream:
                    self.add_drift_sample(value)

        if self.sampler is not None:

            @app.timer(interval=1.0, name="streamwarden.sampled")
            async def check_sampled() -> None:
                await self.check_sampled()

        if self._reference_keepers:

            @app.timer(interval=1.0, name="streamwarden.references")
            async def persist_references() -> None:
                try:
                    await self.publish_references()
                except Exception as exc:  # noqa: BLE001 - references are kept for the next tick; the stream goes on
                    log.error("persisting references failed: %s", type(exc).__name__)

        if self._in_background:

            @app.timer(interval=1.0, name="streamwarden.background")
            async def publish_background() -> None:
                await self.publish_background_findings()

        @app.on_before_shutdown.connect  # type: ignore[arg-type]  # faust's stubs do not admit coroutine receivers
        async def on_shutdown(app: Any, **kwargs: Any) -> None:
            await self.stop_background()
            await self.publish_references()
            if self.references is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.references.stop)
            # The consumer made its last commit as it stopped: publish what that released.
            await self.flush_metrics()

        @app.on_partitions_revoked.connect  # type: ignore[arg-type]
        async def on_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
            dropped = self.gate.forget(revoked)
            if dropped:
                log.info("%d uncommitted batch(es) of revoked partitions left to their next owner", dropped)
            self.forget_lag(revoked)

        register_pages(self)

    def forget_lag(self, partitions: Any) -> None:
        """Drop the lag this worker reported for partitions it no longer holds: their next owner reports it now, and
        a stale value here would stay on the dashboards and in the falling-behind alert."""
        for tp in partitions:
            self._processed.pop((tp.topic, tp.partition), None)
            try:
                self.metrics.lag.remove(tp.topic, str(tp.partition))
            except KeyError:  # never reported here
                pass

    def refresh_lag(self) -> None:
        """The lag of every partition this worker processed from, against the broker's latest high watermark, on a
        timer: set only after each batch, it would freeze at its last value while a batch hangs (a caught-up
        worker's at 0), and neither the dashboards nor the falling-behind and worker-stalled alerts would see the
        backlog grow."""
        try:
            consumer = self.app.consumer
            for (topic, partition), offset in list(self._processed.items()):
                highwater = consumer.highwater(TP(topic, partition))
                if highwater is not None and highwater >= 0:
                    self.metrics.lag.labels(topic, str(partition)).set(max(0, highwater - (offset + 1)))
        except Exception:  # noqa: BLE001 - lag is best effort; processing never depends on it
            pass

    def _flush_soon(self) -> None:
        try:
            asyncio.get_running_loop().create_task(self.flush_metrics())
        except RuntimeError:  # no loop (tests calling it directly): the timer will flush
            pass

    # -- one micro-batch --------------------------------------------------------------------

    async def handle(self, records: list[RawRecord]) -> BatchResult:
        """Process one micro-batch and hand every output to the producer; never raises for a batch's content."""
        t0 = time.perf_counter()
        try:
            result = await self._process(records)
            await self.publish(result)
        except Exception as exc:  # noqa: BLE001 - the batch's records are kept as dead letters, never lost
            result = await self._dead_letter_batch(records, exc)
        self.metrics.observe(result, len(records), time.perf_counter() - t0)
        self._observe_lag(records)
        self.metrics.set_detector_gauges(self.detectors)
        if self.sampler is not None:
            self._offer_to_sampler(result)
        self.gate.add(records, result)  # counted in metrics once its offsets are committed
        return result

    def _offer_to_sampler(self, result: BatchResult) -> None:
        """Hand the batch's events without samples to the re-sampler. Those it takes are judged later, when their
        samples come back (check_sampled), so they are not consistency's unjudged. It takes only events with a
        response; a request that then fails, or returns fewer usable samples than min_samples, leaves one judged
        event without a finding, counted in streamwarden_sampler_requests_total (failed, too_few_samples). A
        sampler that raises costs the batch its re-sampling, never its commit or its counts."""
        try:
            sampled = {event.event_id for event in result.events if self.sampler.offer(event)}
        except Exception as exc:  # noqa: BLE001 - re-sampling is best effort
            log.error("the sampler failed on a batch: %s", type(exc).__name__)
            return
        left = result.unjudged.get(self._consistency.name) if self._consistency is not None else None
        if sampled and left:
            left -= sampled

    async def _process(self, records: list[RawRecord]) -> BatchResult:
        self.metrics.in_flight.inc()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self.pipeline.process, records)
        finally:
            self.metrics.in_flight.dec()

    async def _dead_letter_batch(self, records: list[RawRecord], exc: BaseException) -> BatchResult:
        """Handling failed after decoding (publishing, say): every record goes to the dead-letter topic.

        Findings already sent stay (they carry deterministic ids, so a replay of the dead letters
        yields the same ones); the reason names the stage's exception type, never the content.
        While even that fails (the broker is unreachable), it retries with backoff: the worker
        stalls, the batch stays unacknowledged and the backlog shows as lag, but nothing is lost.
        """
        log.error("a batch of %d records could not be handled (%s); dead-lettering it", len(records), type(exc).__name__)
        reason = f"the worker could not handle this record's batch: {type(exc).__name__}"
        result = BatchResult(dead_letters=[DeadLetter(r, PROCESSING_FAILED, reason) for r in records])
        backoff = 0.5
        while True:
            try:
                await self.publish(result)
                return result
            except Exception as again:  # noqa: BLE001 - never drop the batch: wait for the broker
                log.error("dead-lettering the batch failed (%s); retrying in %.1fs", type(again).__name__, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    def _observe_lag(self, records: list[RawRecord]) -> None:
        for r in records:
            key = (r.topic, r.partition)
            self._processed[key] = max(r.offset, self._processed.get(key, -1))
        self.refresh_lag()

    async def publish(self, result: BatchResult) -> None:
        for finding in result.findings:
            await self.findings_topic.send(
                key=(finding.event_id or finding.finding_id).encode(),
                value=finding.model_dump_json().encode(),
            )
        for dead in result.dead_letters:
            value, headers = self.dead_letters.prepare(dead, self.worker_id)
            await self.deadletter_topic.send(key=dead.record.key, value=value, headers=headers)
            log.warning(
                "dead letter: %s at %s[%d]@%d: %s",
                dead.reason_code,
                dead.record.topic,
                dead.record.partition,
                dead.record.offset,
                dead.reason,
            )

    # -- the detectors' own threads -------------------------------------------------------

    async def publish_background_findings(self) -> None:
        """Publish what the detectors' own threads completed and no batch carried yet (never waits for a run); count
        their failed runs as the detectors' errors (streamwarden_detector_errors_total and the metrics topic), like
        a batch a detector raised on."""
        self._count_background_failures()
        # What a failed publish left comes first: drain() hands each finding over once, so the worker keeps it.
        findings = self._background_unpublished + [f for d in self._in_background for f in d.drain(0)]
        self._background_unpublished = []
        if not findings:
            return
        result = BatchResult(findings=findings)
        try:
            await self.publish(result)
        except Exception as exc:  # noqa: BLE001 - the broker may be away: keep them for the next tick
            self._background_unpublished = findings
            log.warning("publishing %d background findings failed (%s); retrying on the next tick", len(findings), type(exc).__name__)
            return
        self.metrics.observe_findings(result)
        self.windows.add_findings(findings)

    def _count_background_failures(self) -> None:
        for d in self._in_background:
            name = cast(Detector, d).name
            failed = d.run_counts().get("failed", 0)
            new = failed - self._background_failed.get(name, 0)
            if new > 0:
                self._background_failed[name] = failed
                self.metrics.detector_errors.labels(name).inc(new)
                self.windows.add_detector_errors({name: new})

    async def stop_background(self, timeout: float = 2.0) -> None:
        """Stop the detectors' threads (a run in progress gets ``timeout`` seconds, off the event loop;
        queued runs are dropped) and publish what they completed."""
        loop = asyncio.get_running_loop()
        for d in self._in_background:
            await loop.run_in_executor(None, d.close, timeout)
        # The pipeline's forward-pass thread, on the batches' own executor: after a batch still in flight, never beside it.
        await loop.run_in_executor(self._executor, self.pipeline.close)
        await self.publish_background_findings()

    # -- references that outlive the worker ---------------------------------------------------

    def load_references(self) -> None:
        """Read the references topic back (up to ``reference_load_timeout_s``) and keep following it: called
        before the worker consumes, so that its detectors test against the references pinned before."""
        if self.references is None:
            return
        self.references.start()
        if self.references.ready.wait(self.settings.reference_load_timeout_s):
            log.info("%d reference window(s) read back from the references topic", len(self.references.references))
        else:
            log.warning(
                "the references topic was not read within %.0fs (%s): consuming now; what this worker pins meanwhile waits, "
                "and a reference read back replaces its pin of the same version",
                self.settings.reference_load_timeout_s,
                type(self.references.error).__name__ if self.references.error is not None else "still reading",
            )

    def _restore_reference(self, ref: PinnedReference) -> None:
        for keeper in self._reference_keepers:
            keeper.restore_references([ref])  # each keeps only its own detector's

    def _reset_reference(self, detector: str, key: tuple[str, ...], at: float | None = None) -> None:
        for keeper in self._reference_keepers:
            if keeper.name == detector:
                keeper.forget_reference(key, at)
                log.info("reference of %s reset by a tombstone on the references topic", detector)

    async def publish_references(self, timeout_s: float = 10.0) -> None:
        """Persist the references pinned since the last call, on a timer (never on the batch path: a references topic
        the broker cannot write to must not stall consumption), each acknowledged by the broker within ``timeout_s``.
        Nothing is persisted before the first reading of the topic is done: a reference read back then replaces a
        local pin of the same key, which is never written. What the broker refuses is retried in order, unless a
        reset or a restored reference has withdrawn it meanwhile; one that cannot be written at all is dropped and
        counted. Counts what the detectors did with references (streamwarden_references_total)."""
        async with self._references_lock:  # the timer and the shutdown: one at a time, so neither loses the other's
            for keeper in self._reference_keepers:
                for outcome, total in keeper.reference_counts().items():
                    seen = self._reference_counts.get((keeper.name, outcome), 0)
                    if total > seen:
                        self.metrics.references.labels(keeper.name, outcome).inc(total - seen)
                        self._reference_counts[(keeper.name, outcome)] = total
            if self.references is not None:
                self.metrics.references_read.set(1 if self.references.ready.is_set() else 0)
                if not self.references.ready.is_set():
                    return  # not read back yet: the pins wait in the detectors, where a reference read back replaces them
            fresh = [r for k in self._reference_keepers for r in k.pinned_references()]
            if self.references is None:
                return  # not kept: a restart re-pins from live traffic
            keepers = {k.name: k for k in self._reference_keepers}
            self._references_unpublished += fresh
            while self._references_unpublished:
                ref = self._references_unpublished[0]
                if not keepers[ref.detector].reference_is_current(ref):  # a reset or a reference read back withdrew it
                    self._references_unpublished.pop(0)
                    continue
                try:
                    value = encode_reference(ref, self.worker_id)
                except Exception as exc:  # noqa: BLE001 - it never will be written: count it, go on with the others
                    self._references_unpublished.pop(0)
                    log.error("a %s reference could not be encoded (%s); dropped", ref.detector, type(exc).__name__)
                    self.metrics.references.labels(ref.detector, "dropped").inc()
                    continue
                try:
                    key = reference_key(ref.detector, ref.key)
                    delivered = await asyncio.wait_for(self.references_topic.send(key=key, value=value, partition=0), timeout_s)
                    await asyncio.wait_for(asyncio.shield(delivered), timeout_s)  # the broker's acknowledgement
                except Exception as exc:  # noqa: BLE001 - the broker may be away: keep them for the next call
                    log.warning(
                        "persisting %d reference(s) failed (%s); retrying in a second",
                        len(self._references_unpublished),
                        type(exc).__name__,
                    )
                    self.metrics.references.labels(ref.detector, "persist_failed").inc()
                    return
                self._references_unpublished.pop(0)
                self.metrics.references.labels(ref.detector, "persisted").inc()

    # -- drift across workers, sampled events, metrics ------------------------------------

    def drift_interval(self) -> int:
        return int(time.time() // self.settings.drift_interval_s)

    async def publish_drift_samples(self) -> None:
        """Send this interval's reservoirs, then test the merged windows this worker owns."""
        assert self.drift_merger is not None
        interval = self.drift_interval() - 1  # the interval that just ended
        for detector in self._drift_publishers:
            for model, version, fname, count, vectors in detector.export_samples():  # cheap, never queued behind a batch
                sample = drift_wire.DriftSample(model, version, fname, self.worker_id, interval, count, vectors)
                await self.drift_topic.send(key=sample.key, value=drift_wire.encode(sample))
        loop = asyncio.get_running_loop()
        findings = await loop.run_in_executor(self.background, self.drift_merger.evaluate, interval)
        result = BatchResult(findings=findings)
        await self.publish(result)
        self.metrics.observe_findings(result)
        self.windows.add_findings(findings)
        for name, labels, value in self._merged_drift_gauges():
            self.metrics.set_gauge(name, labels, value, "p-value of the drift test on the window merged across workers")

    def add_drift_sample(self, value: bytes) -> None:
        assert self.drift_merger is not None
        try:
            s = drift_wire.decode(value)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("drift sample ignored: %s", type(exc).__name__)
            return
        self.drift_merger.add(s.model, s.model_version, s.field, s.producer, s.interval, s.count, s.vectors)

    def _merged_drift_gauges(self) -> list[tuple[str, dict[str, str], float]]:
        if self.drift_merger is None:
            return []
        return [
            ("drift_merged_p_value", {"model": model, "model_version": version, "field": fname}, r.p_value)
            for (model, version, fname), r in self.drift_merger.last_results().items()
        ]

    async def check_sampled(self) -> None:
        """Run self-consistency on the events whose samples came back, and publish the findings."""
        ready = self.sampler.drain()
        for name, n in self.sampler.counts.items():
            self.metrics.sampler.labels(name).inc(n)
        self.sampler.counts.clear()
        if not ready or self._consistency is None:
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

    def current_gauges(self) -> list[tuple[str, dict[str, str], float]]:
        """Every detector's gauges, and the merged drift p-values this worker owns."""
        return [(name, labels, value) for d in self.detectors for name, labels, value in d.gauges()] + self._merged_drift_gauges()

    async def flush_metrics(self) -> None:
        self.windows.add_gauges(self.current_gauges())
        for record in self.windows.flush():
            await self.metrics_topic.send(key=record.key.encode(), value=record.model_dump_json().encode())

    def run(self) -> None:
        """Run the faust worker in this process until it is stopped (SIGTERM/SIGINT)."""
        from faust.worker import Worker as FaustWorker

        worker = bounded_stop(FaustWorker, self.settings.shutdown_timeout_s)(self.app, loglevel=self.settings.log_level, quiet=True)
        # At DEBUG the Kafka clients log every message they send, payload included: the
        # monitor's logs must not carry user data, so they stay at INFO whatever the level.
        client_level = max(logging.INFO, getattr(logging, self.settings.log_level.upper()))
        for name in ("faust", "aiokafka", "kafka", "mode"):
            logging.getLogger(name).setLevel(client_level)
        self.load_references()
        try:
            worker.execute_from_commandline()
        except SystemExit as done:  # faust raises it once it has stopped and closed its loop
            if done.code in (0, None):
                stopped_cleanly()
            raise
