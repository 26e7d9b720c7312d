"""Grounding (RAG): is each sentence of the answer supported by the event's ``context`` documents?

For every response sentence that makes a claim (questions and sentences of fewer than
``min_words`` words are left out), the detector finds the document chunk that supports it
best:

* ``nli`` (the default): the probability that the chunk *entails* the sentence, from the
  NLI model we train and ship (or any local cross-encoder, ``nli_model``). Documents longer
  than the model's window are split into overlapping chunks of ``chunk_words`` words;
* ``lexical`` (the fallback: no model, or events the NLI budget does not admit): the share of
  the sentence's content words (numbers included) that the chunk contains.

The NLI stage is rationed: ``nli_share`` of the events (by event id), at most ``nli_time_share``
of the worker's time (0.25 by default: seconds of NLI per second, measured on the calls, so that the
bound holds on any machine and under any load; ``None``: no bound), and optionally at most
``nli_pairs_per_second`` (chunk, sentence) pairs per second. What the ration leaves goes to the lexical check, and
``streamwarden_nli_stage_events{detector, outcome}`` counts both. A sentence that a chunk states
word for word (case and spacing aside) is supported without asking the model: it costs no pair,
and an event whose every sentence is quoted so (``outcome="quoted"``) spends none of the budget.

A sentence's score is the probability that nothing supports it (1 - the best support). The
event's ``score`` is the highest sentence score (a continuous figure that ranks events), and
``unsupported_share`` the share of sentences at or over the threshold. The finding names
the unsupported sentences, masked (PII and secrets replaced) and cut to 160 characters, and
the document that came closest to supporting each. Evaluation on labelled claim/evidence
pairs (VitaminC, FEVER): ``bench/bench_grounding.py``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from .base import Detector, EventLike, Finding, Severity
from .consistency import split_sentences
from .contracts import ExposesGauges, Gauge, LeavesUnjudged
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .pii import PIILeakDetector

METHODS = ("nli", "lexical")
# Chosen on the VitaminC validation split (premise-hash 10-13, never trained on) as the best
# F0.5 for "not supported" (precision counts twice: a monitor's false alarms cost more than a
# miss; there, nli: precision 0.86, recall 0.48); reported on the test split and on FEVER by
# bench/bench_grounding.py.
DEFAULT_THRESHOLDS = {"nli": 0.69, "lexical": 0.31}
_WORD = re.compile(r"\w+", re.UNICODE)
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "their",
        "they",
        "them",
        "he",
        "she",
        "his",
        "her",
        "we",
        "our",
        "you",
        "your",
        "i",
        "me",
        "my",
        "not",
        "no",
        "so",
        "than",
        "then",
        "also",
        "which",
        "who",
        "whom",
        "whose",
        "what",
        "when",
        "where",
        "why",
        "how",
        "all",
        "any",
        "each",
        "some",
        "such",
        "can",
        "could",
        "would",
        "should",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "do",
        "does",
        "did",
        "has",
        "have",
        "had",
        "into",
        "over",
        "under",
        "about",
        "after",
        "before",
        "between",
        "during",
        "up",
        "down",
        "out",
        "off",
        "very",
        "just",
        "only",
        "more",
        "most",
        "other",
    ]
)


@dataclass(frozen=True)
class GroundingResult:
    score: float  # 0..1, higher = less supported: the highest sentence score
    sentence_scores: list[float]  # per checked sentence: P(no document supports it)
    sentences: list[str]  # the checked sentences (claims)
    best_document: list[int]  # per sentence: the index of the context document that came closest
    unsupported_share: float  # share of sentences at or over the threshold
    method: str  # nli or lexical


class GroundingDetector(Detector, ExposesGauges, LeavesUnjudged):
    """Flags responses whose sentences the event's context documents do not support."""

    name = "grounding"

    def __init__(
        self,
        method: str = "nli",
        threshold: float | None = None,
        nli_model: str | None = None,
        chunk_words: int = 160,
        chunk_overlap: int = 40,
        min_words: int = 4,
        max_sentences: int = 24,
        max_chunks: int = 12,
        nli_share: float = 1.0,
        nli_pairs_per_second: float | None = None,
        nli_time_share: float | None = 0.25,
    ):
        from .nli import NLIRation, resolve_model

        if method not in METHODS:
            raise ConfigurationError(f"unknown grounding method {method!r}; one of {', '.join(METHODS)}")
        if not 0 <= chunk_overlap < chunk_words:
            raise ConfigurationError("chunk_overlap must be at least 0 and below chunk_words")
        self.method = method
        self.threshold = DEFAULT_THRESHOLDS[method] if threshold is None else threshold
        self.nli_model = str(resolve_model(nli_model)) if method == "nli" else nli_model
        self.chunk_words = chunk_words
        self.chunk_overlap = chunk_overlap
        self.min_words = min_words
        self.max_sentences = max_sentences
        self.max_chunks = max_chunks
        self.ration = NLIRation(nli_share, nli_pairs_per_second, nli_time_share)
        self._count_lock = threading.Lock()
        self._all_quoted = 0

    @cached_property
    def _nli(self):
        from .nli import NLIScorer

        return NLIScorer.shared(self.nli_model)

    def warm_up(self) -> None:
        self._redaction()
        if self.method == "nli":
            self._nli.warm_up()

    def gauges(self) -> list[Gauge]:
        """How many events the NLI stage judged, how many its share or budget left to the lexical check, and how
        many needed no model (``quoted``: a document states every claim word for word)."""
        if self.method != "nli":
            return []
        with self._count_lock:
            quoted = self._all_quoted
        return [*self.ration.gauges(self.name), Gauge("nli_stage_events", {"detector": self.name, "outcome": "quoted"}, float(quoted))]

    # -- pieces ------------------------------------------------------------------------------------

    def claims(self, response: str) -> list[str]:
        """The sentences to check: not questions, at least ``min_words`` words; at most ``max_sentences``."""
        out = [s for s in split_sentences(response) if not s.rstrip().endswith("?") and len(_WORD.findall(s)) >= self.min_words]
        return out[: self.max_sentences]

    def chunks(self, context: Sequence[str]) -> list[tuple[int, str]]:
        """(document index, chunk text): overlapping windows of ``chunk_words`` words; at most ``max_chunks``."""
        out: list[tuple[int, str]] = []
        step = self.chunk_words - self.chunk_overlap
        for d, doc in enumerate(context):
            words = doc.split()
            if not words:
                continue
            for start in range(0, max(1, len(words) - self.chunk_overlap), step):
                out.append((d, " ".join(words[start : start + self.chunk_words])))
                if start + self.chunk_words >= len(words):
                    break
        return out[: self.max_chunks]

    # -- scoring -----------------------------------------------------------------------------------

    def score(self, response: str, context: Sequence[str]) -> GroundingResult:
        return self.score_many([response], [context])[0]

    def score_many(
        self, responses: Sequence[str], contexts: Sequence[Sequence[str]], use_nli: Sequence[bool] | None = None
    ) -> list[GroundingResult]:
        """Several responses at once: every (chunk, sentence) pair of those the NLI stage
        admits goes through the model in one batched call; the others are judged lexically."""
        return self._score([self.claims(r) for r in responses], [self.chunks(c) for c in contexts], use_nli)

    @staticmethod
    def quoted(claims: Sequence[str], chunks: Sequence[tuple[int, str]]) -> list[int]:
        """For each claim, the first chunk that states it word for word (case and spacing aside), else -1.
        A document that says the sentence supports it: the NLI stage needs no pair for that claim."""
        norm = [_squash(text) for _, text in chunks]
        out = []
        for s in claims:
            q = _squash(s)
            hits = [j for j, c in enumerate(norm) if q and q in c]  # a substring test first: most claims stop here
            if hits:  # then word boundaries, on the few chunks that contain it
                pattern = re.compile(r"(?<!\w)" + re.escape(q) + r"(?!\w)")
                hits = [j for j in hits if pattern.search(norm[j])]
            out.append(hits[0] if hits else -1)
        return out

    def _score(
        self,
        claims: list[list[str]],
        chunks: list[list[tuple[int, str]]],
        use_nli: Sequence[bool] | None,
        quoted: list[list[int]] | None = None,
    ) -> list[GroundingResult]:
        nli_on = [self.method == "nli"] * len(claims) if use_nli is None else [self.method == "nli" and u for u in use_nli]
        if quoted is None:
            quoted = [self.quoted(cl, ch) if on else [] for cl, ch, on in zip(claims, chunks, nli_on)]
        premises: list[str] = []
        hypotheses: list[str] = []
        for i, (cl, ch) in enumerate(zip(claims, chunks)):
            if nli_on[i]:
                for k, s in enumerate(cl):
                    if quoted[i][k] >= 0:
                        continue
                    for _, text in ch:
                        premises.append(text)
                        hypotheses.append(s)
        entail = np.zeros(0, dtype=np.float32)
        if premises:
            from .nli import ENTAILMENT

            t0 = time.perf_counter()
            entail = self._nli.probabilities(premises, hypotheses)[:, ENTAILMENT]
            self.ration.spent(time.perf_counter() - t0, len(premises))
        pos = 0
        out = []
        for i, (cl, ch) in enumerate(zip(claims, chunks)):
            if not cl or not ch:
                support = np.zeros((len(cl), max(1, len(ch))), dtype=np.float32)
                method = "nli" if nli_on[i] else "lexical"
            elif nli_on[i]:
                support = np.zeros((len(cl), len(ch)), dtype=np.float32)
                for k in range(len(cl)):
                    if quoted[i][k] >= 0:
                        support[k, quoted[i][k]] = 1.0
                    else:
                        support[k] = entail[pos : pos + len(ch)]
                        pos += len(ch)
                method = "nli"
            else:
                support = np.array([[_coverage(s, text) for _, text in ch] for s in cl], dtype=np.float32)
                method = "lexical"
            best = support.argmax(axis=1) if len(cl) else np.zeros(0, dtype=int)
            scores = [float(1.0 - support[k, best[k]]) for k in range(len(cl))]
            threshold = self.threshold if method == self.method else DEFAULT_THRESHOLDS[method]
            out.append(
                GroundingResult(
                    score=max(scores, default=0.0),
                    sentence_scores=scores,
                    sentences=cl,
                    best_document=[ch[int(b)][0] if ch else -1 for b in best],
                    unsupported_share=float(np.mean([s >= threshold for s in scores])) if scores else 0.0,
                    method=method,
                )
            )
        return out

    # -- the detector hook -------------------------------------------------------------------------

    @staticmethod
    def _checkable(event: EventLike) -> bool:
        return bool(event.response.strip()) and any(d.strip() for d in event.context)

    def unjudged(self, events: Sequence[EventLike]) -> set[str]:
        """The events with no context documents (or no response): nothing to ground them in. So the grounding-rate
        rule is a share of the RAG answers, whatever share of the traffic carries context."""
        return {e.event_id for e in events if not self._checkable(e)}

    def score_batch(self, events: Sequence[EventLike]) -> list[Finding]:
        checked = [e for e in events if self._checkable(e)]
        if not checked:
            return []
        claims = [self.claims(e.response) for e in checked]  # split once: the ration's cost estimate and the scoring share them
        chunks = [self.chunks(e.context) for e in checked]
        use_nli = quoted = None
        if self.method == "nli":
            quoted = [self.quoted(cl, ch) for cl, ch in zip(claims, chunks)]
            use_nli = []
            for e, cl, ch, q in zip(checked, claims, chunks, quoted):
                pairs = sum(j < 0 for j in q) * len(ch)
                if pairs == 0 and cl:  # every claim stated word for word by a document: nothing for the model to do
                    with self._count_lock:
                        self._all_quoted += 1
                    use_nli.append(True)
                else:
                    use_nli.append(self.ration.admit(e.event_id, pairs))
        results = self._score(claims, chunks, use_nli, quoted)
        findings = []
        for event, r in zip(checked, results):
            threshold = self.threshold if r.method == self.method else DEFAULT_THRESHOLDS[r.method]
            if r.score < threshold:
                continue
            unsupported = [k for k, s in enumerate(r.sentence_scores) if s >= threshold]
            findings.append(
                Finding.for_event(
                    event,
                    detector=self.name,
                    kind="ungrounded_response",
                    severity=Severity.HIGH if r.unsupported_share >= 0.5 else Severity.MEDIUM,
                    score=r.score,
                    summary=(
                        f"{len(unsupported)} of {len(r.sentences)} sentences are not supported by the "
                        f"{len(event.context)} context documents (score {r.score:.2f}, {r.method})"
                    ),
                    details={
                        "method": r.method,
                        "unsupported_share": round(r.unsupported_share, 4),
                        "sentence_scores": [round(s, 4) for s in r.sentence_scores],
                        "unsupported": [
                            {
                                "sentence": k,
                                "text": self._masked(r.sentences[k]),
                                "closest_document": r.best_document[k],
                                "score": round(r.sentence_scores[k], 4),
                            }
                            for k in unsupported[:5]
                        ],
                    },
                )
            )
        return findings

    def _masked(self, sentence: str) -> str:
        """The sentence with PII and secrets masked (rule: findings carry masked values only), cut to 160 characters."""
        text = self._redaction().redact(sentence)
        return text if len(text) <= 160 else text[:159] + "…"

    @staticmethod
    def _redaction() -> PIILeakDetector:
        """The process's PII recognizers that mask excerpts (:func:`detectors.pii.shared_redactor`)."""
        from .pii import shared_redactor

        return shared_redactor()


def _squash(text: str) -> str:
    """Lower case, runs of white space as one space, no space at either end."""
    return " ".join(text.lower().split())


def _content(text: str) -> set[str]:
    return {w for w in (t.lower() for t in _WORD.findall(text)) if w not in _STOP}


def _coverage(sentence: str, chunk: str) -> float:
    """Share of the sentence's content words that the chunk contains (1.0 for a sentence without any)."""
    words = _content(sentence)
    return len(words & _content(chunk)) / len(words) if words else 1.0
