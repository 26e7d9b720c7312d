"""Cheap text descriptors of a response: refusals, empty answers, sentiment.

Runs on every event in microseconds; it also keeps the pipeline exercised end to end
before the model-backed detectors are configured.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache

from .base import Detector, EventLike, Finding, Severity
from .literals import LiteralScreen
from .textcache import HashedTextCache

# Phrasings that open or carry a refusal in English chat models' answers.
_REFUSAL_PATTERNS = [
    r"\bI(?:'m| am) (?:sorry|afraid),? (?:but )?I (?:can(?:'|no)t|cannot|won't|am not able to|am unable to)\b",
    r"\bI(?:'m| am) (?:not able|unable) to (?:help|assist|comply|provide|do that)\b",
    r"\bI (?:can(?:'|no)t|cannot|won't) (?:help|assist|comply|provide|do that|answer)\b",
    r"\bas an AI(?: language model)?,? I (?:can(?:'|no)t|cannot|don't|do not)\b",
    r"\bI must (?:decline|refuse)\b",
    r"\bthat request (?:goes against|violates) (?:my|our) (?:guidelines|policies|policy)\b",
]
_REFUSAL_RE = re.compile("|".join(f"(?:{p})" for p in _REFUSAL_PATTERNS), re.IGNORECASE)
# A refusal is said early; a long helpful answer quoting "I can't" later is not one.
_REFUSAL_WINDOW = 240
# Most answers hold none of the words every refusal needs ("sorry", "unable", "as an AI"...): the screen skips the
# pattern there, and only where it cannot match (detectors.literals). Three detectors ask about each response
# (descriptors, descriptor drift, and bias where the prompt names a group).
_REFUSAL_SCREEN = LiteralScreen([_REFUSAL_RE])


@cache
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


# VADER is pure Python, about 0.17 ms a response: the costliest step of descriptor drift, and bias asks for the same
# response's score again (descriptor drift scores the first 2,000 characters: the same text up to that length). A
# bounded cache keyed by a keyed hash of the text (detectors.textcache) answers a repeated answer (a canned refusal,
# a templated reply) and the second caller.
SENTIMENT_CACHE_ENTRIES = 10_000
_sentiments: HashedTextCache[float] = HashedTextCache(SENTIMENT_CACHE_ENTRIES)


def sentiment(text: str) -> float:
    """VADER compound score in [-1, 1] (loaded on first use; repeated texts answered from a bounded cache)."""
    return _sentiments.get(text, lambda: float(_vader().polarity_scores(text)["compound"]))


def is_refusal(text: str) -> bool:
    """True when the response refuses the request."""
    window = text[:_REFUSAL_WINDOW].replace("\u2019", "'")
    return _REFUSAL_SCREEN.allowed(window)[0] and _REFUSAL_RE.search(window) is not None


class ResponseDescriptorDetector(Detector):
    """Flags refusals (low) and empty responses to non-empty prompts (medium)."""

    name = "descriptors"

    def score_batch(self, events: Sequence[EventLike]) -> list[Finding]:
        findings: list[Finding] = []
        for event in events:
            response = event.response.strip()
            if not response:
                if event.prompt_text.strip():
                    findings.append(
                        Finding.for_event(
                            event,
                            detector=self.name,
                            kind="empty_response",
                            severity=Severity.MEDIUM,
                            score=1.0,
                            summary="The model returned an empty response to a non-empty prompt.",
                        )
                    )
                continue
            if is_refusal(response):
                findings.append(
                    Finding.for_event(
                        event,
                        detector=self.name,
                        kind="refusal",
                        severity=Severity.LOW,
                        score=1.0,
                        summary="The model refused the request.",
                        details={"response_chars": len(response)},
                    )
                )
        return findings
