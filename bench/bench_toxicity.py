"""Toxicity: the shipped heads and rule layer on labelled data, beside two PyPI peers, and their speed.

Every figure is on the REPORT split of detectors/training/toxicity_data.py (never fitted or tuned
on; C and the thresholds were chosen on the TUNE split), unless a line says otherwise:

* per source: precision / recall / F1 at the shipped threshold and AUC, for the head alone, the
  shipped detector (head + rules that flag alone), the rules alone, and the peers
  alt-profanity-check 1.9.1 (a linear SVM on bag of words, its predict() = probability >= 0.5) and
  better-profanity 0.7.0 (a word list);
* per category: identity hate (its own head) per source; threat (rules) against HateCheck's threat
  functionalities; insult / sexual / self-harm have no labels in the shared data: their hit rates only;
* HateCheck per functionality (its report templates): accuracy against the gold label;
* cross-source: fitted on one source alone, tested on the others (all of their rows: never trained on);
* unintended bias: the false-positive rate per bias_madlibs identity term on the report split's
  non-toxic sentences, with and without the madlibs sentences in training;
* identity-term masking, before (the heads retrained here on unmasked text, same script and seed) vs
  after (the shipped heads, which read mask_identities(normalise(x))): per source, identity hate, and
  per madlibs term the FPR on 150 non-toxic and TPR on 40 toxic REPORT sentences with 95% intervals;
* texts/s of each, on the same texts, in this process (ours: encoding included, a cold cache).

    .venv/bin/python bench/bench_toxicity.py
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence

import numpy as np

from detectors.embeddings import EmbeddingService
from detectors.toxicity import HEAD_FILE, ToxicityDetector, mask_identities, normalise, rule_hits
from detectors.training import train_toxicity
from detectors.training.toxicity_data import SOURCES, madlibs_terms_report
from detectors.training.train_toxicity import (
    Data,
    Head,
    auc,
    embed_examples,
    embed_terms_report,
    evaluate,
    hatecheck_functionality,
    head_text,
    madlibs_fpr,
    mask_comparison,
    prf,
    train_all,
)


class CachedEmbeddings:
    """The bench's embeddings: the cached vectors of the labelled texts; anything else from the model."""

    def __init__(self, d: Data, service: EmbeddingService, mask: bool):
        self.table = {head_text(e.text, mask): d.x[i] for i, e in enumerate(d.examples)}
        self.service = service

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in texts if t not in self.table]
        if missing:
            self.table.update(zip(missing, self.service.encode(missing)))
        return np.stack([self.table[t] for t in texts])

    def warm_up(self) -> None:
        pass


def peers() -> dict[str, Callable[[list[str]], np.ndarray]]:
    out: dict[str, Callable[[list[str]], np.ndarray]] = {}
    try:
        from profanity_check import predict_prob

        out["alt-profanity-check"] = lambda texts: np.asarray(predict_prob(texts), dtype=float)
    except ImportError:
        print("alt-profanity-check is not installed: no peer column (pip install alt-profanity-check==1.9.1)")
    try:
        from better_profanity import profanity

        profanity.load_censor_words()
        out["better-profanity"] = lambda texts: np.array([float(profanity.contains_profanity(t)) for t in texts])
    except ImportError:
        print("better-profanity is not installed: no peer column (pip install better-profanity==0.7.0)")
    return out


def row(name: str, r: dict) -> str:
    a = "-" if r.get("auc") is None else f"{r['auc']:.3f}"
    return f"  {name:<28}{r['n']:>6}{r['positives']:>6}{r['precision']:>8.3f}{r['recall']:>8.3f}{r['f1']:>8.3f}{a:>8}"


HEADER = f"  {'':<28}{'n':>6}{'pos':>6}{'prec':>8}{'recall':>8}{'F1':>8}{'AUC':>8}"


def _rate(r: dict) -> str:
    return f"{r['rate']:.3f} [{r['ci95'][0]:.3f},{r['ci95'][1]:.3f}]"


