"""Micro-batch throughput of the worker's pipeline (decode + validate + detectors), no broker.

Two runs on the demo's synthetic traffic:
* descriptors only, against the bare cost of ``json.loads`` on the same records;
* every default detector, against the ceiling of the embedding-based detectors: the
  embedding model's plain ``encode()`` of one text per event, in the same process.
Also the share of time per stage (decode, embed, each detector), with descriptor_drift in the
mode(s) of ``--modes`` (``background``, the worker's default: its evidently tests on its own thread;
``inline``: in the batch), each on fresh detectors and a cleared embedding cache.
And descriptor_drift alone, inline against background, rounds taking turns: the batch path's
events/s and its p50/p99 time per batch (the evidently tests every 100 events and the report of a finding made the p99).

    .venv/bin/python bench/bench_pipeline.py [--events 20000] [--batch 64] [--modes background|inline,background]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time

from detectors.contracts import RunsInBackground
from detectors.descriptor_drift import DescriptorDriftDetector
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
    ap.add_argument("--modes", default="background", help="descriptor_drift's mode(s) for the run of every detector, comma-separated")
    ap.add_argument("--drift-events", type=int, default=6000, help="events of the descriptor_drift-alone comparison (0: skip it)")
    ap.add_argument("--rounds", type=int, default=3)
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
    n = min(len(recs), 3000)
    subset = batches[: n // args.batch]
    n = sum(len(b) for b in subset)
    texts = [json.loads(r.value)["response"] for b in subset for r in b if r.value and r.value[:1] == b"{" and b'"response"' in r.value][:n]
    service = EmbeddingService.shared()
    service.encode(texts[:64])
    t0 = time.perf_counter()
    service._forward(texts)  # straight to the model: encode() would skip the demo's repeated texts
    t_embed = time.perf_counter() - t0
    print(f"\nall default detectors ({', '.join(settings.detectors)}), {n} events:")
    print(f"{'encode() of one text per event (ceiling)':<44} {len(texts) / t_embed:>10,.0f} events/s")
    for mode in args.modes.split(","):
        options = settings.detector_kwargs() | {"descriptor_drift": {"reports_dir": None, "background": mode == "background"}}
        full = Pipeline(build(settings.detectors, options), 1_000_000)
        for d in full.detectors:
            d.warm_up()
        service.clear_cache()
        stages: dict[str, float] = {}
        t0 = time.perf_counter()
        for b in subset:
            result = full.process(b)
            stages["decode"] = stages.get("decode", 0.0) + result.decode_seconds
            for k, v in result.detector_seconds.items():
                stages[k] = stages.get(k, 0.0) + v
        t_full = time.perf_counter() - t0
        t1 = time.perf_counter()
        drained = sum(len(d.drain()) for d in full.detectors if isinstance(d, RunsInBackground))
        t_drain = time.perf_counter() - t1
        for d in full.detectors:
            if isinstance(d, RunsInBackground):
                d.close()
        print(
            f"{'pipeline with every default detector':<44} {n / t_full:>10,.0f} events/s  (x{(n / t_full) / (len(texts) / t_embed):.2f} "
            f"of the ceiling; descriptor_drift {mode}"
            + (f", its last runs drained in {t_drain:.2f}s, {drained} finding(s))" if mode == "background" else ")")
        )
        print("time per stage: " + ", ".join(f"{k} {100 * v / t_full:.0f}%" for k, v in sorted(stages.items(), key=lambda kv: -kv[1])))
    if args.drift_events:
        descriptor_drift_alone(args.drift_events, args.batch, args.rounds)


def descriptor_drift_alone(n: int, batch: int, rounds: int) -> None:
    """descriptor_drift's batch path, inline against background, rounds taking turns (best round of each)."""
    recs = records(n)
    batches = [recs[i : i + batch] for i in range(0, len(recs), batch)]
    best: dict[str, tuple[float, list[float], float, dict[str, int]]] = {}
    reports = tempfile.mkdtemp(prefix="bench-descriptor-drift-")
    for _ in range(rounds):
        for mode in ("inline", "background"):
            options = {"background": mode == "background", "reports_dir": reports}  # as the worker runs it: a report per finding
            (det,) = build(["descriptor_drift"], {"descriptor_drift": options})
            assert isinstance(det, DescriptorDriftDetector)
            det.warm_up()
            pipeline = Pipeline([det], 1_000_000)
            per_batch, found = [], 0
            t0 = time.perf_counter()
            for b in batches:
                result = pipeline.process(b)
                per_batch.append(result.detector_seconds.get("descriptor_drift", 0.0))
                found += len(result.findings)
            t_path = time.perf_counter() - t0
            found += len(det.drain())
            t_all = time.perf_counter() - t0
            counts = det.run_counts() | {"findings": found}
            det.close()
            if mode not in best or t_path < best[mode][0]:
                best[mode] = (t_path, per_batch, t_all, counts)
    print(f"\ndescriptor_drift alone (window 300, a test every 100 events), {len(recs)} events, best of {rounds} rounds:")
    print(
        f"{'mode':<12} {'batch path ev/s':>16} {'with last runs':>15} {'p50 ms/batch':>13} {'p99 ms/batch':>13} {'max':>8}  findings, runs"
    )
    for mode, (t_path, per_batch, t_all, counts) in best.items():
        q = sorted(per_batch)
        p50, p99 = q[len(q) // 2] * 1000, q[min(len(q) - 1, int(0.99 * len(q)))] * 1000
        runs = f"{counts['ran']} ({counts['coalesced']} coalesced)" if mode == "background" else "in the batches"
        runs = f"{counts['findings']}, {runs}"
        print(f"{mode:<12} {len(recs) / t_path:>16,.0f} {len(recs) / t_all:>15,.0f} {p50:>13.1f} {p99:>13.1f} {q[-1] * 1000:>8.1f}  {runs}")
    shutil.rmtree(reports, ignore_errors=True)
    inline, background = best["inline"], best["background"]
    print(f"background / inline: batch path x{inline[0] / background[0]:.2f} events/s, with the last runs x{inline[2] / background[2]:.2f}")


if __name__ == "__main__":
    main()
