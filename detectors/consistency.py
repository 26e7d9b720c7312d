"""Self-consistency (hallucination): a response checked against other samples of its prompt.

SelfCheckGPT's setting: a sentence the model states consistently across stochastic samples
is probably grounded; one the samples do not support is probably made up. Methods:

* ``embedding``: each response sentence against the sentences of every sample with
  the shared sentence-embedding model; support from a sample = the best cosine similarity;
  sentence score = 1 - mean support (SelfCheckGPT's BERTScore variant, with one encoder pass
  for the whole micro-batch);
* ``unigram`` (the default: best and ~1,000x faster here, see ``bench/bench_consistency.py``):
  SelfCheckGPT's n-gram variant (a unigram model of the samples and the
  response, add-one smoothed; sentence score = the highest negative log-probability of its
  tokens, squashed to 0..1); no model at all;
* ``combined``: the mean of the two (each is 0..1, higher = less supported);
* ``nli``: with a local NLI cross-encoder (``nli_model`` = a path): the mean probability
  that a sample contradicts the sentence, SelfCheckGPT's strongest non-LLM method.

Cross-traffic consistency (:class:`CrossTrafficConsistency`): no extra model calls; recent
events of the same model version whose prompts are near-identical (embedding cosine) are
compared, and responses that disagree with their neighbours are flagged.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .base import Detector, EventLike, Finding, Severity
from .contracts import KeepsWindows, NeedsEmbeddings
from .embeddings import UsesEmbeddings
from .errors import ConfigurationError

METHODS = ("embedding", "unigram", "combined", "nli")
# Event-level thresholds. unigram: on the 60 WikiBio passages, a mean score >= 0.95 flagged
# passages that annotators found at least half inaccurate with precision 0.84, recall 0.69.
DEFAULT_THRESHOLDS = {"unigram": 0.95, "embedding": 0.5, "combined": 0.7, "nli": 0.5}
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")
_TOKEN = re.compile(r"\w+", re.UNICODE)


def split_sentences(text: str) -> list[str]:
    """Sentences of a text (a rule-based splitter: end punctuation, then a capital or digit)."""
    parts: list[str] = []
    for paragraph in re.split(r"\n\s*\n|\n", text):
        paragraph = paragraph.strip()
        if paragraph:
            parts.extend(s.strip() for s in _SENTENCE_END.split(paragraph) if s.strip())
    return parts


@dataclass(frozen=True)
class ConsistencyResult:
    score: float  # 0..1, higher = more likely hallucinated
    sentence_scores: list[float]
    sentences: list[str]
    method: str
    n_samples: int


class SelfConsistencyDetector(UsesEmbeddings, Detector, NeedsEmbeddings):
    """Scores each event's response against its ``samples``; flags likely hallucinations."""

    name = "consistency"

    def __init__(
        self,
        method: str = "unigram",
        threshold: float | None = None,
        min_samples: int = 2,
        embedding_model: str | None = None,
        nli_model: str | None = None,
        embeddings=None,
    ):
        if method not in METHODS:
            raise ConfigurationError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
        if method == "nli" and not nli_model:
            raise ConfigurationError("the nli method needs nli_model: a local cross-encoder path")
        self.method = method
        self.threshold = DEFAULT_THRESHOLDS[method] if threshold is None else threshold
        self.min_samples = min_samples
        self._embedding_model = embedding_model
        self._embeddings = embeddings
        self.nli_model = nli_model

    @cached_property
    def _nli(self):
        from .nli import NLIScorer

        if self.nli_model is None:
            raise ConfigurationError("the nli scorer needs nli_model: a local cross-encoder path")
        return NLIScorer(self.nli_model)

    def texts_to_embed(self, events: Sequence[EventLike]) -> list[str]:
        if self.method not in ("embedding", "combined"):
            return []
        out = []
        for e in events:
            if len(e.samples) >= self.min_samples and e.response.strip():
                out.extend(split_sentences(e.response))
                for x in e.samples:
                    out.extend(split_sentences(x) or [x])
        return out

    def warm_up(self) -> None:
        if self.method in ("embedding", "combined"):
            self.embeddings.warm_up()
        if self.method == "nli":
            self._nli.warm_up()

    # -- scoring ---------------------------------------------------------------------------------

    def score(self, sentences: list[str] | str, samples: list[str]) -> ConsistencyResult:
        return self.score_many([sentences], [samples])[0]

    def score_many(self, responses: Sequence[list[str] | str], samples: Sequence[Sequence[str]]) -> list[ConsistencyResult]:
        """Score several responses at once (one encoder pass for all their sentences)."""
        sents = [split_sentences(r) if isinstance(r, str) else list(r) for r in responses]
        if self.method == "unigram":
            per = [_unigram_scores(s, smp) for s, smp in zip(sents, samples)]
        elif self.method == "embedding":
            per = self._embedding_scores(sents, samples)
        elif self.method == "combined":
            emb = self._embedding_scores(sents, samples)
            per = [[(a + b) / 2 for a, b in zip(e, _unigram_scores(s, smp))] for e, s, smp in zip(emb, sents, samples)]
        else:
            per = [self._nli.contradiction_scores(s, smp) for s, smp in zip(sents, samples)]
        return [
            ConsistencyResult(float(np.mean(p)) if p else 0.0, [float(x) for x in p], s, self.method, len(smp))
            for p, s, smp in zip(per, sents, samples)
        ]

    def _embedding_scores(self, sents: Sequence[list[str]], samples: Sequence[Sequence[str]]) -> list[list[float]]:
        sample_sents = [[split_sentences(x) or [x] for x in smp] for smp in samples]
        texts: list[str] = []
        for s, smp in zip(sents, sample_sents):
            texts.extend(s)
            for x in smp:
                texts.extend(x)
        vectors = self.embeddings.encode(texts) if texts else np.zeros((0, 1), dtype=np.float32)
        out, pos = [], 0
        for s, smp in zip(sents, sample_sents):
            r = vectors[pos : pos + len(s)]
            pos += len(s)
            support = np.zeros((len(s), max(1, len(smp))), dtype=np.float32)
            for j, x in enumerate(smp):
                v = vectors[pos : pos + len(x)]
                pos += len(x)
                support[:, j] = (r @ v.T).max(axis=1) if len(x) and len(s) else 0.0
            scores = 1.0 - support.mean(axis=1) if smp else np.ones(len(s))
            out.append(np.clip(scores, 0.0, 1.0).tolist())
        return out

    # -- the detector hook -------------------------------------------------------------------------

    def score_batch(self, events: Sequence[EventLike]) -> list[Finding]:
        checked = [e for e in events if len(e.samples) >= self.min_samples and e.response.strip()]
        if not checked:
            return []
        results = self.score_many([e.response for e in checked], [list(e.samples) for e in checked])
        findings = []
        for event, r in zip(checked, results):
            if r.score < self.threshold:
                continue
            worst = int(np.argmax(r.sentence_scores))
            findings.append(
                Finding.for_event(
                    event,
                    detector=self.name,
                    kind="inconsistent_response",
                    severity=Severity.HIGH if r.score >= (1 + self.threshold) / 2 else Severity.MEDIUM,
                    score=r.score,
                    summary=(
                        f"{sum(s >= self.threshold for s in r.sentence_scores)} of {len(r.sentences)} sentences are not "
                        f"supported by {r.n_samples} other samples (score {r.score:.2f}, {r.method})"
                    ),
                    details={
                        "method": r.method,
                        "n_samples": r.n_samples,
                        "sentence_scores": [round(s, 4) for s in r.sentence_scores],
                        "least_supported_sentence": worst,
                    },
                )
            )
        return findings