def identity_mask_section(service: EmbeddingService, d: Data, tox: Head, hate: Head, shipped_mask: bool) -> None:
    """Before (unmasked) vs after (masked): the other variant's heads are retrained here with the training script."""
    print("\nidentity-term masking: before = heads on unmasked text, after = heads on masked text (REPORT split)")
    d_other = embed_examples(service, mask=not shipped_mask)
    weights = dict(train_toxicity.SOURCE_WEIGHT)
    tox_o, hate_o, _, _, _ = train_all(d_other)
    train_toxicity.SOURCE_WEIGHT.update(weights)  # train_all chooses the madlibs weight in place
    variants = {
        shipped_mask: mask_comparison(d, embed_terms_report(service, mask=shipped_mask), tox, hate),
        not shipped_mask: mask_comparison(d_other, embed_terms_report(service, mask=not shipped_mask), tox_o, hate_o),
    }
    before, after = variants[False], variants[True]
    print(
        f"  shipped: {'after' if shipped_mask else 'before'}; the other retrained here. toxic threshold / C: "
        f"before {before['toxic_threshold']:.2f} / {before['c']}, after {after['toxic_threshold']:.2f} / {after['c']}"
    )
    print(f"  {'toxic vs not':<22}{'prec':>14}{'recall':>14}{'F1':>14}{'AUC':>14}   (before -> after)")
    for key, title in (("toxic_report", "toxic"), ("identity_hate_report", "identity_hate head")):
        print(f"  {title}")
        for src, a in after[key].items():
            b = before[key][src]
            cells = "".join(f"{b[k] or 0:>7.3f}>{a[k] or 0:<6.3f}" for k in ("precision", "recall", "f1", "auc"))
            print(f"    {src:<20}{cells}")
    tb, ta = before["madlibs_terms_report"], after["madlibs_terms_report"]
    rows = madlibs_terms_report()
    changed: dict[str, list[bool]] = {}
    for e in rows:
        changed.setdefault(str(e.group), []).append(mask_identities(normalise(e.text)) != normalise(e.text))
    print(
        "  per madlibs term, REPORT split (toxicity_data.madlibs_terms_report: the first 150 non-toxic and 40 toxic "
        "sentences of each term in pick order, the 20 / 4 above among them); masked = share of its sentences the mask changes"
    )
    print(f"  {'':<24}{'overall':>24}{'max-min':>9}{'std':>8}  terms above / below the overall interval")
    for name, t in (("FPR before", tb["fpr"]), ("FPR after", ta["fpr"]), ("TPR before", tb["tpr"]), ("TPR after", ta["tpr"])):
        overall = f"{t['overall']:.3f} [{t['ci95'][0]:.3f},{t['ci95'][1]:.3f}]"
        print(f"  {name:<24}{overall:>24}{t['max_minus_min']:>9.3f}{t['std']:>8.3f}  {t['terms_above'] or '-'} / {t['terms_below'] or '-'}")
    print(f"  {'term':<18}{'masked':>7}  {'FPR before':<22}{'FPR after':<22}{'TPR before':<22}{'TPR after':<22}")
    for g, a in ta["per_term"].items():
        b = tb["per_term"][g]
        share = float(np.mean(changed[g]))
        print(f"  {g:<18}{share:>7.2f}  {_rate(b['fpr']):<22}{_rate(a['fpr']):<22}{_rate(b['tpr']):<22}{_rate(a['tpr']):<22}")
    n = {k: ta["per_term"][next(iter(ta["per_term"]))][k]["n"] for k in ("fpr", "tpr")}
    print(f"  (n per term: {n['fpr']} non-toxic, {n['tpr']} toxic)")


READER_INSULT_RULES = ("directed_insult", "insulting_question", "any_idiot_could")


