"""Descriptor drift's judgement: false alarms on windows drawn from one source, and power on windows that drifted,
with the tests the detector uses (two-sample: K-S, Z, chi-square homogeneity; ``stattest_for``) beside evidently's
default choice per column (its one-sample chi-square for a column of few values, distances above 1,000 reference
rows), on the same draws, in the same process, at the detector's threshold (0.001 unless ``--threshold``).

Sources (nothing here is tuned: the threshold is the detector's default and the tests are chosen by what they are):
* **demo**: the demo's generated traffic of one model (``support-assistant``, seed 11 for the clean pool, a 300 s
  run with seed 5 for the phases); ``same`` draws both windows from the clean pool, ``mix P%`` puts P% of a
  phase's events into the current window (``1 event of``: one event);
* **brown** (``../shared/data/drift_brown``, sentences as responses): ``same`` draws both windows from one genre,
  ``shift`` the reference from news and the current window from another genre.

A draw alarms when any column is called drifted; the rate over ``--draws`` draws is printed per case and window.

    .venv/bin/python bench/bench_descriptor_drift.py [--draws 200] [--windows 100,300,1200]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import time
from pathlib import Path

import pandas as pd

from detectors.descriptor_drift import DescriptorDriftDetector, column_tests, rows_to_frame
from streams.events.schema import InferenceEvent
from streams.local.traffic import Schedule, TrafficGenerator

BROWN = Path(__file__).resolve().parents[2] / "shared" / "data" / "drift_brown" / "brown_docs.jsonl"
MODEL = "support-assistant"


def evidently_default(column: str, reference: pd.Series, current: pd.Series):
    """What the detector ran before: evidently's own choice of test for the column's type and size."""
    from evidently.legacy.calculations.stattests import get_stattest

    return get_stattest(reference, current, "cat" if column == "refusal" else "num", None)


def describe(events: list) -> pd.DataFrame:
    return rows_to_frame(DescriptorDriftDetector(background=False).describe_events(events))


def demo_pools() -> dict[str, pd.DataFrame]:
    from bench_phases import records_by_phase

    gen = TrafficGenerator(Schedule(()), seed=11, malformed_rate=0.0)
    clean = [e for e in (gen.event(0.0)[1] for _ in range(8000)) if e.model == MODEL]
    pools = {"clean": describe(clean)}
    for phase, records in records_by_phase().items():
        events = [InferenceEvent.model_validate_json(r.value) for r in records if r.value]
        events = [e for e in events if e.model == MODEL]
        if phase != "clean" and len(events) >= 100:
            pools[phase] = describe(events)
    return pools


def brown_pools() -> dict[str, pd.DataFrame]:
    by_genre: dict[str, list[str]] = {}
    for line in BROWN.read_text().splitlines():
        d = json.loads(line)
        for sentence in re.split(r"(?<=[.!?])\s+", d["text"].replace("\n", " ")):
            if len(sentence.split()) >= 5:
                by_genre.setdefault(d["category"], []).append(sentence)
    pools = {}
    for genre, sentences in by_genre.items():
        events = [
            InferenceEvent(
                event_id=f"{genre}-{i}",
                timestamp=0,
                model="m",
                model_version="v",
                prompt="Write a passage.",
                response=s,
                output_tokens=max(1, len(s) // 4),
            )
            for i, s in enumerate(sentences)
        ]
        pools[genre] = describe(events)
    return pools


def rate(ref_pool, cur_pool, window: int, draws: int, seed: int, choosers: dict, threshold: float, mix=None) -> dict:
    """The share of draws each chooser alarms on; windows drawn without replacement (disjoint when one pool)."""
    rng = random.Random(seed)
    alarms = dict.fromkeys(choosers, 0)
    columns: dict[str, dict[str, int]] = {name: {} for name in choosers}
    for _ in range(draws):
        if mix is None and cur_pool is ref_pool:
            idx = rng.sample(range(len(ref_pool)), 2 * window)
            ref, cur = ref_pool.iloc[idx[:window]], ref_pool.iloc[idx[window:]]
        elif mix is None:
            ref = ref_pool.iloc[rng.sample(range(len(ref_pool)), window)]
            cur = cur_pool.iloc[rng.sample(range(len(cur_pool)), window)]
        else:
            k = round(mix * window)
            idx = rng.sample(range(len(ref_pool)), 2 * window - k)
            ref = ref_pool.iloc[idx[:window]]
            cur = pd.concat([ref_pool.iloc[idx[window:]], cur_pool.iloc[rng.sample(range(len(cur_pool)), k)]])
        for name, choose in choosers.items():
            drifted = [c for c, r in column_tests(ref, cur, threshold, choose).items() if r["drifted"]]
            alarms[name] += bool(drifted)
            for c in drifted:
                columns[name][c] = columns[name].get(c, 0) + 1
    return {name: (alarms[name] / draws, columns[name]) for name in choosers}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--windows", default="100,300,1200")
    ap.add_argument("--threshold", type=float, default=0.001)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    from detectors.descriptor_drift import stattest_for

    choosers = {"evidently default": evidently_default, "two-sample (shipped)": stattest_for}
    t0 = time.perf_counter()
    demo, brown = demo_pools(), brown_pools()
    print(
        f"pools: demo {', '.join(f'{k} {len(v)}' for k, v in demo.items())}; brown {', '.join(f'{k} {len(v)}' for k, v in brown.items())}"
    )
    cases = []
    for window in (int(w) for w in args.windows.split(",")):
        if 2 * window <= len(demo["clean"]):
            cases.append(("demo", "same: clean vs clean", window, demo["clean"], demo["clean"], None))
        for phase in ("refusal_burst", "pii_leak", "topic_shift", "hallucination"):
            for mix in (1 / window, 0.1, 0.25):
                if phase in demo and round(mix * window) <= len(demo[phase]) and 2 * window <= len(demo["clean"]):
                    label = "1 event of" if round(mix * window) == 1 else f"mix {mix:.0%}"
                    cases.append(("demo", f"{label} {phase}", window, demo["clean"], demo[phase], mix))
        for genre in ("learned", "belles_lettres", "news"):
            if 2 * window <= len(brown[genre]):
                cases.append(("brown", f"same: {genre}", window, brown[genre], brown[genre], None))
        for genre in ("fiction", "government", "learned", "religion"):
            if window <= min(len(brown["news"]), len(brown[genre])):
                cases.append(("brown", f"shift: news -> {genre}", window, brown["news"], brown[genre], None))
    print(
        f"\n{'source':<6} {'case':<30} {'window':>6}  " + "  ".join(f"{n:>22}" for n in choosers) + "  columns alarming (evidently default)"
    )
    for i, (source, case, window, ref_pool, cur_pool, mix) in enumerate(cases):
        out = rate(ref_pool, cur_pool, window, args.draws, seed=i, choosers=choosers, threshold=args.threshold, mix=mix)
        cols = ", ".join(f"{c} {n}" for c, n in sorted(out["evidently default"][1].items(), key=lambda kv: -kv[1])[:3])
        print(f"{source:<6} {case:<30} {window:>6}  " + "  ".join(f"{out[n][0]:>22.3f}" for n in choosers) + f"  {cols}", flush=True)
    print(f"\n{args.draws} draws per row, threshold {args.threshold}, {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