def _unigram_scores(sentences: Sequence[str], samples: Sequence[str]) -> list[float]:
    """SelfCheckGPT's unigram (max) score: the rarest token's negative log-probability under a
    unigram model of the samples and the response, divided by that of a token seen once (a
    word no sample has), so 1.0 means "this sentence says something no sample says", whatever
    the length of the samples. Max beat the average (NonFact AUC-PR 89.5 vs 85.6, unscaled, on
    the 60 WikiBio passages); the scaling, which makes one threshold fit short chat answers and
    long passages alike, costs some ranking (85.1)."""
    counts: Counter = Counter()
    for text in [*samples, *sentences]:
        counts.update(t.lower() for t in _TOKEN.findall(text))
    total = sum(counts.values())
    vocab = len(counts) + 1
    ceiling = math.log((total + vocab) / 2)  # the NLL of a token seen once: only the response has it
    out = []
    for s in sentences:
        tokens = [t.lower() for t in _TOKEN.findall(s)]
        if not tokens:
            out.append(0.0)
            continue
        nll = max(-math.log((counts[t] + 1) / (total + vocab)) for t in tokens)
        out.append(min(1.0, nll / ceiling))
    return out


class CrossTrafficConsistency(UsesEmbeddings, Detector, NeedsEmbeddings, KeepsWindows):
    """Disagreement among responses to near-identical prompts of the same model version.

    For each event, recent events (a bounded memory per model version) whose prompt embedding
    is within ``prompt_similarity`` cosine are its neighbours; the event is flagged when its
    response's mean cosine to the neighbours' responses is under ``1 - threshold`` and it has at
    least ``min_neighbours``. It needs no extra model calls: the traffic samples itself.
    ``score_batch`` changes the memories under ``_lock``; window_lengths copies them under it.
    """

    name = "cross_consistency"

    def __init__(
        self,
        memory: int = 2000,
        prompt_similarity: float = 0.95,
        threshold: float = 0.5,
        min_neighbours: int = 2,
        embedding_model: str | None = None,
        embeddings=None,
    ):
        self.memory = memory
        self.prompt_similarity = prompt_similarity
        self.threshold = threshold
        self.min_neighbours = min_neighbours
        self._embedding_model = embedding_model
        self._embeddings = embeddings
        self._mem: dict[tuple[str, str], deque] = {}
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        self.embeddings.warm_up()

    def texts_to_embed(self, events: Sequence[EventLike]) -> list[str]:
        return [e.prompt_text for e in events] + [e.response for e in events]

    def score_batch(self, events: Sequence[EventLike]) -> list[Finding]:
        if not events:
            return []
        vectors = self.embeddings.encode(self.texts_to_embed(events))
        prompts, responses = vectors[: len(events)], vectors[len(events) :]
        findings = []
        for i, e in enumerate(events):
            key = (e.model, e.model_version)
            with self._lock:
                mem = self._mem.setdefault(key, deque(maxlen=self.memory))
            if mem:
                p = np.stack([m[0] for m in mem])
                near = np.flatnonzero(p @ prompts[i] >= self.prompt_similarity)
                if len(near) >= self.min_neighbours:
                    r = np.stack([mem[j][1] for j in near])
                    agreement = float((r @ responses[i]).mean())
                    disagreement = 1.0 - agreement
                    if disagreement >= self.threshold:
                        findings.append(
                            Finding.for_event(
                                e,
                                detector=self.name,
                                kind="disagrees_with_traffic",
                                severity=Severity.MEDIUM,
                                score=disagreement,
                                summary=(
                                    f"The response disagrees with {len(near)} responses to near-identical prompts "
                                    f"(mean similarity {agreement:.2f})"
                                ),
                                details={"neighbours": int(len(near)), "mean_similarity": round(agreement, 4)},
                            )
                        )
            with self._lock:
                mem.append((prompts[i], responses[i]))
        return findings

    def window_bounds(self) -> dict[str, int]:
        return {"memory": self.memory}

    def window_lengths(self) -> dict[tuple[str, ...], int]:
        with self._lock:
            return {("memory", *k): len(m) for k, m in self._mem.items()}
