"""A static screen for the toxicity heads, as injection has (issue 16, report only: not shipped, see
bench/RESULTS.md): a logistic head on the static token table that would decide which responses need
all-MiniLM-L6-v2 at all.

The screen reads every chunk the heads would read (normalised, identity terms masked as the shipped heads
read them). A text goes on to MiniLM and the shipped heads (``toxicity_head.json``, trained by
``train_toxicity.py``, unchanged) when its worst chunk reaches the **gate**, or when any rule of the rule
layer hits it (so that a text the rules flag still gets its identity-hate score); below the gate the
screen's score stands for the toxicity head's and the identity-hate score is 0. Same data, splits, source
weights and seed as ``train_toxicity.py``:

* the screen's C: the grid's best mean tuning-split AUC over the sources (``train_toxicity.train_head``);
* the gate: on the tuning split only, the lowest screen score of a text the shipped toxicity head flags
  (rounded down), so that the screened detector flags every tuning text the unscreened one flags;
* the static head **alone** (its threshold chosen on the tuning split as the shipped head's), against MiniLM's on
  the report split: what a toxicity stage rationed under load could fall back to;
* the **report split**, never chosen on: per source precision / recall / F1 with and without the screen
  (head + the rules that flag alone, as shipped), the flags that differ, and the share of texts that
  still go to MiniLM, toxic and not; MNLI premises and the demo's responses (neither trained on) too.

    .venv/bin/python bench/bench_toxicity_screen.py [--data ../shared/data] [--out /tmp/toxicity_screen.json]

MiniLM's vectors come from ``train_toxicity``'s cache (bench/.cache) when present.
"""

from __future__ import annotations

import argparse
import gzip
import json
from datetime import date
from pathlib import Path

import numpy as np

from detectors.embeddings import EmbeddingService
from detectors.toxicity import ToxicityHead, chunk_text, rule_hits
from detectors.training import train_toxicity as tt
from detectors.training.toxicity_data import DEFAULT_DATA, SOURCES


