"""Metrics out of the worker: windowed records for the metrics topic, and Prometheus series.

Labels are low-cardinality by construction: model, model_version, detector, kind,
severity, reason code. Never user data.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter

from streams.events.schema import MetricsRecord
from streams.otlp.decode import OUTCOMES
from streams.worker.pipeline import BatchResult


class WindowAggregator:
    """Accumulates batch results and cuts them into tumbling windows (one record per key)."""

    def __init__(self, worker_id: str, now: datetime | None = None):
        self.worker_id = worker_id
        self._window_start = now or datetime.now(timezone.utc)
        self._models: dict[tuple[str, str, str], MetricsRecord] = {}
        self._pipeline = self._new_pipeline_record()

    def _new_pipeline_record(self) -> MetricsRecord:
        return MetricsRecord(scope="pipeline", worker_id=self.worker_id, window_start=self._window_start, window_end=self._window_start)

    def _model_record(self, model: str, version: str, route: str | None) -> MetricsRecord:
        key = (model, version, route or "")
        rec = self._models.get(key)
        if rec is None:
            rec = self._models[key] = MetricsRecord(
                scope="model",
                model=model,
                model_version=version,
                route=route or "",
                worker_id=self.worker_id,
                window_start=self._window_start,
                window_end=self._window_start,
            )
        return rec

    def add_findings(self, findings) -> None:
        """Findings that arrive after their events were counted (e.g. from re-sampling)."""
        for finding in findings:
            rec = self._model_record(finding.model, finding.model_version, finding.route)
            key = f"{finding.detector}.{finding.kind}"
            rec.findings[key] = rec.findings.get(key, 0) + 1
            sev = finding.severity.value
            rec.findings_by_severity[sev] = rec.findings_by_severity.get(sev, 0) + 1
            by_sev = rec.finding_severities.setdefault(key, {})
            by_sev[sev] = by_sev.get(sev, 0) + 1

    def add_detector_errors(self, counts: dict[str, int]) -> None:
        """Detector errors outside a batch (a detector's own thread failed a run), by detector."""
        _add_counts(self._pipeline.detector_errors, counts)

    def add(self, result: BatchResult) -> None:
        p = self._pipeline
        p.batches += 1
        p.duplicates += result.duplicates
        _add_counts(p.dead_letters, Counter(d.reason_code for d in result.dead_letters))
        _add_counts(p.detector_errors, result.detector_errors)
        unjudged = [(name, ids) for name, ids in result.unjudged.items() if ids]
        for event in result.events:
            rec = self._model_record(event.model, event.model_version, event.route)
            rec.events += 1
            for name, ids in unjudged:
                if event.event_id in ids:
                    rec.unjudged[name] = rec.unjudged.get(name, 0) + 1
            if event.error_type is not None:
                rec.errors += 1
            if event.feedback == "complaint":
                rec.complaints += 1
            rec.response_chars += len(event.response)
            rec.output_tokens += event.output_tokens or 0
            if event.latency_ms is not None:
                rec.latency.observe(event.latency_ms)
        self.add_findings(result.findings)

    def add_gauges(self, gauges) -> None:
        """Detector gauges ``(name, labels, value)`` labelled by model and model_version: their
        current values go into every record of that model version (one is made if none)."""
        for name, labels, value in gauges:
            model, version = labels.get("model"), labels.get("model_version")
            if model is None or version is None:
                continue
            rest = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("model", "model_version"))
            key = f"{name}{{{rest}}}" if rest else name
            records = [r for (m, v, _), r in self._models.items() if m == model and v == version]
            for rec in records or [self._model_record(model, version, "")]:
                rec.gauges[key] = float(value)

    def flush(self, now: datetime | None = None) -> list[MetricsRecord]:
        """Close the current window and return its records (the pipeline record always, models seen)."""
        end = now or datetime.now(timezone.utc)
        records = [*self._models.values(), self._pipeline]
        out = [r.model_copy(update={"window_end": end}) for r in records]
        self._window_start = end
        self._models = {}
        self._pipeline = self._new_pipeline_record()
        return out


def _add_counts(target: dict[str, int], counts) -> None:
    for k, v in counts.items():
        target[k] = target.get(k, 0) + v


