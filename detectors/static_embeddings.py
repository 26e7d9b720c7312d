"""Static sentence embeddings: a token -> vector table distilled from all-MiniLM-L6-v2, no transformer.

A text's vector is the mean of its tokens' rows (the model's WordPiece tokenizer, no special
tokens, unknown tokens dropped, at most 512 tokens), L2-normalised: a table lookup, no forward
pass. The table ships in the package (``detectors/models/static-minilm-l6``, made by
``detectors/training/distill_static.py`` with model2vec; its README.md is the model card) and is
read with numpy and tokenizers only, so model2vec is not a run-time dependency.

An option of the drift detector (``EmbeddingDriftDetector(embedding="static")``), not a
replacement of the default model: see the model card for what it keeps and what it loses.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .embeddings import EmbeddingService
from .errors import ConfigurationError

STATIC_MODEL_DIR = Path(__file__).with_name("models") / "static-minilm-l6"
STATIC_MODEL = "static"  # the name of the shipped table, wherever an embedding choice is given

_shared: dict[str, StaticEmbeddingService] = {}
_shared_lock = threading.Lock()


class StaticEncoder:
    """Mean of token vectors from ``embeddings.npy`` (float16, or int8 with per-dimension scales
    in ``config.json``), tokenised by the folder's ``tokenizer.json``; rows L2-normalised."""

    def __init__(self, model_dir: str | Path = STATIC_MODEL_DIR):
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        table_file, tokenizer_file = model_dir / "embeddings.npy", model_dir / "tokenizer.json"
        if not table_file.exists() or not tokenizer_file.exists():
            raise ConfigurationError(
                f"static embedding model not found in {model_dir} (embeddings.npy and tokenizer.json): "
                "reinstall streamwarden, or make it with `python -m detectors.training.distill_static`"
            )
        config_file = model_dir / "config.json"
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
        table = np.load(table_file, allow_pickle=False)
        if table.dtype == np.int8:
            table = table.astype(np.float32) * np.asarray(config["scale"], dtype=np.float32)
        self.table = np.ascontiguousarray(table, dtype=np.float32)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(int(config.get("max_tokens", 512)))
        self.unk_id = self.tokenizer.token_to_id(config.get("unk_token", "[UNK]"))
        self.dimension = int(self.table.shape[1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        if self.unk_id is not None:
            ids = [i[i != self.unk_id] for i in ids]
        lengths = np.array([len(i) for i in ids])
        flat = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        # Sum each text's rows in one pass: reduceat over the concatenated rows (empty texts stay zero).
        out = np.zeros((len(ids), self.dimension), dtype=np.float32)
        present = lengths > 0
        if present.any():
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[present]
            out[present] = np.add.reduceat(self.table[flat], starts, axis=0) / lengths[present, None]
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class StaticEmbeddingService(EmbeddingService):
    """The :class:`EmbeddingService` interface (batch cache, LRU across batches) on a static table."""

    def __init__(self, model_dir: str | Path = STATIC_MODEL_DIR, cache_entries: int = 10_000):
        self.model_dir = Path(model_dir)
        super().__init__(model=None, device="cpu", backend="auto", cache_entries=cache_entries)
        self.model_name = str(self.model_dir)

    @classmethod
    def shared(cls, model: str | None = None, device: str | None = None) -> StaticEmbeddingService:
        """The one static service of this process for ``model`` (a folder; the shipped table by default)."""
        key = str(model or STATIC_MODEL_DIR)
        with _shared_lock:
            service = _shared.get(key)
            if service is None:
                service = _shared[key] = cls(key)
            return service

    @property
    def backend(self) -> str:
        return "static"

    def _load(self):
        with self._lock:
            if self._model is None:
                self._model = StaticEncoder(self.model_dir)
            return self._model

    @property
    def dimension(self) -> int:
        return self._load().dimension

    def _forward(self, texts: list[str]) -> np.ndarray:
        self.forward_passes += 1
        self.texts_encoded += len(texts)
        return self._load().encode(texts)
