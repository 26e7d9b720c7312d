"""Micro-batch throughput of the worker's pipeline (decode + validate + detectors), no broker.

Baseline in the same process: the bare cost of ``json.loads`` on the same records, the
floor any JSON consumer pays. Prints events/s of both and their ratio.

    .venv/bin/python bench/bench_pipeline.py [--events 20000] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import time

from detectors.registry import build
from streams.pipeline import Pipeline, RawRecord
from streams.traffic import Schedule, TrafficGenerator


def records(n: int) -> list[RawRecord]:
    gen = TrafficGenerator(Schedule.for_run(100.0), seed=1, malformed_rate=0.01)
    out = []
    for i in range(n):
        kind, payload = gen.event(t=(i / n) * 100.0)
        value = payload if kind == "malformed" else payload.model_dump_json().encode()
        out.append(RawRecord(value, None, "bench", 0, i))
    return out


def best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    recs = records(args.events)
    batches = [recs[i : i + args.batch] for i in range(0, len(recs), args.batch)]
    pipeline = Pipeline(build(["descriptors"]), max_event_bytes=1_000_000)

    def baseline():
        for r in recs:
            try:
                json.loads(r.value)
            except ValueError:
                pass

    def ours():
        for b in batches:
            pipeline.process(b)

    t_base = best_of(baseline)
    t_ours = best_of(ours)
    print(f"events: {len(recs)}  batch: {args.batch}")
    print(f"{'json.loads only (baseline)':<34} {len(recs) / t_base:>12,.0f} events/s")
    print(f"{'pipeline: decode+validate+descr.':<34} {len(recs) / t_ours:>12,.0f} events/s")
    print(f"ratio pipeline/baseline: {t_base / t_ours:.3f}  (cost x{t_ours / t_base:.1f} of bare JSON parsing)")


if __name__ == "__main__":
    main()
