"""Micro-batch throughput of the worker's pipeline (decode + validate + detectors), no broker.

Two runs on the demo's synthetic traffic:
* descriptors only, against the bare cost of ``json.loads`` on the same records;
* every default detector, against the ceiling of the embedding-based detectors: the
  embedding model's plain ``encode()`` of one text per event, in the same process.
Also the share of time per stage (decode, embed, each detector).

    .venv/bin/python bench/bench_pipeline.py [--events 20000] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import time

from detectors.registry import build
from streams.local.traffic import Schedule, TrafficGenerator
from streams.worker.pipeline import Pipeline, RawRecord


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

    # Every default detector, against the embedding ceiling.
    import logging

    from detectors.embeddings import EmbeddingService
    from streams.settings import Settings

    logging.disable(logging.WARNING)
    settings = Settings()
    full = Pipeline(build(settings.detectors, settings.detector_kwargs() | {"descriptor_drift": {"reports_dir": None}}), 1_000_000)
    for d in full.detectors:
        d.warm_up()
    n = min(len(recs), 3000)
    subset = batches[: n // args.batch]
    n = sum(len(b) for b in subset)
    texts = [json.loads(r.value)["response"] for b in subset for r in b if r.value and r.value[:1] == b"{" and b'"response"' in r.value][:n]
    service = EmbeddingService.shared()
    service.encode(texts[:64])
    t0 = time.perf_counter()
    service._forward(texts)  # straight to the model: encode() would skip the demo's repeated texts
    t_embed = time.perf_counter() - t0
    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    for b in subset:
        result = full.process(b)
        stages["decode"] = stages.get("decode", 0.0) + result.decode_seconds
        for k, v in result.detector_seconds.items():
            stages[k] = stages.get(k, 0.0) + v
    t_full = time.perf_counter() - t0
    print(f"\nall default detectors ({', '.join(settings.detectors)}), {n} events:")
    print(f"{'encode() of one text per event (ceiling)':<44} {len(texts) / t_embed:>10,.0f} events/s")
    print(
        f"{'pipeline with every default detector':<44} {n / t_full:>10,.0f} events/s  (x{(n / t_full) / (len(texts) / t_embed):.2f} of the ceiling)"
    )
    print("time per stage: " + ", ".join(f"{k} {100 * v / t_full:.0f}%" for k, v in sorted(stages.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
