"""End to end through the broker: events/s one and two workers sustain with every default
(CPU) detector, and p50/p99 latency from produce to finding; the workers' resident memory; ratios to the raw embedding
throughput of the same model in the same run (the ceiling of the embedding-based detectors)
and of two workers to one (with torch's default threads, and with ``torch_threads`` = cores / 2); the share of time per stage, from the workers' own /metrics,
and the share of the events each detector judged (toxicity's head is rationed under load: a burst is judged in part).
Latency counts the findings about one event (PII, injection, toxicity, grounding, consistency, descriptors),
not the window findings of drift and bias, whose event is an example picked from a window of earlier events.

    .venv/bin/python bench/bench_e2e.py [--events 10000] [--latency-seconds 45] [--latency-rate EVENTS_PER_S] [--one-worker]

Two rates per run: ``events_per_s``, the burst from its first event produced to its last event counted (what
earlier results report; it carries the ~0.5-1.5 s between an event's processing and its count reaching the
reader, so it reads low for a burst of a few seconds), and ``sustained_events_per_s``, the slope of the events
counted over the middle 80% of the burst (:func:`sustained_rate`), which that delay does not bias.

Everything is the product's path: the embedded broker, ``streamwarden worker`` processes in
one consumer group, the tap, and a reader of the output topics.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

from streams.events.topics import ensure_topics
from streams.local.broker import EmbeddedBroker, free_port
from streams.local.outputs import OutputReader, OutputTally
from streams.local.traffic import Schedule, TrafficGenerator
from streams.settings import Settings
from streams.tap import Tap

DETECTOR_OPTIONS = {  # the demo's windows, so drift tests run within the bench's minutes
    "drift": {"reference_size": 200, "window_size": 200, "test_every": 100, "sample_rate": 0.25},
    "descriptor_drift": {"reference_size": 200, "window_size": 200, "test_every": 100},
}


# Detectors whose findings are about a window of events, each naming one example event of it.
WINDOW_DETECTORS = frozenset({"drift", "descriptor_drift", "bias", "cross_consistency"})


def embedding_ceiling(texts: list[str]) -> float:
    """Sentences/s of the default embedding model's plain encode(), one response per event."""
    from detectors.embeddings import EmbeddingService

    service = EmbeddingService()
    service.encode(texts[:64])  # load and warm
    t0 = time.perf_counter()
    service._forward(texts)  # straight to the model: encode() would skip the repeated texts of the demo traffic
    return len(texts) / (time.perf_counter() - t0)