def static_scores(w: np.ndarray, b: float, texts: list[str]) -> np.ndarray:
    """Per text, the screen's score of its worst chunk (chunked and masked as the detector does)."""
    from detectors.static_embeddings import StaticEmbeddingService

    service = StaticEmbeddingService()
    pieces = [chunk_text(t, 400, 8, mask=True)[0] or [""] for t in texts]
    p = tt.sigmoid(service.encode([c for cs in pieces for c in cs]).astype(np.float64) @ w + b)
    out, pos = [], 0
    for cs in pieces:
        out.append(float(p[pos : pos + len(cs)].max()))
        pos += len(cs)
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=Path("/tmp/toxicity_screen.json"))
    args = ap.parse_args()
    np.random.seed(tt.SEED)
    from detectors.static_embeddings import StaticEmbeddingService

    shipped = ToxicityHead()
    d = tt.embed_examples(EmbeddingService.shared(), args.data, mask=True)  # MiniLM, as the shipped heads read
    texts = [e.text for e in d.examples]
    static = StaticEmbeddingService()
    d_static = tt.Data(d.examples, static.encode([tt.head_text(t, True) for t in texts]))
    SOURCE_WEIGHT = tt.SOURCE_WEIGHT
    SOURCE_WEIGHT["madlibs"] = float(shipped.meta.get("source_weight", {}).get("madlibs", SOURCE_WEIGHT["madlibs"]))
    screen = tt.train_head(d_static, "toxic", SOURCES)

    y = d.arr("toxic").astype(bool)
    p_minilm, _ = shipped.probabilities(d.x)
    p_static = static_scores(screen.w.astype(np.float64), screen.b, texts)
    hits = [rule_hits(t) for t in texts]
    any_hit = np.array([bool(h) for h in hits])
    by_rules = np.array([any(x.flags_alone for x in h) for h in hits]) if shipped.rules_flag else np.zeros(len(texts), dtype=bool)
    tu, rp = d.mask("tune"), d.mask("report")
    head_flags = p_minilm >= shipped.threshold
    gate = float(np.floor(p_static[tu & head_flags].min() * 1e4) / 1e4)
    if gate >= shipped.threshold:
        raise SystemExit(f"the gate {gate} is not below the head's threshold {shipped.threshold}: a screened-out text could flag")

    # The static head alone, as a stand-in for MiniLM (what a rationed toxicity stage could fall back to under load):
    # its threshold chosen on the tuning split as the shipped head's was (best_threshold: F0.5, sources weighing the
    # same), its figures on the report split, with the rules that flag alone in both columns.
    alone_threshold = tt.best_threshold(y[tu], p_static[tu], d.arr("source")[tu])
    alone = {}
    for s_ in SOURCES:
        m = rp & (d.arr("source") == s_)
        alone[s_] = {
            "minilm": tt.prf(y[m], head_flags[m] | by_rules[m]) | {"auc": tt.auc(y[m], p_minilm[m])},
            "static": tt.prf(y[m], (p_static[m] >= alone_threshold) | by_rules[m]) | {"auc": tt.auc(y[m], p_static[m])},
        }
    to_minilm = (p_static >= gate) | any_hit
    p_screened = np.where(to_minilm, p_minilm, np.minimum(p_static, gate))
    unscreened = head_flags | by_rules
    screened = (p_screened >= shipped.threshold) | by_rules
    src = d.arr("source")
    report = {}
    for s in SOURCES:
        m = rp & (src == s)
        report[s] = {
            "unscreened": tt.prf(y[m], unscreened[m]) | {"auc": tt.auc(y[m], p_minilm[m])},
            "screened": tt.prf(y[m], screened[m]) | {"auc": tt.auc(y[m], p_screened[m])},
            "flags_that_differ": int((screened[m] != unscreened[m]).sum()),
            "sent_to_minilm_non_toxic": round(float(to_minilm[m & ~y].mean()), 4),
            "sent_to_minilm_toxic": round(float(to_minilm[m & y].mean()), 4) if (m & y).any() else None,
        }
    # Text of other kinds, never trained on: MNLI premises and the demo's responses.
    other: dict[str, float] = {}
    with gzip.open(args.data / "nli_mnli_dev" / "mnli_dev.jsonl.gz", "rt", encoding="utf-8") as fh:
        mnli = sorted({json.loads(line).get("premise") or "" for line in fh} - {""})[:2000]
    from streams.local.traffic import Schedule, TrafficGenerator

    gen = TrafficGenerator(Schedule(()), seed=3, malformed_rate=0.0)
    demo = sorted({gen.event(0.0)[1].response for _ in range(3000)})
    for name, ts in (("mnli_premises", mnli), ("demo_responses_distinct", demo)):
        p = static_scores(screen.w.astype(np.float64), screen.b, ts)
        hit = np.array([bool(rule_hits(t)) for t in ts])
        other[name] = round(float(((p >= gate) | hit).mean()), 4)
    out = {
        "model": "logistic regression on the static token table (detectors/models/static-minilm-l6) of the masked, normalised chunk",
        "embedding": "static-minilm-l6",
        "dimension": int(len(screen.w)),
        "gate": gate,
        "trained": date.today().isoformat(),
        "seed": tt.SEED,
        "script": "bench/bench_toxicity_screen.py",
        "evaluation": {
            "c": screen.c,
            "gate_tuned": gate,
            "report_split": report,
            "sent_to_minilm_never_trained_on": other,
            "static_alone": {"threshold_tuned": alone_threshold, "report_split": alone},
        },
        "weights": [round(float(v), 6) for v in screen.w],
        "bias": round(float(screen.b), 6),
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"gate {gate} (C {screen.c}); report split, per source: F1 unscreened -> screened, flags that differ, share sent to MiniLM")
    for s_, r in report.items():
        print(
            f"  {s_:<10} {r['unscreened']['f1']:.4f} -> {r['screened']['f1']:.4f}  differ {r['flags_that_differ']}  "
            f"non-toxic {r['sent_to_minilm_non_toxic']:.1%}  toxic {r['sent_to_minilm_toxic'] or 0:.1%}"
        )
    print("never trained on, share sent to MiniLM: " + ", ".join(f"{k} {v:.1%}" for k, v in other.items()))
    print(f"the static head alone (threshold {alone_threshold:.2f}, tuned) against MiniLM's, report split: P / R / F1 / AUC")
    for s_, r in alone.items():
        a, b = r["minilm"], r["static"]
        print(
            f"  {s_:<10} MiniLM {a['precision']:.3f} / {a['recall']:.3f} / {a['f1']:.3f} / {a['auc']:.3f}"
            f"   static {b['precision']:.3f} / {b['recall']:.3f} / {b['f1']:.3f} / {b['auc']:.3f}"
        )


if __name__ == "__main__":
    main()
