"""The injection head retrained on the static embeddings (issue 16, report only: the shipped head is untouched).

Runs ``detectors.training.train_injection`` unchanged (same data, same hash splits, C and threshold chosen on
the tune split, seed 13) with every window embedded by the static table instead of all-MiniLM-L6-v2, writes
the head to a temporary file, and prints its evaluation beside the one stored in the shipped head
(``detectors/data/injection_head.json``, trained on MiniLM by the same script).

    .venv/bin/python bench/bench_injection_static.py [--out /tmp/injection_head_static.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from functools import partial
from pathlib import Path

from detectors.injection import HEAD_FILE, InjectionDetector
from detectors.static_embeddings import StaticEmbeddingService
from detectors.training import train_injection
from detectors.training.train_injection_screen import static_windows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/injection_head_static.json"))
    args = ap.parse_args()
    static = StaticEmbeddingService()

    train_injection.embed_windows = lambda texts, service=None: static_windows(list(texts))  # every window on the static table
    train_injection.InjectionDetector = partial(InjectionDetector, embeddings=static)  # its closing sanity check
    sys.argv = ["train_injection", "--out", str(args.out)]
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        train_injection.main()
    print(log.getvalue().splitlines()[-1])  # the sanity check: the detector on static vectors reproduces training

    shipped = json.loads(HEAD_FILE.read_text())["evaluation"]
    new = json.loads(args.out.read_text())["evaluation"]
    print(f"\n{'report split (never trained or tuned on)':<44}{'MiniLM (shipped)':>18}{'static':>10}")
    rows = [
        ("C (tune AUC)", shipped["C"], new["C"]),
        ("threshold (tune F0.5)", shipped["threshold_tuned_f0.5"]["combined"], new["threshold_tuned_f0.5"]["combined"]),
        ("classifier AUC", shipped["report_split"]["classifier_auc"], new["report_split"]["classifier_auc"]),
    ]
    for m in ("precision", "recall", "f1"):
        rows.append((f"rules+classifier {m}", shipped["report_split"]["combined"][m], new["report_split"]["combined"][m]))
    for k in shipped["other_benign"]:
        rows.append(
            (
                f"FPR {k} ({shipped['other_benign'][k]['rows']})",
                shipped["other_benign"][k]["fpr_combined"],
                new["other_benign"][k]["fpr_combined"],
            )
        )
    for k, v in shipped["cross_source"].items():
        for m in ("recall_combined_at_threshold", "fpr_combined_at_threshold"):
            if m in v:
                rows.append((f"{k}: {m.split('_')[0]}", v[m], new["cross_source"][k][m]))
    for name, a, b in rows:
        print(f"{name:<44}{a:>18}{b:>10}")


if __name__ == "__main__":
    main()