def reader_insults_section() -> None:
    """The rules that flag an insult aimed at the reader on their own: how often they fire on every text of the
    shared sets (written for chat answers; none of these texts was read to write them, none is a tuning set)."""
    import gzip

    from detectors.training.toxicity_data import DEFAULT_DATA

    def rows(path):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            yield from (json.loads(line) for line in fh if line.strip())

    sets: dict[str, list[str]] = {}
    for r in rows(DEFAULT_DATA / "toxicity_davidson" / "davidson_labeled_data.jsonl.gz"):
        sets.setdefault(f"davidson {r['category']}", []).append(r["text"])
    for r in rows(DEFAULT_DATA / "bias_hatecheck" / "hatecheck.jsonl"):
        sets.setdefault(f"hatecheck {r['label']}", []).append(r["text"])
    for r in rows(DEFAULT_DATA / "bias_madlibs" / "bias_madlibs_77k.jsonl.gz"):
        sets.setdefault(f"madlibs {r['label']}", []).append(r["text"])
    for r in rows(DEFAULT_DATA / "bias_toxigen_prompts" / "toxigen_prompt_sentences.jsonl"):
        sets.setdefault(f"toxigen {r['label']}", []).append(r["text"])
    sets["piguard benign prompts"] = [
        r.get("text") or r.get("prompt") or "" for r in rows(DEFAULT_DATA / "injection_piguard_benign" / "piguard_benign.jsonl")
    ]
    sets["mnli premises"] = [r["premise"] for r in rows(DEFAULT_DATA / "nli_mnli_dev" / "mnli_dev.jsonl.gz")]
    print("\ninsults aimed at the reader (rules that flag alone: " + ", ".join(READER_INSULT_RULES) + "): share of texts they fire on")
    for name, texts in sets.items():
        hit = sum(any(h.rule in READER_INSULT_RULES for h in rule_hits(t)) for t in texts)
        print(f"  {name:<36}{len(texts):>8,} texts {hit:>6,} hits  {hit / max(1, len(texts)):.4f}")


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    service = EmbeddingService.shared()
    shipped_mask = ToxicityDetector().head.identity_mask
    d = embed_examples(service, mask=shipped_mask)
    det = ToxicityDetector(embeddings=CachedEmbeddings(d, service, shipped_mask))  # type: ignore[arg-type]
    texts = [e.text for e in d.examples]
    results = det.score_many(texts)
    head_s = np.array([r.head_score for r in results])
    shipped = np.array([r.flagged for r in results])
    by_rules = np.array([any(h.flags_alone for h in r.hits) for r in results])
    y = d.arr("toxic").astype(bool)
    shipped_head = json.loads(HEAD_FILE.read_text(encoding="utf-8"))
    tox = Head(det.head.w, det.head.b, det.head.threshold, shipped_head["toxic"]["c"])
    hate = Head(det.head.hate_w, det.head.hate_b, det.head.hate_threshold, shipped_head["identity_hate"]["c"])
    peer_scores = {name: fn(texts) for name, fn in peers().items()}
    meta = det.head.meta
    print(
        f"head trained {meta.get('trained')}, toxic threshold {det.threshold:.2f}, identity-hate threshold {det.head.hate_threshold:.2f} (both chosen on TUNE)"
    )
    print("\ntoxic vs not, REPORT split, at each one's threshold")
    for source in SOURCES:
        m = d.mask("report", (source,))
        print(f"{source}\n{HEADER}")
        print(row("ours: head", prf(y[m], head_s[m] >= det.threshold) | {"auc": auc(y[m], head_s[m])}))
        print(row("ours: head + rules (shipped)", prf(y[m], shipped[m]) | {"auc": auc(y[m], np.array([r.score for r in results])[m])}))
        print(row("rules alone", prf(y[m], by_rules[m])))
        for name, s in peer_scores.items():
            print(row(name, prf(y[m], s[m] >= 0.5) | {"auc": auc(y[m], s[m])}))

    print("\ncategories, REPORT split")
    hate_y = d.arr("hate").astype(bool)
    hate_s = hate(d.x)
    print(f"identity_hate (its head)\n{HEADER}")
    for source in ("davidson", "hatecheck", "toxigen"):
        m = d.mask("report", (source,))
        print(row(source, prf(hate_y[m], hate_s[m] >= hate.threshold) | {"auc": auc(hate_y[m], hate_s[m])}))
    m = d.mask("report", ("hatecheck",))
    kinds = d.arr("kind")
    threat_y = np.isin(kinds, ["threat_dir_h", "threat_norm_h"])
    threat_cat = np.array(["threat" in r.categories for r in results])
    print(f"threat (rules, on a flagged text) vs HateCheck threat_dir_h + threat_norm_h\n{HEADER}")
    print(row("hatecheck", prf(threat_y[m], threat_cat[m])))
    print("insult / sexual / self_harm: no labels in the shared data; share of texts with the category, toxic | non-toxic:")
    for cat in ("insult", "sexual", "self_harm", "threat", "identity_hate"):
        has = np.array([cat in r.categories for r in results])
        cells = []
        for source in SOURCES:
            ms = d.mask("report", (source,))
            cells.append(f"{source} {has[ms & y].mean():.3f} | {has[ms & ~y].mean():.3f}")
        print(f"  {cat:<14}" + "   ".join(cells))

    print("\nHateCheck per functionality, REPORT templates: accuracy against the gold label")
    func = hatecheck_functionality(d, shipped)
    peer_func = {name: hatecheck_functionality(d, s >= 0.5) for name, s in peer_scores.items()}
    print(f"  {'functionality':<22}{'gold':<13}{'n':>4}{'ours':>8}" + "".join(f"{n[:18]:>20}" for n in peer_func))
    for k, r in func.items():
        print(
            f"  {k:<22}{r['gold']:<13}{r['n']:>4}{r['accuracy']:>8.3f}"
            + "".join(f"{pf[k]['accuracy']:>20.3f}" for pf in peer_func.values())
        )

    print("\nunintended bias: false-positive rate per madlibs identity term, REPORT split's non-toxic sentences")
    report = evaluate(d, tox, hate, det.head.rules_flag)
    before = report["madlibs_fpr_report_without_madlibs_training"]
    after = madlibs_fpr(d, tox)
    peer_fpr = {}
    mm = d.mask("report", ("madlibs",)) & ~y
    groups = np.array([e.group for e in d.examples])
    for name, s in peer_scores.items():
        peer_fpr[name] = {str(g): float((s[mm & (groups == g)] >= 0.5).mean()) for g in sorted(set(groups[mm]))}
    print(f"  {'':<26}{'overall':>9}{'max-min':>9}{'std':>8}  worst term")
    for name, r in (("ours, without madlibs train", before), ("ours (shipped)", after)):
        print(
            f"  {name:<26}{r['overall_fpr']:>9.3f}{r['max_minus_min']:>9.3f}{r['std']:>8.3f}  {r['worst_term']} ({r['per_term'][r['worst_term']]['fpr']:.2f})"
        )
    for name, per in peer_fpr.items():
        v = np.array(list(per.values()))
        worst = max(per, key=lambda g: per[g])
        print(f"  {name:<26}{v.mean():>9.3f}{v.max() - v.min():>9.3f}{v.std():>8.3f}  {worst} ({per[worst]:.2f})")
    print(f"  per term (n each, FPR without -> with madlibs training [95% CI]{''.join(', ' + n for n in peer_fpr)}):")
    for g, r in after["per_term"].items():
        b = before["per_term"][g]["fpr"]
        print(
            f"    {g:<14}{r['n']:>4}  {b:.2f} -> {r['fpr']:.2f} [{r['ci95'][0]:.2f},{r['ci95'][1]:.2f}]"
            + "".join(f"  {p[g]:.2f}" for p in peer_fpr.values())
        )
    print(f"  terms whose interval lies above the overall rate (shipped): {after['terms_over_overall_ci'] or 'none'}")
    wo = report["toxic_report_without_madlibs_training"]
    print(
        "  what the mitigation costs elsewhere (F1 on REPORT, without -> with): "
        + ", ".join(f"{s} {wo[s]['f1']:.3f} -> {report['toxic_report'][s]['f1']:.3f}" for s in SOURCES)
    )

    identity_mask_section(service, d, tox, hate, shipped_mask)

    print("\ncross-source: fitted on one source alone (threshold on its own TUNE split); tested on the others' rows (all splits)")
    print(f"  {'':<22}" + "".join(f"{s:>26}" for s in SOURCES))
    for trained, r in report["cross_source"].items():
        cells = [
            f"F1 {r[s]['f1']:.3f} AUC {r[s]['auc'] if r[s]['auc'] is not None else '-':<6}{'*' if trained.endswith(s) else ' '}"
            for s in SOURCES
        ]
        print(f"  {trained:<22}" + "".join(f"{c:>26}" for c in cells))
    print("  (* its own REPORT split)")

    reader_insults_section()

    print("\nspeed, texts/s on 300 report texts in this process (ours: normalise, chunk, encode uncached, both heads, rules)")
    sample = [e.text for e in d.examples if e.split == "report"][::7][:300]
    live = ToxicityDetector()
    live.warm_up()
    timings = {}
    t = time.perf_counter()
    live.score_many(sample)
    timings["ours (shipped)"] = time.perf_counter() - t
    t = time.perf_counter()
    for text in sample:
        rule_hits(text)
    timings["rules alone"] = time.perf_counter() - t
    for name, fn in peers().items():
        t = time.perf_counter()
        fn(sample)
        timings[name] = time.perf_counter() - t
    for name, secs in timings.items():
        print(f"  {name:<24}{len(sample) / secs:>12,.0f}")


if __name__ == "__main__":
    main()
