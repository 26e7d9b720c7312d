"""The wire format of drift samples between workers (the drift topic).

With ``drift`` in publish mode each worker sends, every ``drift_interval_s``, the
reservoir sample of its embeddings per (model, version, field); the worker that owns a key
(the topic is keyed by model|version|field) merges them in a :class:`detectors.drift.DriftMerger`.
Vectors travel as float16, base64 in JSON.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DriftSample:
    model: str
    model_version: str
    field: str
    producer: str
    interval: int
    count: int
    vectors: np.ndarray

    @property
    def key(self) -> bytes:
        return f"{self.model}|{self.model_version}|{self.field}".encode()


def encode(sample: DriftSample) -> bytes:
    return json.dumps(
        {
            "model": sample.model,
            "model_version": sample.model_version,
            "field": sample.field,
            "producer": sample.producer,
            "interval": sample.interval,
            "count": sample.count,
            "shape": list(sample.vectors.shape),
            "data": base64.b64encode(sample.vectors.astype(np.float16).tobytes()).decode(),
        }
    ).encode()


def decode(value: bytes) -> DriftSample:
    """Raises ValueError (or KeyError/TypeError) on a malformed message."""
    m = json.loads(value)
    vectors = np.frombuffer(base64.b64decode(m["data"]), dtype=np.float16).astype(np.float32).reshape(m["shape"])
    return DriftSample(m["model"], m["model_version"], m["field"], m["producer"], int(m["interval"]), int(m["count"]), vectors)
