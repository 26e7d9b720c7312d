"""Threads that spin after their work: does letting them sleep at once speed a worker's pipeline up?

A profile of the pipeline put 17% of its time in the static table's tokenizer, whose threads contend with
threads that spin after their work (torch's OpenMP pool, the tokenizer's own). Each setting runs in a process
of its own (the variables are read when the libraries load), every default detector as the worker builds it,
one demo phase, batches of 64 after a warm-up; the settings take turns for ``--rounds`` rounds, and each
figure is printed beside the default's of the same round (the baseline).

    .venv/bin/python bench/bench_thread_waits.py [--phases clean,hallucination] [--rounds 2] [--events 1200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {
    "default": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "TOKENIZERS_PARALLELISM=false": {"TOKENIZERS_PARALLELISM": "false"},
}


def child(phase: str, events: int, warm: int) -> None:
    """One run in this process: events/s of the pipeline over ``events`` records of ``phase``, as JSON."""
    import logging

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_phases import records_by_phase, worker_pipeline

    logging.disable(logging.WARNING)
    records = records_by_phase()[phase]
    with worker_pipeline("bench-waits-", overlap=True) as pipeline:  # overlapped, as the worker runs it
        for i in range(0, warm, 64):
            pipeline.process(records[i : i + 64])
        timed = records[warm : warm + events]
        t0 = time.perf_counter()
        for i in range(0, len(timed), 64):
            pipeline.process(timed[i : i + 64])
        print(json.dumps({"events_per_s": len(timed) / (time.perf_counter() - t0)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--phases", default="clean,hallucination")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--events", type=int, default=1200)
    ap.add_argument("--warm", type=int, default=320)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.events, args.warm)
        return
    for phase in args.phases.split(","):
        for r in range(1, args.rounds + 1):
            rates = {}
            for name, extra in SETTINGS.items():
                out = subprocess.run(
                    [sys.executable, __file__, "--child", phase, "--events", str(args.events), "--warm", str(args.warm)],
                    env={**os.environ, **extra},
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rates[name] = json.loads(out.stdout.strip().splitlines()[-1])["events_per_s"]
            base = rates["default"]
            print(
                f"{phase:<14} round {r}  " + "  ".join(f"{name} {v:7.1f} events/s (x{v / base:.2f})" for name, v in rates.items()),
                flush=True,
            )


if __name__ == "__main__":
    main()
