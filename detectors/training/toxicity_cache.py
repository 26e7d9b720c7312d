"""Embeddings of the toxicity examples, kept between runs in a folder (bench/.cache, git-ignored)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from detectors.embeddings import EmbeddingService

CACHE = Path(__file__).resolve().parents[2] / "bench" / ".cache"


def embed_cached(service: EmbeddingService, texts: Sequence[str], name: str, cache: Path | None = CACHE, chunk: int = 512) -> np.ndarray:
    """One row per text (in order); unique texts are encoded once, in chunks saved as they finish."""
    unique = sorted(set(texts))
    if not unique:
        return np.zeros((0, 384), dtype=np.float32)
    digest = hashlib.sha256("\n".join(unique).encode("utf-8")).hexdigest()[:16]
    parts = []
    for start in range(0, len(unique), chunk):
        block = unique[start : start + chunk]
        path = cache / f"toxicity_{name}_{digest}_{start}.npy" if cache else None
        if path is not None and path.exists():
            parts.append(np.load(path))
            continue
        vectors = service.encode(block)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, vectors)
        parts.append(vectors)
    table = np.concatenate(parts)
    index = {t: i for i, t in enumerate(unique)}
    return table[[index[t] for t in texts]]
