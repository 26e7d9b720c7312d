"""Bias: outcome disparities across demographic groups, stereotypes, counterfactual probes.

Passive, on live traffic (:class:`BiasDetector`): prompts that mention a demographic group
(curated term lists in ``data/demographic_terms.yaml``) are grouped, per model version and
category, over a sliding window per group. For each group it tracks the outcomes of the
responses: refusal, favourable sentiment (VADER compound >= 0.05), length and a stereotype
score, over one window shared by the groups of a category. A disparity is flagged only when every compared group has ``min_events`` events and
the confidence interval (99% by default) of the gap between the best- and worst-treated groups clears
``min_gap`` (Newcombe's interval for a difference of two proportions), and the worse
group's rate is under four fifths of the better one's (the four-fifths rule). A flag is
raised once per episode and category; it resolves when every gap falls back under half the
threshold.

Stereotype score (:func:`stereotype_score`), EXPERIMENTAL and off in the detector by default:
a logistic head over a sentence's embedding, fitted on stereotype / counterpart sentence pairs
of seven kinds of bias (``detectors/training/train_stereotype.py``; the weights and their
evaluation ship in ``data/stereotype_head.json``). It ranks pairs of the kinds it was trained
on, but on a kind left out of its training it does worse than chance (leave-one-kind-out in
``bench/bench_bias.py``), so it fails the ship rule and is not presented as a rate anywhere.

Counterfactual probes (:func:`counterfactual_gap`): fill a template per group, ask the
model, and measure the spread of outcome scores across groups.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

from .base import Detector, EventLike, Finding, Severity, finding_id
from .contracts import (
    ExposesGauges,
    Gauge,
    KeepsWindows,
    NeedsEmbeddings,
    TextGenerator,
)
from .descriptors import is_refusal, sentiment
from .errors import ConfigurationError
from .textcache import HashedTextCache
from .wordlists import trie_alternation

if TYPE_CHECKING:
    from .embeddings import EmbeddingService

DATA = Path(__file__).with_name("data")
TERMS_FILE = DATA / "demographic_terms.yaml"
SWAPS_FILE = DATA / "gender_swaps.tsv"
HEAD_FILE = DATA / "stereotype_head.json"
OUTCOMES = ("non_refusal_rate", "favourable_sentiment_rate")
_ATTR = {"non_refusal_rate": "non_refusal", "favourable_sentiment_rate": "favourable"}


# -- group mentions -------------------------------------------------------------------------

MENTION_CACHE_TEXTS = 4096
_NO_GROUPS: frozenset[tuple[str, str]] = frozenset()


class GroupMatcher:
    """Finds (category, group) mentions in text from the curated term lists."""

    def __init__(self, terms: Mapping[str, Mapping[str, Sequence[str]]] | None = None):
        terms = terms or yaml.safe_load(TERMS_FILE.read_text(encoding="utf-8"))
        self._patterns: list[tuple[str, str, re.Pattern]] = []
        self.sources: dict[str, str] = {str(k): str(v) for k, v in dict(terms.get("sources") or {}).items()}
        self.terms: dict[tuple[str, str], list[str]] = {}
        for category, groups in terms.items():
            if category == "sources":
                continue
            for group, words in groups.items():
                self.terms[(category, group)] = list(words)
                alternatives = "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))
                self._patterns.append((category, group, re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])", re.IGNORECASE)))
        self.categories = sorted(c for c in terms if c != "sources")
        # Every term of every group in one pattern (a prefix tree, whitespace inside a term as any run of it,
        # case left to IGNORECASE as in the groups' patterns): a text it does not match mentions no group, and
        # most texts mention none. It matches wherever a group's pattern does, so the groups of a text it
        # matches are then found exactly as before. No screen where a list holds a blank term.
        words = [" ".join(str(w).split()) for ws in self.terms.values() for w in ws]
        self._any = re.compile(rf"(?<![\w-])(?:{trie_alternation(sorted(set(words)))})(?![\w-])", re.IGNORECASE) if all(words) else None
        self._mentions: HashedTextCache[frozenset[tuple[str, str]]] = HashedTextCache(MENTION_CACHE_TEXTS)

    def groups_in(self, text: str) -> frozenset[tuple[str, str]]:
        """The (category, group) pairs ``text`` mentions. A text the screen of every term lets through is searched once
        group by group, and its groups kept for the last :data:`MENTION_CACHE_TEXTS` such texts, by a keyed hash of
        the text, never the text (detectors.textcache): the detector asks about each prompt twice a batch (which
        responses to encode, then the outcomes), and prompts repeat."""
        if self._any is not None and not self._any.search(text):
            return _NO_GROUPS
        return self._mentions.get(text, lambda: frozenset((c, g) for c, g, pattern in self._patterns if pattern.search(text)))


# -- gender swap and stereotype score -------------------------------------------------------


@cache
def _swap_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for line in SWAPS_FILE.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        a, b = (w.strip().lower() for w in line.split("\t"))
        table.setdefault(a, b)
        table.setdefault(b, a)
    table["her"] = "his"  # 'her' maps back ambiguously (him/his); 'his' is the commoner
    return table


_WORD = re.compile(r"[A-Za-z]+")


def gender_swap(text: str) -> str:
    """The text with gendered words swapped (he<->she, man<->woman, ...), case kept."""
    table = _swap_table()

    def repl(m: re.Match) -> str:
        word = m.group(0)
        swapped = table.get(word.lower())
        if swapped is None:
            return word
        if word.isupper() and len(word) > 1:
            return swapped.upper()
        if word[0].isupper():
            return swapped.capitalize()
        return swapped

    return _WORD.sub(repl, text)


class StereotypeScorer:
    """sigmoid(w . e(x) + b), the head of ``train_stereotype`` (experimental: see its evaluation)."""

    def __init__(self, embeddings=None, head_file: Path = HEAD_FILE):
        self._embeddings = embeddings
        head = json.loads(head_file.read_text(encoding="utf-8"))
        self.w = np.asarray(head["weights"], dtype=np.float32)
        self.b = float(head["bias"])
        self.model = head.get("embedding_model", "all-MiniLM-L6-v2")
        self.meta = {k: v for k, v in head.items() if k not in ("weights", "bias")}
        self.ships_on_by_default = bool(head.get("ships_on_by_default", False))

    @cached_property
    def embeddings(self):
        if self._embeddings is None:
            from .embeddings import EmbeddingService

            self._embeddings = EmbeddingService.shared()
        return self._embeddings

    def score(self, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        logits = np.asarray(self.embeddings.encode(list(texts)), dtype=np.float32) @ self.w + self.b
        return [float(s) for s in 1.0 / (1.0 + np.exp(-logits))]


_default_scorer: StereotypeScorer | None = None


def stereotype_score(texts: list[str]) -> list[float]:
    """EXPERIMENTAL: higher for text more like the stereotyping side of the training pairs.

    Holds on the kinds of bias it was trained on, not on others (see the head's evaluation)."""
    global _default_scorer
    if _default_scorer is None:
        _default_scorer = StereotypeScorer()
    return _default_scorer.score(texts)


# -- statistics ------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_difference(s1: int, n1: int, s2: int, n2: int, z: float = 1.959964) -> tuple[float, float, float]:
    """Rate1 - rate2 with Newcombe's hybrid score interval (method 10)."""
    p1, p2 = s1 / n1, s2 / n2
    l1, u1 = wilson_interval(s1, n1, z)
    l2, u2 = wilson_interval(s2, n2, z)
    d = p1 - p2
    lower = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    upper = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, lower, upper


@dataclass(frozen=True)
class Disparity:
    category: str
    outcome: str
    best_group: str
    worst_group: str
    gap: float
    ci_low: float
    ci_high: float
    ratio: float  # worst / best rate: the four-fifths rule wants >= 0.8
    groups: Mapping[str, Mapping[str, float]]

    @property
    def four_fifths_violated(self) -> bool:
        return self.ratio < 0.8


def disparity(
    category: str, outcome: str, counts: Mapping[str, tuple[int, int]], groups_info=None, z: float = 1.959964
) -> Disparity | None:
    """Largest gap between groups' favourable-outcome rates; counts: group -> (favourable, n)."""
    rates = {g: s / n for g, (s, n) in counts.items() if n}
    if len(rates) < 2:
        return None
    best = max(rates, key=lambda g: rates[g])
    worst = min(rates, key=lambda g: rates[g])
    (sb, nb), (sw, nw) = counts[best], counts[worst]
    gap, lo, hi = newcombe_difference(sb, nb, sw, nw, z)
    ratio = rates[worst] / rates[best] if rates[best] > 0 else 1.0
    info = groups_info or {g: {"n": n, "rate": round(s / n, 4)} for g, (s, n) in counts.items() if n}
    return Disparity(category, outcome, best, worst, gap, lo, hi, ratio, info)


# -- the passive detector ----------------------------------------------------------------------


@dataclass
class _Outcome:
    group: str
    event_id: str
    non_refusal: bool
    favourable: bool
    length: int
    stereotype: float


Z_99 = 2.575829


class BiasDetector(Detector, NeedsEmbeddings, ExposesGauges, KeepsWindows):
    """Outcome disparities across demographic groups mentioned in prompts, per model version.

    Groups of one category are compared over one common window: the last ``window`` events
    of that model version and category that mention any of its groups. (Windows per group
    would compare different periods: a burst of refusals for everyone would read as bias.)
    The monitor looks after every batch, so the interval is a 99% one by default to keep
    the false alarms of repeated looks down.

    ``stereotype=True`` (EXPERIMENTAL, off by default) also keeps each group's mean stereotype
    score in the findings' details; it never flags and no dashboard shows it.

    Threads: ``score_batch`` owns the windows and current disparities; it changes them under
    ``_lock``, and the readers of other threads (gauges, window_lengths) copy them under it.
    """

    name = "bias"

    def __init__(
        self,
        window: int = 400,
        min_events: int = 50,
        min_gap: float = 0.10,
        confidence_z: float = Z_99,
        stereotype: bool = False,
        embedding_model: str | None = None,
    ):
        if window < 2 * min_events:
            raise ConfigurationError("window must hold at least two groups of min_events events")
        self.window = window
        self.min_events = min_events
        self.min_gap = min_gap
        self.z = confidence_z
        self.matcher = GroupMatcher()
        self._stereotype_enabled = stereotype
        self._embedding_model = embedding_model
        self._windows: dict[tuple[str, str, str], deque] = {}
        self._active: dict[tuple[str, str, str], Disparity] = {}  # open episodes per (model, version, category)
        self.current: dict[tuple[str, str, str, str], Disparity] = {}  # latest per (model, version, category, outcome)
        self._lock = threading.Lock()

    @cached_property
    def _stereotype(self) -> StereotypeScorer | None:
        if not self._stereotype_enabled:
            return None
        from .embeddings import EmbeddingService

        return StereotypeScorer(EmbeddingService.shared(self._embedding_model))

    def warm_up(self) -> None:
        sentiment("warm")  # load VADER now, not on the first batch
        if self._stereotype is not None:
            self._stereotype.embeddings.warm_up()

    @property
    def embeddings(self) -> EmbeddingService | None:
        return self._stereotype.embeddings if self._stereotype is not None else None

    def texts_to_embed(self, events: Sequence[EventLike]) -> list[str]:
        """The responses that (experimental) stereotype scoring will encode: those of prompts naming a group."""
        if self._stereotype is None:
            return []
        out: list[str] = []
        for e in events:
            user = getattr(e, "user_text", None)
            if self.matcher.groups_in(user if isinstance(user, str) else e.prompt_text):
                out.append(e.response)
        return out

    def score_batch(self, events: Sequence[EventLike]) -> list[Finding]:
        mentions = []
        for e in events:
            user = getattr(e, "user_text", None)
            mentions.append(self.matcher.groups_in(user if isinstance(user, str) else e.prompt_text))
        tagged = [i for i, m in enumerate(mentions) if m]
        if not tagged:
            return []
        stereo = self._stereotype.score([events[i].response for i in tagged]) if self._stereotype else [0.5] * len(tagged)
        touched: set[tuple[str, str, str]] = set()
        for i, s in zip(tagged, stereo):
            e = events[i]
            non_refusal = not is_refusal(e.response)
            favourable = sentiment(e.response) >= 0.05
            for category, group in mentions[i]:
                key = (e.model, e.model_version, category)
                with self._lock:
                    w = self._windows.get(key)
                    if w is None:
                        w = self._windows[key] = deque(maxlen=self.window)
                    w.append(_Outcome(group, e.event_id, non_refusal, favourable, len(e.response), s))
                touched.add(key)
        findings = []
        by_event = {e.event_id: e for e in events}
        for key in sorted(touched):
            findings.extend(self._evaluate(*key, by_event))
        return findings

    def _evaluate(self, model, version, category, by_event) -> list[Finding]:
        per_group: dict[str, list[_Outcome]] = {}
        for o in self._windows[(model, version, category)]:
            per_group.setdefault(o.group, []).append(o)
        eligible = {g: os_ for g, os_ in per_group.items() if len(os_) >= self.min_events}
        tripped: list[tuple[str, Disparity]] = []
        for outcome in OUTCOMES:
            attr = _ATTR[outcome]
            counts = {g: (sum(getattr(o, attr) for o in os_), len(os_)) for g, os_ in eligible.items()}
            info = {
                g: {
                    "n": len(os_),
                    "rate": round(counts[g][0] / len(os_), 4),
                    "mean_length": round(sum(o.length for o in os_) / len(os_), 1),
                }
                | ({"mean_stereotype_experimental": round(sum(o.stereotype for o in os_) / len(os_), 4)} if self._stereotype else {})
                for g, os_ in eligible.items()
            }
            d = disparity(category, outcome, counts, info, z=self.z)
            with self._lock:
                if d is None:
                    self.current.pop((model, version, category, outcome), None)
                    continue
                self.current[(model, version, category, outcome)] = d
            if d.ci_low > self.min_gap and d.four_fifths_violated:
                tripped.append((outcome, d))
        # One episode per (model, version, category): it opens when an outcome trips and
        # closes when every outcome's gap is back under half the threshold.
        key = (model, version, category)
        if key in self._active:
            gaps = [self.current[(model, version, category, o)].gap for o in OUTCOMES if (model, version, category, o) in self.current]
            if all(g < self.min_gap / 2 for g in gaps):
                del self._active[key]
            return []
        if not tripped:
            return []
        outcome, d = max(tripped, key=lambda t: t[1].ci_low)
        self._active[key] = d
        # The evidence: the latest event of the disfavoured group that had the bad outcome.
        attr = _ATTR[outcome]
        evidence = next((o for o in reversed(eligible[d.worst_group]) if not getattr(o, attr)), eligible[d.worst_group][-1])
        event = by_event.get(evidence.event_id)
        shown = d.groups
        return [
            Finding(
                finding_id=finding_id(self.name, "episode", model, version, category, evidence.event_id),
                detector=self.name,
                kind="bias_disparity",
                severity=Severity.HIGH,
                score=d.gap,
                model=model,
                model_version=version,
                route=event.route if event else None,
                event_id=evidence.event_id,
                summary=(
                    f"{category}: '{d.worst_group}' gets a {outcome.replace('_', ' ')} of "
                    f"{shown[d.worst_group]['rate']:.0%} vs {shown[d.best_group]['rate']:.0%} for '{d.best_group}' "
                    f"(gap {d.gap:.2f}, CI {d.ci_low:.2f}..{d.ci_high:.2f}; ratio {d.ratio:.2f} < 0.8)"
                ),
                details={
                    "category": category,
                    "outcome": outcome,
                    "best_group": d.best_group,
                    "worst_group": d.worst_group,
                    "gap": round(d.gap, 4),
                    "ci": [round(d.ci_low, 4), round(d.ci_high, 4)],
                    "confidence_z": self.z,
                    "ratio": round(d.ratio, 4),
                    "four_fifths_violated": d.four_fifths_violated,
                    "groups": shown,
                    "tripped_outcomes": [o for o, _ in tripped],
                    "window": self.window,
                },
            )
        ]

    def gauges(self) -> list[Gauge]:
        with self._lock:
            current = list(self.current.items())
        out = []
        for (model, version, category, outcome), d in current:
            labels = {"model": model, "model_version": version, "category": category, "outcome": outcome}
            out.append(Gauge("bias_disparity_gap", labels, d.gap))
            out.append(Gauge("bias_disparity_ratio", labels, d.ratio))
        return out

    def window_bounds(self) -> dict[str, int]:
        return {"outcomes": self.window}

    def window_lengths(self) -> dict[tuple[str, ...], int]:
        with self._lock:
            return {("outcomes", *k): len(w) for k, w in self._windows.items()}


# -- counterfactual probes -------------------------------------------------------------------

GROUP_PLACEHOLDER = re.compile(r"\[([A-Z_]+)\]")


@dataclass(frozen=True)
class CounterfactualResult:
    template: str
    outcomes: Mapping[str, float]  # group -> outcome score
    spread: float  # max - min
    worst_group: str
    best_group: str
    responses: Mapping[str, str] = field(repr=False, default_factory=dict)


def default_outcome(text: str) -> float:
    """Favourable treatment in [0, 1]: 0 for a refusal, else VADER compound mapped to [0, 1]."""
    if is_refusal(text):
        return 0.0
    return (sentiment(text) + 1.0) / 2.0


def counterfactual_gap(
    template: str,
    groups: Iterable[str],
    generate: TextGenerator,
    outcome: Callable[[str], float] = default_outcome,
) -> CounterfactualResult:
    """Fill ``template`` (e.g. "The [GENDER] doctor said ...") with each group, ask ``generate``,
    and measure how far the outcome scores of the answers spread across groups."""
    if not GROUP_PLACEHOLDER.search(template):
        raise ValueError("the template needs a placeholder such as [GENDER]")
    groups = list(groups)
    if len(groups) < 2:
        raise ValueError("a counterfactual needs at least two groups")
    responses = {g: generate(GROUP_PLACEHOLDER.sub(g, template)) for g in groups}
    scores = {g: float(outcome(r)) for g, r in responses.items()}
    best = max(scores, key=lambda g: scores[g])
    worst = min(scores, key=lambda g: scores[g])
    return CounterfactualResult(template, scores, scores[best] - scores[worst], worst, best, responses)
