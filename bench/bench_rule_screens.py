"""The literal screens in front of the toxicity and injection rules (detectors/literals.py): what they save.

Two measurements, both against the same code with every pattern run (a screen that lets everything through,
swapped in for the modules' own), in the same process, taking turns for ``--rounds`` rounds:

1. the rule layers alone (``toxicity.rule_hits``, ``injection.scan``) over each corpus: µs per text, screened
   and not, and whether every text got the same hits (it must: a screen only skips a pattern that cannot match);
2. the worker's pipeline (every default detector, batches of 64, no broker) over demo phases: events/s of three
   variants taking turns batch by batch (each batch new, so each variant reads the same mix of events and meets the
   same background work): as before (every pattern, VADER on every response), with the screens, and with the
   screens and the VADER cache (``detectors.descriptors.sentiment``; off: an empty cache of size 0).

Corpora: the demo's generated traffic (seed 5; every turn of the prompts, the responses and the context documents of
every phase, an even sample), and from ``../shared/data``
PIGuard's benign prompts and the jailbreak and WildGuard attacks (injection's sets), Davidson, HateCheck,
ToxiGen and madlibs (toxicity's), Brown paragraphs and MNLI premises. Nothing is tuned here: there is no
threshold, only the same hits faster or not.

    .venv/bin/python bench/bench_rule_screens.py [--rounds 3] [--phases clean,hallucination] [--events 1200] [--seconds 3600] [--texts 48000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from detectors import descriptors, injection, toxicity
from detectors.literals import LiteralScreen

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class _Everything(LiteralScreen):
    """The baseline: every pattern runs on every text."""

    def __init__(self) -> None:
        super().__init__([])

    def allowed(self, text: str) -> Sequence[bool]:
        return [True] * 1024  # the callers zip it with their rules


VARIANTS = ("every pattern, no VADER cache", "screens", "screens + VADER cache")


_CACHE = descriptors._sentiments  # the cache variant's own, kept between its batches


@contextmanager
def variant_of(name: str):
    """The pipeline as it was before (every pattern run, every response scored by VADER), or with the changes."""
    saved = descriptors.SENTIMENT_CACHE_ENTRIES
    if name != VARIANTS[2]:
        descriptors.SENTIMENT_CACHE_ENTRIES = 0  # every call scores the text anew (an empty cache that keeps nothing)
        descriptors._sentiments = type(_CACHE)()
    try:
        with unscreened() if name == VARIANTS[0] else contextlib.nullcontext():
            yield
    finally:
        descriptors.SENTIMENT_CACHE_ENTRIES = saved
        descriptors._sentiments = _CACHE


@contextmanager
def unscreened():
    saved = toxicity._SCREEN, injection._SCREEN
    toxicity._SCREEN = injection._SCREEN = _Everything()
    try:
        yield
    finally:
        toxicity._SCREEN, injection._SCREEN = saved


def corpora(by_phase, limit: int) -> dict[str, list[str]]:
    from detectors.training import toxicity_data, train_injection

    demo: list[str] = []
    for records in by_phase.values():
        for r in records:
            event = json.loads(r.value)
            prompt = event.get("prompt") or ""
            turns = [prompt] if isinstance(prompt, str) else [m.get("content") or "" for m in prompt]
            demo += [event.get("response") or "", *turns, *(event.get("context") or [])]
    demo = [t for t in demo if t]
    out = {"demo traffic": demo[:: max(1, len(demo) // limit)][:limit]}  # an even sample across every phase
    if DATA.is_dir():
        benign = train_injection.load_benign(DATA)
        other = train_injection.load_other_benign(DATA)
        out["PIGuard benign"] = benign.get("notinject", []) + benign.get("wildguard", [])
        out["attacks (jailbreak, WildGuard)"] = [r["text"] for r in train_injection.load_attacks(DATA)]
        out["toxicity sets"] = [e.text for e in toxicity_data.load(DATA)]
        out["Brown, MNLI"] = other.get("brown_paragraphs", []) + other.get("mnli_premises", [])
    else:
        print(f"({DATA} missing: the demo's traffic only)")
    return out


def _time(fn: Callable[[str], object], texts: Sequence[str]) -> tuple[float, list[object]]:
    t0 = time.perf_counter()
    out = [fn(t) for t in texts]
    return (time.perf_counter() - t0) / len(texts), out


def rule_layers(texts_by_corpus: dict[str, list[str]], rounds: int) -> None:
    print(f"\n1. the rule layers alone, µs per text (median of {rounds} rounds, screened and not taking turns)")
    print(f"{'corpus':<32}{'texts':>7}  {'toxicity: all / screened':>26}  {'injection: all / screened':>27}  same hits")
    for name, texts in texts_by_corpus.items():
        cells, same = [], True
        for fn in (toxicity.rule_hits, injection.scan):
            plain_t, screened_t = [], []
            for _ in range(rounds):
                with unscreened():
                    t, plain_out = _time(fn, texts)
                plain_t.append(t)
                t, screened_out = _time(fn, texts)
                screened_t.append(t)
                same = same and plain_out == screened_out
            p, s = statistics.median(plain_t), statistics.median(screened_t)
            cells.append(f"{1e6 * p:8.1f} / {1e6 * s:7.1f} (x{p / s:5.2f})")
        print(f"{name:<32}{len(texts):>7}  {cells[0]:>26}  {cells[1]:>27}  {'yes' if same else 'NO'}")


def pipeline(by_phase, phases: list[str], events: int, rounds: int) -> None:
    from bench_phases import worker_pipeline

    print("\n2. the pipeline (every default detector, sequential), events/s, the variants taking turns batch by batch (64 events)")
    share = 3 * 64 * -(-events // (3 * 64))
    print(f"{'phase':<14} {'variant':<28} events/s per round ({share} events of each variant), then the ratio to the first")
    with worker_pipeline("bench-screens-") as pipe:
        for phase in phases:
            records = by_phase[phase]
            for i in range(0, 320, 64):  # warm: the phase's first answers into the caches
                pipe.process(records[i : i + 64])
            # The variants take turns batch by batch (the order rotated every three batches), so each reads the same
            # mix of events and meets the same background work (the drift tests on their threads); every batch is new.
            spent = {v: [0.0] * rounds for v in VARIANTS}
            count = {v: [0] * rounds for v in VARIANTS}
            per_round = 9 * -(-events // (3 * 64))  # batches a round: each variant's share of ``events``, a whole rotation
            need = 320 + rounds * per_round * 64
            if len(records) < need:
                raise SystemExit(f"{phase}: {len(records)} events, {need} needed: raise --seconds")
            for k, i in enumerate(range(320, need, 64)):
                variant = VARIANTS[(k + k // 3) % 3]  # 0 1 2, 1 2 0, 2 0 1, ...
                r = k // per_round
                batch = records[i : i + 64]
                with variant_of(variant):
                    t0 = time.perf_counter()
                    pipe.process(batch)
                    spent[variant][r] += time.perf_counter() - t0
                count[variant][r] += len(batch)
            rates = {v: [n / s for n, s in zip(count[v], spent[v])] for v in VARIANTS}
            base = rates[VARIANTS[0]]
            for variant in VARIANTS:
                ratios = " ".join(f"x{a / b:.2f}" for a, b in zip(rates[variant], base))
                print(f"{phase:<14} {variant:<28} {' '.join(f'{x:7.1f}' for x in rates[variant])}   {ratios}")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--phases", default="clean,hallucination")
    ap.add_argument("--events", type=int, default=1200, help="events per run of the pipeline (3 x rounds runs a phase)")
    ap.add_argument("--seconds", type=float, default=3600.0, help="length of the generated demo run the events come from")
    ap.add_argument("--texts", type=int, default=48000, help="the demo traffic's texts the rule layers read (an even sample)")
    ap.add_argument("--no-pipeline", action="store_true")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    from bench_phases import records_by_phase

    by_phase = records_by_phase(args.seconds)
    texts = corpora(by_phase, args.texts)
    print(
        f"screened patterns: toxicity {toxicity._SCREEN.screened()} of {len(toxicity._FLAT_RULES)}, "
        f"injection {injection._SCREEN.screened()} of {len(injection.RULES)}"
    )
    rule_layers(texts, args.rounds)
    if not args.no_pipeline:
        pipeline(by_phase, args.phases.split(","), args.events, args.rounds)


if __name__ == "__main__":
    main()
