"""Where a worker's time goes in each phase of the demo's traffic: one process, no broker, every default
detector as the worker builds it (``Settings().detector_kwargs()``), the pipeline sequential (``overlap=False``)
so that each stage's time is its own. Per phase: events/s, ms per event, and the stages' ms per event, the
phase's cost as a ratio of the clean phase's in the same run (the baseline), and the share of the events toxicity's
head judged (the worker's ration: at most half the wall clock for its MiniLM pass; ``--judge-all`` turns it off).

    .venv/bin/python bench/bench_phases.py [--phases clean,hallucination,...] [--events 1500] [--batch 64]

Each phase is cut from one generated 300-second demo run (seed 5): the first ``--events`` of the phase.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from detectors import embeddings
from detectors.registry import build
from streams.local.traffic import Schedule, TrafficGenerator
from streams.settings import Settings
from streams.worker.pipeline import Pipeline, RawRecord

PHASES = "clean,refusal_burst,pii_leak,biased,hallucination,ungrounded,attack,toxic_canary,topic_shift"


def records_by_phase(seconds: float = 300.0, seed: int = 5) -> dict[str, list[RawRecord]]:
    """The events of one generated demo run (40 per second of schedule), as the worker's raw records, by phase."""
    schedule = Schedule.for_run(seconds)
    gen = TrafficGenerator(schedule, seed=seed, malformed_rate=0.0)
    by_phase: dict[str, list[RawRecord]] = {}
    n = 40 * int(seconds)
    for i in range(n):
        t = (i / n) * seconds
        _, event = gen.event(t=t)
        by_phase.setdefault(schedule.phase_at(t), []).append(RawRecord(event.model_dump_json().encode(), None, "bench", 0, i))
    return by_phase


@contextmanager
def worker_pipeline(prefix: str, overlap: bool = False, edit: Callable[[dict], None] | None = None) -> Iterator[Pipeline]:
    """Every default detector as the worker builds it (its settings, options and thread counts), warmed up, in a
    ``Pipeline`` (``overlap=False``: sequential, each stage's time its own); closed on the way out. ``edit`` may
    change the detectors' options first; descriptor drift's reports go to a new temporary folder named ``prefix*``."""
    import torch

    settings = Settings()
    embeddings.configure(threads=settings.cpu_threads())
    torch.set_num_threads(settings.cpu_threads())  # as the worker does
    options = settings.detector_kwargs()
    options["descriptor_drift"]["reports_dir"] = tempfile.mkdtemp(prefix=prefix)
    if edit is not None:
        edit(options)
    detectors = build(settings.detectors, options)
    for d in detectors:
        d.warm_up()
    pipeline = Pipeline(detectors, settings.max_event_bytes, overlap=overlap)
    try:
        yield pipeline
    finally:
        for d in detectors:
            close = getattr(d, "close", None)
            if callable(close):
                close()  # a drift test still in torch at interpreter exit would abort the process
        pipeline.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--phases", default=PHASES)
    ap.add_argument("--events", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--judge-all", action="store_true", help="toxicity's head judges every response (no ration)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    phases = args.phases.split(",")
    if "clean" not in phases:
        phases.insert(0, "clean")  # the baseline
    by_phase = records_by_phase()

    def judge_all(options: dict) -> None:
        options["toxicity"]["head_time_share"] = None

    with worker_pipeline("bench-phases-", edit=judge_all if args.judge_all else None) as pipeline:
        run_phases(pipeline, by_phase, phases, args.events, args.batch)


def run_phases(pipeline: Pipeline, by_phase: dict[str, list[RawRecord]], phases: list[str], events: int, batch: int) -> None:
    cost: dict[str, float] = {}
    for phase in phases:
        records = by_phase.get(phase, [])[:events]
        if not records:
            print(f"{phase}: no events in this run")
            continue
        stages: dict[str, float] = {}
        unjudged = 0
        t0 = time.perf_counter()
        for i in range(0, len(records), batch):
            result = pipeline.process(records[i : i + batch])
            for k, v in result.detector_seconds.items():
                stages[k] = stages.get(k, 0.0) + v
            unjudged += len(result.unjudged.get("toxicity", ()))
        wall = time.perf_counter() - t0
        cost[phase] = wall / len(records)
        top = sorted(stages.items(), key=lambda kv: -kv[1])[:7]
        print(
            f"{phase:<14} {len(records):5d} events  {len(records) / wall:7.1f} events/s  {1000 * cost[phase]:6.2f} ms/event"
            f"  x{cost[phase] / cost['clean']:.2f} of clean  toxicity judged {1 - unjudged / len(records):4.0%}  |  "
            + ", ".join(f"{k} {1000 * v / len(records):.2f}" for k, v in top),
            flush=True,
        )


if __name__ == "__main__":
    main()
