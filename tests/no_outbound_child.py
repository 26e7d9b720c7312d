"""Run by tests/test_no_outbound.py in a fresh interpreter (``python -m tests.no_outbound_child
OUT.json WORKDIR``): the worker's default detectors, built and run as the worker builds and runs
them, with the socket guard installed before anything else is imported. Writes what it saw.

A fresh interpreter, because what it checks happens once per process: huggingface_hub and
tldextract read their environment when imported, and tldextract's extractor downloads the public
suffix list on its first use, into a cache that then hides every later download.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import cast

from tests.netguard import NetGuard

guard = NetGuard().install()

from detectors import registry  # noqa: E402 - the guard comes first
from detectors.contracts import BuildsReports, RunsInBackground, declared  # noqa: E402
from detectors.offline import OFFLINE_ENVIRONMENT  # noqa: E402
from streams.events.schema import InferenceEvent  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.worker.deadletters import DeadLetterWriter  # noqa: E402
from streams.worker.pipeline import Pipeline, RawRecord  # noqa: E402

RESPONSES = [
    "Write to dana.whitfield@example.com or call +1 415 555 0142; the docs are at https://docs.example.org/guide?id=3.",
    "Her mobile is 13812345678 (or +86 138 1234 5678), and the office is 0151 23456789.",
    "Refunds go to DE89-3704-0044-0532-0130-00, held by Priya Raman, contact priya.r@example.net.",
    "Our integration uses the key AKIAIOSFODNN7EXAMPLE; the server is 8.8.8.8 and the SSN on file is 536 22 1234.",
    "See http://user:hunter2@intranet.example.com/login and mail ops@example.co.uk about it.",
    "You can cancel the Pro plan from Settings > Billing at any time.",
]


def events(n: int) -> list[InferenceEvent]:
    out = []
    for i in range(n):
        response = RESPONSES[i % len(RESPONSES)]
        out.append(
            InferenceEvent(
                event_id=uuid.uuid4().hex,
                timestamp=datetime.now(timezone.utc),
                model="support-assistant",
                model_version="2026.11.1",
                prompt=[
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": ("As a woman, " if i % 2 else "As a man, ") + "how do I reach the account owner?"},
                ],
                response=response,
                samples=[response, response.replace("Write", "Mail")],
                # RAG: the grounding detector's NLI model runs too (its document does not state the answer).
                context=["Account owners are listed under Settings > Members.", "Support answers within one business day."],
                latency_ms=100.0 + i,
            )
        )
    return out


def main(out_path: str, workdir: str) -> None:
    work = Path(workdir)
    # Small windows, so the drift detectors pin references and test within the run.
    small = {"reference_size": 24, "window_size": 24, "test_every": 12}
    settings = Settings(
        state_dir=work / "state",
        reports_dir=work / "reports",
        detector_options={"drift": {**small, "sample_rate": 1.0}, "descriptor_drift": small},
    )
    detectors = registry.build(settings.detectors, settings.detector_kwargs())
    for detector in detectors:
        detector.warm_up()
    pipeline = Pipeline(detectors, settings.max_event_bytes)
    findings: list[dict] = []
    for _ in range(4):
        records = [RawRecord(e.model_dump_json().encode(), e.event_id.encode()) for e in events(16)]
        records.append(RawRecord(b'{"broken": "mail dana.whitfield@example.com"', b"bad"))
        result = pipeline.process(records)
        findings += [{"detector": f.detector, "kind": f.kind} for f in result.findings]
        writer = DeadLetterWriter(settings, detectors, 1_000_000)
        for dead in result.dead_letters:
            writer.prepare(dead, "no-outbound")  # the redacted body: the PII detector again
    for detector in detectors:
        if RunsInBackground in declared(detector):
            # As the worker does when it stops: the tests on the detectors' threads finish (and none is left
            # in torch's native code while the interpreter exits, which aborts the process).
            runner = cast(RunsInBackground, detector)
            findings += [{"detector": f.detector, "kind": f.kind} for f in runner.drain(60)]
            runner.close()
    reports = []
    for detector in detectors:
        if BuildsReports in declared(detector):
            builder = cast(BuildsReports, detector)
            if builder.has_reference("support-assistant", "2026.11.1"):
                reports.append(str(builder.report(("support-assistant", "2026.11.1"), work / f"{detector.name}.html")))
    product = list(guard.attempts)
    cache = Path(os.environ["TLDEXTRACT_CACHE"])
    cache_files = sorted(str(p.relative_to(cache)) for p in cache.rglob("*"))

    # The control: tldextract's own module-level extractor, with the suffix list URL this process
    # was given, from the same fresh cache, must try to download it. Else the guard saw nothing.
    guard.attempts.clear()
    import tldextract

    tldextract.extract("someone@example.com")
    control = list(guard.attempts)

    Path(out_path).write_text(
        json.dumps(
            {
                "product": product,
                "control": control,
                "findings": findings,
                "reports": reports,
                "cache_files": cache_files,
                "environment": {name: os.environ.get(name) for name in OFFLINE_ENVIRONMENT},
                "detectors": [d.name for d in detectors],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
