"""NLI: does a premise entail, leave open or contradict a hypothesis?

Used by self-consistency (SelfCheckGPT's NLI variant: does a sample support a sentence?)
and by grounding (does a context document support an answer's sentence?).

Two backends, picked by what the path holds; nothing is ever downloaded:

* the model we train and ship (``detectors/models/nli-minilm-l6/``: ``model.onnx`` int8,
  ``tokenizer.json``, ``nli_config.json``; trained by ``detectors/training/train_nli.py``, card
  in its README.md), run by onnxruntime, on CUDA where onnxruntime-gpu offers it;
* any local sentence-transformers ``CrossEncoder`` or Hugging Face sequence-classification
  checkpoint whose labels name ``contradiction`` and ``entailment`` (a larger production model),
  run by torch on CUDA when present.

Pairs are sorted by length and batched, so one call scores a whole micro-batch's pairs with
little padding.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .embeddings import cpu_threads, onnx_session_options, pick_device
from .errors import ConfigurationError
from .offline import apply_offline_defaults
from .ration import Ration

SHIPPED_MODEL = Path(__file__).resolve().parent / "models" / "nli-minilm-l6"
TRAIN_COMMAND = ".venv/bin/python -m detectors.training.train_nli"
ENTAILMENT, NEUTRAL, CONTRADICTION = 0, 1, 2  # the columns of NLIScorer.probabilities

_shared: dict[tuple[str, str | None], NLIScorer] = {}
_shared_lock = threading.Lock()


def resolve_model(model_path: str | None) -> Path:
    """The model directory: the shipped one for None/"default", else the given local path."""
    path = SHIPPED_MODEL if model_path in (None, "", "default") else Path(str(model_path))
    if not path.exists():
        if path == SHIPPED_MODEL:
            raise ConfigurationError(
                f"the shipped NLI model is missing at {path}: train it with `{TRAIN_COMMAND}` "
                "or set nli_model to a local cross-encoder directory (models are never downloaded)"
            )
        raise ConfigurationError(f"NLI model path {str(model_path)!r} does not exist (models are never downloaded)")
    return path


class NLIScorer:
    """3-way NLI probabilities for (premise, hypothesis) pairs. Thread-safe after loading."""

    def __init__(self, model_path: str | None = None, device: str | None = None, batch_size: int = 32, max_length: int = 256):
        self.path = resolve_model(model_path)
        self.model_path = str(self.path)
        self._device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self._lock = threading.Lock()
        self._run = None  # callable(premises, hypotheses) -> probs (n, 3) in our column order
        self.backend = "onnx" if (self.path / "model.onnx").exists() else "torch"

    @classmethod
    def shared(cls, model_path: str | None = None, device: str | None = None) -> NLIScorer:
        """The one scorer of this process for a model (consistency and grounding share it)."""
        key = (str(resolve_model(model_path)), device)
        with _shared_lock:
            scorer = _shared.get(key)
            if scorer is None:
                scorer = _shared[key] = cls(key[0], device)
            return scorer

    # -- loading -----------------------------------------------------------------------------------

    def _load(self):
        with self._lock:
            if self._run is None:
                apply_offline_defaults()
                self._run = self._load_onnx() if self.backend == "onnx" else self._load_torch()
            return self._run

    def _load_onnx(self):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        config = json.loads((self.path / "nli_config.json").read_text()) if (self.path / "nli_config.json").exists() else {}
        labels = [x.lower() for x in config.get("labels", ("entailment", "neutral", "contradiction"))]
        order = _column_order(labels, self.model_path)
        self.max_length = min(self.max_length, int(config.get("max_length", self.max_length)))
        tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        tokenizer.enable_truncation(self.max_length, strategy="only_first")
        tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]") or 0)
        options = onnx_session_options(cpu_threads())  # the worker's share of the cores, as for the embedding model
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if pick_device(self._device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        session = ort.InferenceSession(str(self.path / "model.onnx"), options, providers=providers)
        inputs = {i.name for i in session.get_inputs()}

        def run(premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
            enc = tokenizer.encode_batch(list(zip(premises, hypotheses)))
            feed = {
                "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
            }
            logits = session.run(None, {k: v for k, v in feed.items() if k in inputs})[0]
            return _softmax(logits)[:, order]

        return run

    def _load_torch(self):
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(self.model_path, device=pick_device(self._device), local_files_only=True, max_length=self.max_length)
        labels = [model.config.id2label[i].lower() for i in range(len(model.config.id2label))]
        order = _column_order(labels, self.model_path)

        def run(premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
            logits = model.predict(
                list(zip(premises, hypotheses)), batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
            )
            return _softmax(np.asarray(logits))[:, order]

        return run

    def warm_up(self) -> None:
        self.probabilities(["warm-up"], ["warm-up"])

    # -- scoring -----------------------------------------------------------------------------------

    def probabilities(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        """(n, 3) probabilities: columns ENTAILMENT, NEUTRAL, CONTRADICTION."""
        if len(premises) != len(hypotheses):
            raise ValueError("premises and hypotheses differ in length")
        out = np.zeros((len(premises), 3), dtype=np.float32)
        if not premises:
            return out
        run = self._load()
        order = sorted(range(len(premises)), key=lambda i: len(premises[i]) + len(hypotheses[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = run([premises[i] for i in idx], [hypotheses[i] for i in idx])
        return out

    def unsupported_scores_many(self, sentences: Sequence[Sequence[str]], samples: Sequence[Sequence[Sequence[str]]]) -> list[list[float]]:
        """Self-consistency by entailment, with the samples split into sentences: a sample
        supports a sentence as much as its best-entailing sentence does; a sentence's score is
        1 - the mean support over the samples (1.0 when there are no samples). One batched
        pass over every (sample sentence, response sentence) pair of every response.

        Sentence-level premises, not whole samples: a 6-layer model trained on sentence pairs
        reads a 200-token passage badly (on WikiBio passages 0-11, NonFact AUC-PR 91.2 this
        way against 75.5 with whole samples as premises, bench/bench_consistency.py's protocol)."""
        premises: list[str] = []
        hypotheses: list[str] = []
        for sents, smp in zip(sentences, samples):
            for s in sents:
                for x in smp:
                    premises.extend(x)
                    hypotheses.extend([s] * len(x))
        entail = self.probabilities(premises, hypotheses)[:, ENTAILMENT]
        out, pos = [], 0
        for sents, smp in zip(sentences, samples):
            scores = []
            for _ in sents:
                support = []
                for x in smp:
                    support.append(float(entail[pos : pos + len(x)].max()) if len(x) else 0.0)
                    pos += len(x)
                scores.append(1.0 - float(np.mean(support)) if support else 1.0)
            out.append(scores)
        return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float32)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _column_order(labels: Sequence[str], where: str) -> list[int]:
    index = {name: i for i, name in enumerate(labels)}
    if "contradiction" not in index or "entailment" not in index:
        raise ConfigurationError(f"{where}: labels {sorted(index)} lack contradiction/entailment")
    neutral = index.get("neutral", next((i for i in range(len(labels)) if i not in (index["entailment"], index["contradiction"])), None))
    if neutral is None:
        raise ConfigurationError(f"{where}: a 3-way NLI model is needed, labels are {labels}")
    return [index["entailment"], neutral, index["contradiction"]]


class NLIRation(Ration):
    """The ration of an NLI stage (grounding's, consistency's): units are (premise, hypothesis) pairs, the
    settings ``nli_share``, ``nli_pairs_per_second``, ``nli_time_share``; its counts are the gauge
    ``streamwarden_nli_stage_events{detector, outcome}``."""

    PRIOR_SECONDS_PER_PAIR = 0.01  # the int8 model on one CPU core, about; the first call measures it
