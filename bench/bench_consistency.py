"""Self-consistency on the SelfCheckGPT protocol (WikiBio GPT-3 passages with 20 samples each).

Data: ../shared/data/selfcheckgpt_wikibio (passages 0-59 of the dataset). Sentence level:
AUC-PR for NonFact (minor or major inaccurate) and for Factual (accurate, scores negated);
passage level: Pearson between the mean sentence score and the annotators' mean
(accurate 0, minor 0.5, major 1). The paper's figures are on the full 238 passages; the
random baseline of this subset is printed beside them. Speed: response sentences/s, with
the embedding model's plain encode() of the same texts as the baseline.

    .venv/bin/python bench/bench_consistency.py
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr

from detectors.consistency import SelfConsistencyDetector, split_sentences
from detectors.embeddings import EmbeddingService

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "selfcheckgpt_wikibio" / "wikibio_gpt3_hallucination_dev60.json"
PAPER = {"BERTScore": (81.96, 44.23, 58.18), "unigram (max)": (85.63, 58.47, 64.71), "NLI": (92.50, 66.08, 74.14)}
LEVEL = {"accurate": 0.0, "minor_inaccurate": 0.5, "major_inaccurate": 1.0}


def auc_pr(scores, labels) -> float:
    order = np.argsort(-np.asarray(scores), kind="stable")
    lab = np.asarray(labels, dtype=float)[order]
    precision = np.cumsum(lab) / np.arange(1, len(lab) + 1)
    return float((precision * lab).sum() / lab.sum())


def main() -> None:
    logging.disable(logging.WARNING)
    data = json.loads(DATA.read_text())
    ann = [a for p in data for a in p["annotation"]]
    nonfact = [a != "accurate" for a in ann]
    human = [np.mean([LEVEL[a] for a in p["annotation"]]) for p in data]
    print(
        f"{len(data)} passages, {len(ann)} sentences; random baseline: NonFact {100 * np.mean(nonfact):.2f}, Factual {100 * (1 - np.mean(nonfact)):.2f}\n"
    )
    print(f"{'method':<28}{'NonFact':>9}{'Factual':>9}{'Pearson':>9}{'sentences/s':>13}")
    for name, (nf, f, r) in PAPER.items():
        print(f"{'paper: ' + name:<28}{nf:>9.2f}{f:>9.2f}{r:>9.2f}{'-':>13}")
    for method in ("unigram", "embedding", "combined"):
        det = SelfConsistencyDetector(method=method)
        det.warm_up()
        t0 = time.perf_counter()
        results = det.score_many([p["gpt3_sentences"] for p in data], [p["gpt3_text_samples"] for p in data])
        rate = len(ann) / (time.perf_counter() - t0)
        s = np.concatenate([r.sentence_scores for r in results])
        pr = pearsonr([r.score for r in results], human).statistic
        print(
            f"{'streamwarden ' + method:<28}{100 * auc_pr(s, nonfact):>9.2f}{100 * auc_pr(-s, [not x for x in nonfact]):>9.2f}{100 * pr:>9.2f}{rate:>13,.1f}"
        )
    texts = [x for p in data[:10] for smp in p["gpt3_text_samples"] for x in split_sentences(smp)]
    service = EmbeddingService.shared()
    t0 = time.perf_counter()
    service.encode(texts)
    print(
        f"\nbaseline: encode() of the samples' sentences: {len(texts) / (time.perf_counter() - t0):,.0f} sentences/s "
        f"(the embedding method encodes ~{len(texts) / sum(len(p['gpt3_sentences']) for p in data[:10]):.0f} sample sentences per response sentence)"
    )


if __name__ == "__main__":
    main()
