"""NLI for self-consistency: does a sample contradict a sentence? (SelfCheckGPT's NLI variant)

Takes any local cross-encoder NLI model path (sentence-transformers ``CrossEncoder`` or a
Hugging Face sequence-classification checkpoint whose labels name ``contradiction`` and
``entailment``). Nothing is downloaded. Score per (sentence, sample):
P(contradiction) / (P(contradiction) + P(entailment)), averaged over the samples.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .embeddings import pick_device
from .errors import ConfigurationError
from .offline import apply_offline_defaults


class NLIScorer:
    def __init__(self, model_path: str, device: str | None = None, batch_size: int = 32):
        if not Path(model_path).exists():
            raise ConfigurationError(f"NLI model path {model_path!r} does not exist (models are never downloaded)")
        self.model_path = model_path
        self._device = device
        self.batch_size = batch_size
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                apply_offline_defaults()
                from sentence_transformers import CrossEncoder

                device = pick_device(self._device)
                model = CrossEncoder(self.model_path, device=device, local_files_only=True)
                labels = {v.lower(): int(k) for k, v in model.config.id2label.items()}
                if "contradiction" not in labels or "entailment" not in labels:
                    raise ConfigurationError(f"{self.model_path}: labels {sorted(labels)} lack contradiction/entailment")
                self._contra, self._entail = labels["contradiction"], labels["entailment"]
                self._model = model
            return self._model

    def warm_up(self) -> None:
        self._load()

    def contradiction_scores(self, sentences: Sequence[str], samples: Sequence[str]) -> list[float]:
        if not sentences or not samples:
            return [1.0 if not samples else 0.0 for _ in sentences]
        model = self._load()
        pairs = [(sample, sentence) for sentence in sentences for sample in samples]
        logits = np.asarray(model.predict(pairs, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False))
        logits = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        c, e = probs[:, self._contra], probs[:, self._entail]
        per_pair = c / np.maximum(c + e, 1e-9)
        return per_pair.reshape(len(sentences), len(samples)).mean(axis=1).tolist()
