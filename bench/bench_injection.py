"""Injection and jailbreak detection on labelled prompts: the detector (rules + classifier) beside the
rule layer alone, in the same process.

* **tuning split** (20 % of jailbreak_llms + PIGuard benign by a hash of the text, see
  detectors/training/train_injection.py): the shipped threshold was chosen there (best F0.5);
  printed for reference only;
* **report split** (another 20 %, never trained or tuned on): precision / recall / F1, recall per
  attack platform and per upstream community label;
* **benign sets**: the false-positive rate on NotInject (injection trigger words in benign prompts),
  WildGuard-benign (report split rows), and on benign text of other sources never trained on
  (MNLI premises, never trained on; the report split of presidio_synth sentences, Davidson "neither"
  tweets and Brown paragraphs, whose train split the head saw; Brown paragraphs are scored as context
  documents: the indirect-injection check). "prec+atk" is the precision when the set is pooled with
  the report split's attacks.

The attack data holds jailbreaks only (in-the-wild role-play prompts); the other rule families
(overrides, extraction, exfiltration, encodings) are exercised by tests/test_injection.py, not here.

    .venv/bin/python bench/bench_injection.py
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detectors.injection import InjectionDetector, windows
from detectors.training.train_injection import EXTRA_TRAIN, embed_windows, load_attacks, load_benign, load_other_benign, prf, split_of

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass(frozen=True)
class _Event:
    """What the detector reads of an event (detectors.base.EventLike)."""

    event_id: str
    prompt: str
    context: list[str]
    model: str = "bench"
    model_version: str = "v1"
    route: str | None = None
    response: str = ""
    samples: tuple[str, ...] = ()

    @property
    def prompt_text(self) -> str:
        return self.prompt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    attacks = load_attacks(args.data)
    benign = load_benign(args.data)
    # Of the other sources the head trains on (a 60 % hash split of each), only the report split counts here.
    other = {k: [t for t in v if k not in EXTRA_TRAIN or split_of(t) == "report"] for k, v in load_other_benign(args.data).items()}
    detectors = {
        "rules+classifier": InjectionDetector(),  # the shipped default: the static screen first
        "  without screen": InjectionDetector(screen=False),
        "rules only": InjectionDetector(classifier=False),
    }
    detectors["rules+classifier"].warm_up()
    print(f"thresholds: rules+classifier {detectors['rules+classifier'].threshold}, rules only {detectors['rules only'].threshold}")

    service = detectors["rules+classifier"].embeddings
    assert service is not None
    # Texts/s of the whole detector, encoding included (CPU here), screened and not, on 64 texts of the report
    # split (half of them long jailbreaks, which the screen passes on) and on 64 benign report prompts.
    attacks_r = [a["text"] for a in attacks if split_of(a["text"]) == "report"]
    benign_r = [t for t in benign["wildguard"] if split_of(t) == "report"]
    for label, sample in (("half jailbreaks", attacks_r[:32] + benign_r[:32]), ("benign only", benign_r[32:96])):
        rates = {}
        for name in ("rules+classifier", "  without screen"):
            service.clear_cache()
            t0 = time.perf_counter()
            detectors[name].score_many(sample)
            rates[name] = len(sample) / (time.perf_counter() - t0)
        print(
            f"with encoding, 64 report texts ({label}): screened {rates['rules+classifier']:.1f} texts/s, "
            f"without the screen {rates['  without screen']:.1f} (x{rates['rules+classifier'] / rates['  without screen']:.2f})"
        )

    # The training script's embeddings (bench/.cache: the same lists of texts, so its cache answers).
    full_other = load_other_benign(args.data)
    vectors: dict[str, np.ndarray] = {}
    for texts in ([a["text"] for a in attacks] + benign["notinject"] + benign["wildguard"], *full_other.values()):
        for t, vs in zip(texts, embed_windows(texts, service)):
            vectors.update(zip(windows(t) or [""], vs))

    def run(det: InjectionDetector, texts: list[str]) -> tuple[np.ndarray, float]:
        """Flags and texts/s; the classifier's rate excludes encoding (the line above has it)."""
        with service.batch([]) as s:
            s._batch_cache.update(vectors)  # type: ignore[union-attr]
            t0 = time.perf_counter()
            flagged = np.array([r.flagged for r in det.score_many(texts)], dtype=bool)
            return flagged, len(texts) / max(1e-9, time.perf_counter() - t0)

    report_tp: dict[str, int] = {}
    print(f"\n{'split':<34}{'detector':<18}{'n':>6}{'prec':>7}{'recall':>8}{'F1':>7}{'texts/s':>9}")
    for split in ("tune", "report"):
        atk = [a for a in attacks if split_of(a["text"]) == split]
        ben = [t for ts in benign.values() for t in ts if split_of(t) == split]
        texts = [a["text"] for a in atk] + ben
        labels = np.array([1] * len(atk) + [0] * len(ben))
        for name, det in detectors.items():
            flagged, rate = run(det, texts)
            m = prf(flagged, labels)
            label = f"{split} ({'threshold chosen here' if split == 'tune' else 'held out'})"
            print(f"{label:<34}{name:<18}{len(texts):>6}{m['precision']:>7.3f}{m['recall']:>8.3f}{m['f1']:>7.3f}{rate:>9.0f}")
            if split == "report":
                for field in ("platform", "community"):
                    groups: dict[str, list[bool]] = defaultdict(list)
                    for a, f in zip(atk, flagged[: len(atk)]):
                        groups[a[field]].append(bool(f))
                    print(
                        f"{'':<34}{'':<18}recall by {field}: "
                        + ", ".join(
                            f"{g} {np.mean(v):.2f} ({len(v)})" for g, v in sorted(groups.items(), key=lambda kv: -len(kv[1])) if len(v) >= 5
                        )
                    )
                report_tp[name] = int(flagged[: len(atk)].sum())

    print(f"\n{'benign set':<34}{'detector':<18}{'n':>6}{'FPR':>7}{'prec+atk':>9}{'texts/s':>9}")
    sets = {
        "NotInject (all; 60 % trained on)": benign["notinject"],
        "NotInject report split": [t for t in benign["notinject"] if split_of(t) == "report"],
        "WildGuard-benign report split": [t for t in benign["wildguard"] if split_of(t) == "report"],
        **{f"{k} ({'report split' if k in EXTRA_TRAIN else 'never trained on'})": v for k, v in other.items() if k != "brown_paragraphs"},
    }
    for set_name, texts in sets.items():
        for name, det in detectors.items():
            flagged, rate = run(det, texts)
            fp = int(flagged.sum())
            tp = report_tp[name]
            print(f"{set_name:<34}{name:<18}{len(texts):>6}{fp / max(1, len(texts)):>7.3f}{tp / max(1, tp + fp):>9.3f}{rate:>9.0f}")
    # Indirect injection: Brown paragraphs as the context documents of RAG events.
    docs = other["brown_paragraphs"]
    for name, det in detectors.items():
        events = [_Event(f"doc{i}", "Summarise the documents.", docs[i : i + 4]) for i in range(0, len(docs), 4)]
        with service.batch([]) as s:
            s._batch_cache.update(vectors)  # type: ignore[union-attr]
            t0 = time.perf_counter()
            findings = [f for e in events for f in det.score_batch([e]) if f.kind == "indirect_injection"]
            rate = len(docs) / max(1e-9, time.perf_counter() - t0)
        flagged_docs = sum(len(f.details["flagged_documents"]) for f in findings)
        print(f"{'Brown paragraphs (report) as docs':<34}{name:<18}{len(docs):>6}{flagged_docs / len(docs):>7.3f}{'':>9}{rate:>9.0f}")


if __name__ == "__main__":
    main()