class WorkerMetrics:
    """The worker's Prometheus series, in a registry of its own (served on /metrics)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = PromCounter("streamwarden_events_total", "Valid inference events processed.", ["model", "model_version"], registry=r)
        self.unjudged = PromCounter(
            "streamwarden_unjudged_events_total",
            "Events a detector left unjudged: its ration under load refused them, it had nothing to judge them on "
            "(grounding: no context documents), or it failed on their batch.",
            ["model", "model_version", "detector"],
            registry=r,
        )
        self.findings = PromCounter(
            "streamwarden_findings_total",
            "Findings published, by detector, kind and severity.",
            ["model", "model_version", "detector", "kind", "severity"],
            registry=r,
        )
        self.finding_categories = PromCounter(
            "streamwarden_finding_categories_total",
            "Findings by the category their detector gives them (attack family, harm category); "
            "one count per category a finding names; categories a detector does not declare count as 'other'.",
            ["model", "model_version", "detector", "kind", "category"],
            registry=r,
        )
        self.declared_categories: dict[str, frozenset[str]] = {}
        self.dead_letters = PromCounter(
            "streamwarden_dead_letters_total", "Records sent to the dead-letter topic, by reason.", ["reason"], registry=r
        )
        self.references = PromCounter(
            "streamwarden_references_total",
            "Reference windows of the drift detectors, by outcome: pinned (from traffic), persisted (to the references "
            "topic), persist_failed, dropped (could not be encoded), restored (read back and adopted), refused (of another "
            "embedding or columns, or pinned before a reset), forgotten (a person's reset).",
            ["detector", "outcome"],
            registry=r,
        )
        self.references_read = Gauge(
            "streamwarden_references_read",
            "1 once the worker has read the references topic back (it persists pinned references only then), 0 while not.",
            registry=r,
        )
        self.duplicates = PromCounter("streamwarden_duplicate_events_total", "Events dropped as duplicates of an event_id.", registry=r)
        self.detector_errors = PromCounter(
            "streamwarden_detector_errors_total",
            "Batches on which a detector raised, and failed runs of its own thread.",
            ["detector"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "streamwarden_batch_duration_seconds",
            "Time to process one micro-batch (decode and every detector).",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.detector_seconds = Histogram(
            "streamwarden_detector_duration_seconds",
            "Time one detector spent on one micro-batch.",
            ["detector"],
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.batch_size = Histogram(
            "streamwarden_batch_size_events", "Records per micro-batch.", buckets=(1, 4, 16, 64, 256, 1024), registry=r
        )
        self.model_latency = Histogram(
            "streamwarden_model_latency_seconds",
            "Latency the producer reported for each response.",
            ["model", "model_version"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=r,
        )
        self.pii_entities = PromCounter(
            "streamwarden_pii_entities_total",
            "PII entities found in responses, by type and origin (leak: not given by the user; echo: given).",
            ["model", "model_version", "entity_type", "origin"],
            registry=r,
        )
        self.sampler = PromCounter(
            "streamwarden_sampler_requests_total",
            "Re-sampling of the model for self-consistency, by outcome (requested, sampled, failed, too_few_samples, skipped_rate, skipped_busy).",
            ["outcome"],
            registry=r,
        )
        self.errors = PromCounter(
            "streamwarden_model_errors_total", "Events whose request failed (error_type set).", ["model", "model_version"], registry=r
        )
        self.complaints = PromCounter(
            "streamwarden_complaints_total", "Events with user feedback 'complaint'.", ["model", "model_version"], registry=r
        )
        self.finding_score = Histogram(
            "streamwarden_finding_score",
            "Scores of published findings, by detector and kind (higher is worse).",
            ["detector", "kind"],
            buckets=(0.1, 0.25, 0.5, 0.75, 0.9, 1, 2, 5, 10, 50),
            registry=r,
        )
        self.lag = Gauge(
            "streamwarden_consumer_lag_records",
            "Records of the inference topic not processed yet, per partition this worker holds (the high watermark "
            "the broker returned with the last fetch minus the next offset to process).",
            ["topic", "partition"],
            registry=r,
        )
        self.otlp_spans = PromCounter(
            "streamwarden_otlp_spans_total",
            "Spans of the OTLP topic, by outcome (decoded, skipped_no_content, skipped_not_genai, rejected).",
            ["outcome"],
            registry=r,
        )
        for outcome in OUTCOMES:  # every outcome is a series from the start, at 0
            self.otlp_spans.labels(outcome)
        self._detector_gauges: dict[str, Gauge] = {}
        self.in_flight = Gauge("streamwarden_batches_in_flight", "Micro-batches being processed.", registry=r)

    def set_gauge(self, name: str, labels: dict[str, str], value: float, help_text: str) -> None:
        gauge = self._detector_gauges.get(name)
        if gauge is None:
            gauge = self._detector_gauges[name] = Gauge(f"streamwarden_{name}", help_text, sorted(labels), registry=self.registry)
        gauge.labels(**labels).set(value)

    def set_detector_gauges(self, detectors) -> None:
        """Export each detector's current values (``Detector.gauges``) as ``streamwarden_<name>``."""
        for detector in detectors:
            for name, labels, value in detector.gauges():
                gauge = self._detector_gauges.get(name)
                if gauge is None:
                    gauge = self._detector_gauges[name] = Gauge(
                        f"streamwarden_{name}",
                        f"Current {name.replace('_', ' ')} reported by the {detector.name} detector.",
                        sorted(labels),
                        registry=self.registry,
                    )
                gauge.labels(**labels).set(value)

    def observe(self, result: BatchResult, batch_records: int, seconds: float) -> None:
        """Timings, when the batch is processed (counts wait for the commit: :meth:`count`)."""
        self.batch_seconds.observe(seconds)
        self.batch_size.observe(batch_records)
        for name, secs in result.detector_seconds.items():
            self.detector_seconds.labels(name).observe(secs)

    def count(self, result: BatchResult) -> None:
        """What a batch adds to the counters: called once its offsets are committed."""
        per_model: dict[tuple[str, str], list] = {}
        for event in result.events:
            per_model.setdefault((event.model, event.model_version), []).append(event)
        for (model, version), events in per_model.items():  # each labelled series looked up once a batch, not per event
            self.events.labels(model, version).inc(len(events))
            errors = sum(1 for e in events if e.error_type is not None)
            if errors:
                self.errors.labels(model, version).inc(errors)
            complaints = sum(1 for e in events if e.feedback == "complaint")
            if complaints:
                self.complaints.labels(model, version).inc(complaints)
            latencies = [e.latency_ms for e in events if e.latency_ms is not None]
            if latencies:
                latency = self.model_latency.labels(model, version)
                for ms in latencies:
                    latency.observe(ms / 1000)
        left: Counter = Counter()
        for name, ids in result.unjudged.items():
            for event in result.events:
                if event.event_id in ids:
                    left[(event.model, event.model_version, name)] += 1
        for labels, n in left.items():
            self.unjudged.labels(*labels).inc(n)
        self.observe_findings(result)
        for d in result.dead_letters:
            self.dead_letters.labels(d.reason_code).inc()
        if result.duplicates:
            self.duplicates.inc(result.duplicates)
        for name, n in result.detector_errors.items():
            self.detector_errors.labels(name).inc(n)
        for outcome, n in result.otlp_spans.items():
            self.otlp_spans.labels(outcome).inc(n)

    def observe_findings(self, result: BatchResult) -> None:
        grouped: defaultdict = defaultdict(int)
        for f in result.findings:
            grouped[(f.model, f.model_version, f.detector, f.kind, f.severity.value)] += 1
        for labels, n in grouped.items():
            self.findings.labels(*labels).inc(n)
        for f in result.findings:
            self.finding_score.labels(f.detector, f.kind).observe(f.score)
        for f in result.findings:
            declared = self.declared_categories.get(f.detector)
            if declared is None:
                continue
            named = f.details.get("categories") or ([f.details["category"]] if f.details.get("category") else [])
            for category in dict.fromkeys(c if c in declared else "other" for c in named if isinstance(c, str)):
                self.finding_categories.labels(f.model, f.model_version, f.detector, f.kind, category).inc()
        for f in result.findings:
            if f.detector == "pii":
                for e in f.details.get("entities", ()):
                    self.pii_entities.labels(f.model, f.model_version, e["entity_type"], e["origin"]).inc()