def resident_mib(pid: int) -> tuple[float, float]:
    """A process's resident memory now and at its peak, MiB (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return tuple(round(int(fields[k].split()[0]) / 1024, 1) for k in ("VmRSS", "VmHWM"))  # type: ignore[return-value]


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise TimeoutError(what)


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for m in re.finditer(r'^streamwarden_detector_duration_seconds_sum\{detector="([^"]+)"\} (\S+)$', text, re.M):
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    batch = re.search(r"^streamwarden_batch_duration_seconds_sum (\S+)$", text, re.M)
    out["_batch"] = float(batch.group(1)) if batch else 0.0
    for m in re.finditer(r"^streamwarden_events_total\{[^}]*\} (\S+)$", text, re.M):
        out["_events"] = out.get("_events", 0.0) + float(m.group(1))
    for m in re.finditer(r'^streamwarden_unjudged_events_total\{[^}]*detector="([^"]+)"[^}]*\} (\S+)$', text, re.M):
        out[f"_unjudged_{m.group(1)}"] = out.get(f"_unjudged_{m.group(1)}", 0.0) + float(m.group(2))
    return out


def sustained_rate(counted: list[tuple[float, int]], base: int, events: int, lo: float = 0.1, hi: float = 0.9) -> float | None:
    """Events/s while the burst is worked off: the least-squares slope of the events counted so far against the
    worker's window ends, over the windows between ``lo`` and ``hi`` of the burst. The burst's events/s (first
    produce to the last event counted) also holds the delay between processing an event and its count reaching the
    reader (a commit, the metrics window, the reader's fetch: up to ~1.5 s at the bench's settings), which is a
    large share of a burst of a few seconds; a slope between two points of the burst does not, since both carry
    it. None when fewer than three windows fall in between."""
    per_end: dict[float, int] = {}
    for end, n in counted:  # a window's records (one per model version and route) share its end
        per_end[end] = per_end.get(end, 0) + n
    points, total = [], 0
    for end, n in sorted(per_end.items()):
        total += n
        done = total - base
        if lo * events <= done <= hi * events:
            points.append((end, done))
    if len(points) < 3:
        return None
    t_mean = sum(t for t, _ in points) / len(points)
    n_mean = sum(n for _, n in points) / len(points)
    var = sum((t - t_mean) ** 2 for t, _ in points)
    return sum((t - t_mean) * (n - n_mean) for t, n in points) / var if var > 0 else None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def run(
    broker: EmbeddedBroker,
    workers: int,
    events: int,
    latency_s: float,
    log_dir: Path,
    torch_threads: int | None = None,
    options: dict | None = None,
    latency_rate: float | None = None,
) -> dict:
    settings = Settings(
        profile="embedded",
        bootstrap=broker.bootstrap,
        topic_prefix=f"bench-{uuid.uuid4().hex[:6]}.",
        input_partitions=4,
        output_partitions=2,
        metrics_window_s=0.5,
    )
    ensure_topics(settings)
    ports = [free_port() for _ in range(workers)]
    procs = []
    for i, port in enumerate(ports):
        env = {
            **os.environ,
            "STREAMWARDEN_PROFILE": "embedded",
            "STREAMWARDEN_BOOTSTRAP": settings.bootstrap,
            "STREAMWARDEN_TOPIC_PREFIX": settings.topic_prefix,
            "STREAMWARDEN_INPUT_PARTITIONS": "4",
            "STREAMWARDEN_OUTPUT_PARTITIONS": "2",
            "STREAMWARDEN_METRICS_WINDOW_S": "0.5",
            "STREAMWARDEN_WEB_PORT": str(port),
            "STREAMWARDEN_DETECTOR_OPTIONS": json.dumps({**DETECTOR_OPTIONS, **(options or {})}),
            "STREAMWARDEN_APP_ID": f"bench-{settings.topic_prefix}",
        }
        if torch_threads:
            env["STREAMWARDEN_TORCH_THREADS"] = str(torch_threads)
        log = open(log_dir / f"worker-{workers}-{i}.log", "ab")  # noqa: SIM115 - the worker process writes it until it stops
        procs.append(subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT))
    tally, lock = OutputTally(), threading.Lock()
    arrivals: dict[str, float] = {}
    counted: list[tuple[float, int]] = []  # (window end on the worker's clock, events that window counted)

    def on_record(rec):
        now = time.time()
        with lock:
            tally.add(rec)
            if rec.role == "metrics":
                m = rec.json()
                if m and m.get("scope") == "model" and m.get("events"):
                    counted.append((datetime.fromisoformat(m["window_end"]).timestamp(), int(m["events"])))
            if rec.role == "findings":
                finding = rec.json()
                # A window's finding (drift, a disparity) names an example event of the window, which may be
                # seconds older than the test: its age is not this event's produce -> finding time.
                if finding.get("detector") not in WINDOW_DETECTORS:
                    arrivals.setdefault(finding.get("event_id") or "", now)

    reader = OutputReader(settings, ("findings", "metrics"), on_record).start()
    gen = TrafficGenerator(Schedule(()), seed=3, malformed_rate=0.0)
    try:
        for port in ports:
            wait(lambda port=port: healthy(port), 180, "worker start")
        with Tap(settings=settings) as tap:
            warm = 300
            for _ in range(warm):
                tap.record(gen.event(0.0)[1])
            wait(lambda: tally.events_processed >= warm, 180, "warm-up")
            # Throughput: a burst the workers work off as fast as they can.
            base = tally.events_processed
            t0 = time.monotonic()
            for _ in range(events):
                tap.record(gen.event(0.0)[1], wait_s=10)
            wait(lambda: tally.events_processed >= base + events, 600, "the burst")
            eps = events / (time.monotonic() - t0)
            with lock:
                sustained = sustained_rate(counted, base, events)
            # Latency: half that rate (or latency_rate) for latency_s; produce -> finding for the events that have one.
            rate = latency_rate or 0.5 * eps
            produced: dict[str, float] = {}
            start = time.monotonic()
            n = 0
            while (elapsed := time.monotonic() - start) < latency_s:
                while n < elapsed * rate:
                    _, e = gen.event(0.0)
                    produced[e.event_id] = e.timestamp.timestamp()
                    tap.record(e)
                    n += 1
                time.sleep(0.005)
        total = base + events + n
        wait(lambda: tally.events_processed >= total, 300, "the latency phase")
        time.sleep(1)
        with lock:
            lat = sorted(arrivals[i] - t for i, t in produced.items() if i in arrivals)
        memory = [resident_mib(p.pid) for p in procs]
        stages: dict[str, float] = {}
        for port in ports:
            for k, v in scrape(port).items():
                stages[k] = stages.get(k, 0.0) + v
    finally:
        reader.stop()
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    batch = stages.pop("_batch", 0.0) or 1.0
    counted = stages.pop("_events", 0.0) or 1.0
    # The share of the events each detector judged over the whole run (toxicity's ration under load; grounding judges
    # only the events with context documents).
    judged = {
        k.removeprefix("_unjudged_"): round(1 - stages.pop(k) / counted, 3) for k in [k for k in stages if k.startswith("_unjudged_")]
    }
    share = {k: round(v / batch, 3) for k, v in sorted(stages.items(), key=lambda kv: -kv[1])}
    share["other (decode, publish, bookkeeping)"] = round(max(0.0, 1 - sum(stages.values()) / batch), 3)
    return {
        "workers": workers,
        "torch_threads_per_worker": torch_threads or "torch default",
        "detector_options": options or "defaults",
        "events_per_s": round(eps, 1),
        "sustained_events_per_s": round(sustained, 1) if sustained else None,
        "latency_rate_events_per_s": round(rate, 1),
        "latency_samples": len(lat),
        "latency_p50_s": round(statistics.median(lat), 3) if lat else None,
        # Under 100 samples the p99 is the maximum: read it as such.
        "latency_p99_s": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 3) if lat else None,
        "latency_max_s": round(lat[-1], 3) if lat else None,
        "share_of_batch_time": share,
        "share_of_events_judged": judged,
        "worker_resident_mib": memory,  # per worker: (now, peak)
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--latency-seconds", type=float, default=45.0)
    ap.add_argument("--latency-rate", type=float, default=None, help="events/s of the latency phase (default: half the burst's events/s)")
    ap.add_argument(
        "--one-worker",
        action="store_true",
        help="only the run of one worker, without the ceiling (a probe: run it from two checkouts in turns to compare them)",
    )
    args = ap.parse_args()
    if args.one_worker:
        with EmbeddedBroker() as broker:
            one = run(
                broker, 1, args.events, args.latency_seconds, Path(tempfile.mkdtemp(prefix="bench-e2e-")), latency_rate=args.latency_rate
            )
        print(json.dumps(one, indent=2))
        return
    gen = TrafficGenerator(Schedule(()), seed=3, malformed_rate=0.0)
    texts = [gen.event(0.0)[1].response for _ in range(2000)]
    ceiling = embedding_ceiling(texts)
    # The bench's traffic is the demo's clean phase: templated answers that repeat (the embedding cache keeps their
    # vectors). The share of distinct answers in the first 2,000 of the seeded sequence every run sends is printed,
    # so that no one reads the events/s as a figure for answers that are all new.
    distinct = len(set(texts)) / len(texts)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    with EmbeddedBroker() as broker:
        lr = args.latency_rate
        results = [run(broker, w, args.events, args.latency_seconds, log_dir, latency_rate=lr) for w in (1, 2)]
        # Two workers on one host, each told to use its share of the cores.
        results.append(
            run(broker, 2, args.events, args.latency_seconds, log_dir, torch_threads=max(1, (os.cpu_count() or 2) // 2), latency_rate=lr)
        )
        # The baseline of toxicity's ration: one worker whose toxicity head judges every response, whatever it costs.
        results.append(
            run(broker, 1, args.events, args.latency_seconds, log_dir, options={"toxicity": {"head_time_share": None}}, latency_rate=lr)
        )
    one, two, two_shared, unrationed = results
    print(
        json.dumps(
            {
                "machine": f"{os.cpu_count()} CPUs, torch CPU",
                "embedding_encode_sentences_per_s": round(ceiling, 1),
                "distinct_responses_share_of_the_traffic": round(distinct, 3),
                "runs": results,
                "ratio_1_worker_to_embedding_ceiling": round(one["events_per_s"] / ceiling, 3),
                "ratio_1_worker_sustained_to_embedding_ceiling": ratio(one["sustained_events_per_s"], ceiling),
                "ratio_2_workers_to_embedding_ceiling": round(two["events_per_s"] / ceiling, 3),
                "ratio_2_workers_to_1": round(two["events_per_s"] / one["events_per_s"], 3),
                "ratio_2_workers_to_1_sustained": ratio(two["sustained_events_per_s"], one["sustained_events_per_s"]),
                "ratio_2_workers_with_torch_threads_to_1_sustained": ratio(
                    two_shared["sustained_events_per_s"], one["sustained_events_per_s"]
                ),
                "ratio_2_workers_with_torch_threads_to_1": round(two_shared["events_per_s"] / one["events_per_s"], 3),
                "ratio_1_worker_to_1_with_every_response_judged": round(one["events_per_s"] / unrationed["events_per_s"], 3),
                "worker_logs": str(log_dir),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
