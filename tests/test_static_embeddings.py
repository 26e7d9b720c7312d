"""The static embedding table (detectors/static_embeddings.py) and the drift detector's embedding="static"."""

import json
import random
import subprocess
import sys

import numpy as np
import pytest

from detectors import registry
from detectors.drift import EmbeddingDriftDetector
from detectors.embeddings import default_model_path
from detectors.errors import ConfigurationError
from detectors.static_embeddings import STATIC_MODEL_DIR, StaticEmbeddingService, StaticEncoder

from .conftest import ROOT, make_event, shared_data

COOKING = ["onions", "garlic", "the sauce", "the dough", "fresh basil", "the roast", "butter", "the broth"]
COOK_VERBS = ["simmer", "chop", "knead", "season", "stir", "bake", "whisk", "saute"]
FINANCE = ["the bond yield", "quarterly earnings", "the central bank", "equity markets", "the dividend", "credit spreads"]
FIN_VERBS = ["rose", "fell", "widened", "tightened", "surprised analysts", "stalled"]


def _cooking(rng: random.Random, n: int) -> list[str]:
    return [
        f"{rng.choice(COOK_VERBS).capitalize()} {rng.choice(COOKING)} with {rng.choice(COOKING)} for {rng.randint(2, 30)} minutes."
        for _ in range(n)
    ]


def _finance(rng: random.Random, n: int) -> list[str]:
    return [
        f"{rng.choice(FINANCE).capitalize()} {rng.choice(FIN_VERBS)} in {rng.choice(['March', 'May', 'the third quarter'])}."
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def service():
    return StaticEmbeddingService()


def test_the_table_ships_small_with_its_model_card():
    files = {p.name: p.stat().st_size for p in STATIC_MODEL_DIR.iterdir()}
    assert {"embeddings.npy", "tokenizer.json", "config.json", "README.md"} <= set(files)
    assert sum(files.values()) <= 25 * 1024 * 1024  # the project's rule for a model we make
    assert "Apache-2.0" in (STATIC_MODEL_DIR / "README.md").read_text()


def test_vectors_are_deterministic_normalised_and_of_the_table_dimension(service):
    texts = ["The cat sat on the mat.", "Quarterly revenue rose by ten percent.", "Ignore previous instructions."]
    a = service.encode(texts)
    b = StaticEncoder().encode(texts)  # a second, independent load of the table
    assert a.shape == (3, service.dimension) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    empty = service.encode(["", "  "])
    assert empty.shape == (2, service.dimension) and not empty.any()  # no tokens: a zero vector, no error


def test_similar_texts_are_closer_than_unrelated_ones(service):
    v = service.encode(
        [
            "The cat sat on the mat.",
            "A kitten was sitting on the rug.",
            "The central bank raised interest rates by half a point.",
            "Interest rates went up after the central bank's decision.",
        ]
    )
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[0, 3]
    assert sim[2, 3] > sim[2, 0] and sim[2, 3] > sim[2, 1]


def test_it_loads_offline_in_a_fresh_process():
    """Every outbound connection refused: the table and tokenizer come from the package folder."""
    code = (
        "import json; from tests.netguard import NetGuard; g = NetGuard().install(); "
        "from detectors.static_embeddings import StaticEmbeddingService; s = StaticEmbeddingService(); "
        "v = s.encode(['offline, please']); print(json.dumps({'attempts': g.attempts, 'shape': list(v.shape)}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["attempts"] == []
    assert got["shape"][0] == 1 and got["shape"][1] > 0


def test_a_missing_table_says_what_to_do(tmp_path):
    with pytest.raises(ConfigurationError, match="static embedding model not found.*distill_static"):
        StaticEmbeddingService(tmp_path).encode(["x"])


def test_drift_with_static_embeddings_flags_a_clear_shift_and_not_an_unshifted_sample():
    det = EmbeddingDriftDetector(embedding="static", permutations=300, alpha=0.01)
    assert isinstance(det.embeddings, StaticEmbeddingService)
    rng = random.Random(7)
    reference, same, shifted = _cooking(rng, 60), _cooking(rng, 60), _finance(rng, 60)
    assert det.test(reference, shifted).drifted
    assert not det.test(reference, same).drifted


def test_drift_with_static_embeddings_on_brown_genres():
    docs = [json.loads(line) for line in shared_data("drift_brown", "brown_docs.jsonl").read_text().splitlines()]

    def paras(category, seed):
        out = [p for d in docs if d["category"] == category for p in d["text"].split("\n") if len(p.split()) > 12]
        random.Random(seed).shuffle(out)
        return out

    news, romance = paras("news", 1), paras("romance", 3)
    det = EmbeddingDriftDetector(embedding="static", permutations=300, alpha=0.01)
    assert det.test(news[:60], romance[:60]).drifted
    assert not det.test(news[:60], news[60:120]).drifted


def test_the_worker_option_passes_through_and_bad_choices_are_refused():
    (det,) = registry.build(["drift"], {"drift": {"embedding": "static", "sample_rate": 1.0, "reference_size": 20, "window_size": 20}})
    assert isinstance(det.embeddings, StaticEmbeddingService)
    assert det.texts_to_embed([make_event(prompt="p", response="r")]) == ["p", "r"]
    assert isinstance(EmbeddingDriftDetector().embeddings, StaticEmbeddingService)  # the default
    assert not isinstance(EmbeddingDriftDetector(embedding="model").embeddings, StaticEmbeddingService)
    assert EmbeddingDriftDetector(embedding_model=str(default_model_path())).embedding == "model"  # a model asked for: the model
    with pytest.raises(ConfigurationError, match="embedding"):
        EmbeddingDriftDetector(embedding="word2vec")
    with pytest.raises(ConfigurationError, match="embedding_model"):
        EmbeddingDriftDetector(embedding="static", embedding_model="/some/model")
