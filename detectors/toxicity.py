"""Toxicity of responses: a logistic head over sentence embeddings, and a small rule layer for categories.

``score(text) -> ToxicityResult``: the probability that a text is toxic (0..1), from a logistic
regression over the default sentence embedding (all-MiniLM-L6-v2), fitted here by
``detectors/training/train_toxicity.py`` on Davidson et al.'s tweets, HateCheck, ToxiGen's
curated statements and identity-neutral bias_madlibs sentences (the weights, threshold and
evaluation ship in ``data/toxicity_head.json``). The heads read the text with its identity terms
masked (:func:`mask_identities`: the demographic lists' terms become "person", at training and
scoring alike, where the head file says ``identity_mask``), so that a sentence's score does not
depend on which group it names. Long texts are scored in chunks of about ``chunk_chars``
characters (at most ``max_chunks``); a text's score is its worst chunk's.

Categories, each only where there is evidence:

* ``identity_hate``: a second head of the same kind (hate towards a group: Davidson's hate
  speech, HateCheck's hateful cases, ToxiGen's hate) at its own threshold;
* ``insult``, ``threat``, ``sexual``, ``self_harm``: the rule layer (:data:`RULES`), short
  patterns whose hits are reported as spans with their words masked (``k*** y**``).

The detector (:class:`ToxicityDetector`, registered as ``toxicity``) scores each event's response,
and the prompt of each response it flags (one embedding per event in the batch's shared forward
pass; the few prompts after). A flagged response is a finding: ``toxic_response``
(HIGH, threat and self-harm included: one finding must not trip the kill switch) when the prompt was clean: the model
turned toxic on its own, the signal a rollout gate wants; ``toxic_response_prompted``
(MEDIUM) when the prompt was toxic too. Findings carry scores, categories and masked
spans, never the text.
"""

from __future__ import annotations

import html
import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from .base import Detector, EventLike, Finding, Severity
from .contracts import ExposesGauges, Gauge, LeavesUnjudged, NeedsEmbeddings
from .errors import ConfigurationError
from .literals import LiteralScreen
from .ration import Ration
from .wordlists import trie_alternation

if TYPE_CHECKING:
    from .embeddings import EmbeddingService

HEAD_FILE = Path(__file__).with_name("data") / "toxicity_head.json"
TERMS_FILE = Path(__file__).with_name("data") / "demographic_terms.yaml"
CATEGORIES = ("insult", "threat", "identity_hate", "sexual", "self_harm")

_MENTION = re.compile(r"@\w+")
_URL = re.compile(r"https?://\S+|www\.\S+")
_RT = re.compile(r"^(?:\s*(?:RT|rt)\b:?\s*)+")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """What the heads read: HTML entities decoded, @mentions and URLs replaced by placeholders,
    a leading retweet mark dropped, whitespace collapsed (training and scoring alike)."""
    text = html.unescape(text)
    text = _URL.sub("http", text)
    text = _MENTION.sub("@user", text)
    text = _RT.sub("", text)
    return _SPACE.sub(" ", text).strip()


# -- identity-term masking ---------------------------------------------------------------------------

IDENTITY_PLACEHOLDER = "person"
# Words of the demographic lists that name one person or a relation, not a group: left alone (masking pronouns
# would strip every sentence of its subject).
NOT_MASKED = frozenset(
    [
        "she",
        "her",
        "hers",
        "herself",
        "he",
        "him",
        "his",
        "himself",
        "mother",
        "mothers",
        "father",
        "fathers",
        "wife",
        "wives",
        "husband",
        "husbands",
        "daughter",
        "daughters",
        "son",
        "sons",
        "sister",
        "sisters",
        "brother",
        "brothers",
        "girlfriend",
        "girlfriends",
        "boyfriend",
        "boyfriends",
    ]
)
# A person noun right after a term goes with it: "gay people" -> "person", not "person people".
_PERSON_NOUN = r"(?:\s+(?:person|people|persons|man|woman|men|women|folks?|guys?|kids?))?"


def identity_terms(terms_file: Path = TERMS_FILE) -> list[str]:
    """The terms masked: every term of the project's demographic lists (``data/demographic_terms.yaml``, all nine
    categories) but pronouns and kinship words (:data:`NOT_MASKED`), lower-cased, longest first."""
    data = yaml.safe_load(terms_file.read_text(encoding="utf-8"))
    terms = {str(t).lower() for category, groups in data.items() if category != "sources" for words in groups.values() for t in words}
    return sorted(terms - NOT_MASKED, key=lambda t: (-len(t), t))


def identity_pattern(terms: Sequence[str]) -> re.Pattern[str]:
    """One regex for all the terms: whole words only (no letter, digit or hyphen either side), any case, runs of
    whitespace inside a phrase matched as one space, the longest term that ends at a word boundary."""
    words = sorted({" ".join(t.lower().split()) for t in terms if t.strip()})
    return re.compile(rf"(?<![\w-])(?:{trie_alternation(words)}){_PERSON_NOUN}(?![\w-])", re.IGNORECASE)


@cache
def _default_identity_pattern() -> re.Pattern[str]:
    return identity_pattern(identity_terms())


def mask_identities(text: str, pattern: re.Pattern[str] | None = None, placeholder: str = IDENTITY_PLACEHOLDER) -> str:
    """``text`` with every identity term (and a person noun after it) replaced by ``placeholder``: what the heads
    read when the head file says ``identity_mask`` (training and scoring alike), so that a sentence's score cannot
    depend on which group it names."""
    return (pattern or _default_identity_pattern()).sub(placeholder, text)


# -- the rule layer ------------------------------------------------------------------------------

_VIOLENT = (
    r"(?:kill|murder|shoot|stab|hang|lynch|burn|beat|rape|slaughter|butcher|strangle|execute|exterminate|hurt|gas|bomb|behead|torture|slit)"
)
_VIOLENT_PP = r"(?:killed|murdered|shot|stabbed|hanged|hung|lynched|burned|burnt|beaten|raped|slaughtered|strangled|executed|exterminated|gassed|bombed|beheaded|tortured|wiped out|put down)"
_I = re.IGNORECASE
_INSULT_NOUN = r"(?:idiots?|morons?|imbeciles?|losers?|clowns?|fools?|dumbass(?:es)?|retards?|jerks?|bitch(?:es)?|assholes?|arseholes?|cunts?|twats?|dickheads?|scum|trash|garbage|halfwits?|nitwits?|dimwits?|numbskulls?|cretins?)"
_INSULT_ADJ = r"(?:stupid|dumb|idiotic|moronic|pathetic|worthless|useless|brainless|clueless|incompetent|retarded)"
_FILL = (  # what may stand between "you" and the insult: articles, intensifiers, insulting adjectives
    r"(?:a|an|such\s+an?|so|just|clearly|really|obviously|fucking|freaking|complete|total|absolute|utter|little|too"
    r"|stupid|dumb|useless|worthless|pathetic|brainless|clueless|incompetent|ignorant|lazy|fat|ugly)"
)

# category -> (rule name, pattern, flags alone?): a rule that flags alone marks a text toxic whatever the head
# says (direct threats, urging self-harm); the others only name the category of a text the head flagged.
_RULES: dict[str, list[tuple[str, re.Pattern[str], bool]]] = {
    "threat": [
        (
            "intent_to_harm",
            re.compile(
                rf"\b(?:i|we)\s*(?:'ll|'m going to|'re going to|will|am going to|are going to|gonna|want to|wanna|would love to|shall|intend to|plan to)\s+(?:\w+\s+){{0,2}}?{_VIOLENT}\w*\b",
                _I,
            ),
            True,
        ),
        (
            "should_be_harmed",
            re.compile(rf"\b(?:should|must|need to|needs to|ought to|deserves? to)\s+(?:all\s+)?(?:be\s+)?{_VIOLENT_PP}\b", _I),
            True,
        ),
        (
            "should_die",
            re.compile(r"\b(?:should|must|deserves? to|ought to|need to|needs to)\s+(?:all\s+|just\s+)?(?:go\s+)?die\b", _I),
            True,
        ),
        ("call_to_harm", re.compile(rf"\b{_VIOLENT}\s+(?:them|all\s+of\s+them|all|every|those|these)\b", _I), False),
        ("harm_you", re.compile(rf"\b{_VIOLENT}\s+(?:you|u|ya)\b", _I), False),
    ],
    "self_harm": [
        ("urging_self_harm", re.compile(r"\b(?:kill|hurt|harm|cut)\s+(?:yourself|urself|yourselves|themselves)\b|\bkys\b", _I), True),
        (
            "self_harm_mention",
            re.compile(
                r"\b(?:kill|hurt|harm|cut)\s+myself\b|\bsuicid(?:e|al)\b|\bself[- ]harm\w*|\b(?:end|take)\s+(?:my|your|his|her|their)\s+(?:own\s+)?life\b|\bwant(?:s)?\s+to\s+die\b",
                _I,
            ),
            False,
        ),
    ],
    "sexual": [
        (
            "sexual_term",
            re.compile(
                r"\b(?:porn\w*|blowjobs?|handjobs?|dicks?|cocks?|puss(?:y|ies)|tits|titties|boobs|cum|cumming|jizz|horny|nudes?|orgasm\w*|masturbat\w*|dildos?|sluts?|whores?|hoes?|rap(?:e|ed|es|ing|ist)|sexual favou?rs?)\b",
                _I,
            ),
            False,
        ),
    ],
    "insult": [
        # Insults aimed at the reader ("you worthless moron", "what a stupid question", "any idiot could"):
        # how an assistant turns on its user, which the head (fitted on tweets and statements about
        # groups) scores low when the insult sits inside an otherwise helpful answer. They flag alone.
        # Hits on the shared sets (bench/bench_toxicity.py prints them): 0 of madlibs' 38,282 non-toxic
        # sentences, of 14,345 MNLI premises and of 1,310 PIGuard benign prompts; 0.2% of Davidson's
        # "neither" tweets, mostly insults the annotators let pass ("you're trash").
        ("directed_insult", re.compile(rf"\byou(?:'re|\s+are|\s+r)?\s+(?:{_FILL}\s+){{0,3}}(?:{_INSULT_NOUN}|{_INSULT_ADJ})\b", _I), True),
        ("insulting_question", re.compile(rf"\b(?:what|such)\s+an?\s+{_INSULT_ADJ}\s+question\b", _I), True),
        (
            "any_idiot_could",
            re.compile(
                rf"\b(?:any|only\s+an?|even\s+an?)\s+(?:complete\s+|total\s+|absolute\s+)?{_INSULT_NOUN}\s+(?:could|would|can|knows?|writes?|does)\b",
                _I,
            ),
            True,
        ),
        (
            "insult_term",
            re.compile(
                r"\b(?:idiot\w*|stupid\w*|moron\w*|dumb\w*|retard\w*|imbeciles?|losers?|pathetic|worthless|scum\w*|trash|garbage|bitch\w*|bastards?|assholes?|arseholes?|cunts?|twats?|dickheads?|jerks?|fools?|ugly|disgusting|vermin|cockroach\w*|parasites?|subhuman|savages?|freaks?|fag\w*|dyke\w*|nigg\w*|tranny|trannies|wetbacks?|spics?|kikes?|chinks?|coons?)\b",
                _I,
            ),
            False,
        ),
    ],
}


# Read-only: the literal screen of rule_hits is built from these once, at import.
RULES: Mapping[str, tuple[tuple[str, re.Pattern[str], bool], ...]] = MappingProxyType({c: tuple(r) for c, r in _RULES.items()})


def mask_span(text: str) -> str:
    """Every word's first character kept, the rest starred: ``kill you`` -> ``k*** y**``."""
    return re.sub(r"\w+", lambda m: m.group(0)[0] + "*" * (len(m.group(0)) - 1), text)


@dataclass(frozen=True)
class RuleHit:
    category: str
    rule: str
    start: int
    end: int
    masked: str
    flags_alone: bool

    def as_dict(self) -> dict[str, Any]:
        return {"category": self.category, "rule": self.rule, "span": [self.start, self.end], "masked": self.masked}


def rule_hits(text: str, max_hits: int = 20) -> list[RuleHit]:
    """The rule layer's hits in ``text`` (spans index the text as given), at most ``max_hits``."""
    hits: list[RuleHit] = []
    for (category, rule, pattern, alone), worth in zip(_FLAT_RULES, _SCREEN.allowed(text)):
        if worth:  # False only where the pattern cannot match (detectors.literals)
            for m in pattern.finditer(text):
                hits.append(RuleHit(category, rule, m.start(), m.end(), mask_span(m.group(0)), alone))
                if len(hits) >= max_hits:
                    return hits
    return hits


_FLAT_RULES = tuple((category, rule, pattern, alone) for category, rules in RULES.items() for rule, pattern, alone in rules)
# Which rules can match a text at all: most texts hold none of the words a rule needs, and skip its pattern.
_SCREEN = LiteralScreen([pattern for _c, _r, pattern, _a in _FLAT_RULES])


# -- the heads -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToxicityResult:
    score: float  # 0..1: P(toxic) of the worst chunk, or 1.0 where a rule that flags alone hit
    flagged: bool  # at or over the threshold
    categories: tuple[str, ...]  # among CATEGORIES, each with its evidence
    head_score: float  # the toxicity head alone
    hate_score: float  # the identity-hate head (worst chunk)
    hits: tuple[RuleHit, ...] = ()  # the rule layer's evidence, masked
    chunks: int = 0  # chunks the heads read
    truncated: bool = False  # text beyond max_chunks chunks was left to the rules alone
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


CLEAN = ToxicityResult(0.0, False, (), 0.0, 0.0)


class ToxicityHead:
    """The shipped heads: sigmoid(w . e(x) + b) for toxicity and for identity hate, with their thresholds."""

    def __init__(self, head_file: Path = HEAD_FILE):
        head = json.loads(head_file.read_text(encoding="utf-8"))
        self.w = np.asarray(head["toxic"]["weights"], dtype=np.float32)
        self.b = float(head["toxic"]["bias"])
        self.threshold = float(head["toxic"]["threshold"])
        self.hate_w = np.asarray(head["identity_hate"]["weights"], dtype=np.float32)
        self.hate_b = float(head["identity_hate"]["bias"])
        self.hate_threshold = float(head["identity_hate"]["threshold"])
        self.rules_flag = bool(head.get("rules_flag", True))
        self.identity_mask = bool(head.get("identity_mask", False))  # the heads read mask_identities(normalise(x))
        self.meta = {k: v for k, v in head.items() if k not in ("toxic", "identity_hate")}

    def probabilities(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = np.asarray(vectors, dtype=np.float32)
        return 1.0 / (1.0 + np.exp(-(v @ self.w + self.b))), 1.0 / (1.0 + np.exp(-(v @ self.hate_w + self.hate_b)))


def chunk_text(text: str, chunk_chars: int, max_chunks: int, mask: bool = False) -> tuple[list[str], bool]:
    """The normalised text (identity terms masked if ``mask``) in pieces of about ``chunk_chars`` characters, cut at
    whitespace; at most ``max_chunks``."""
    text = normalise(text)
    if mask:
        text = mask_identities(text)
    if not text:
        return [], False
    chunks: list[str] = []
    start = 0
    while start < len(text) and len(chunks) < max_chunks:
        end = min(len(text), start + chunk_chars)
        if end < len(text):
            cut = text.rfind(" ", start + chunk_chars // 2, end)
            end = cut if cut > start else end
        piece = text[start:end].strip()
        if piece:
            chunks.append(piece)
        start = end
    return chunks, start < len(text)


class ToxicityDetector(Detector, NeedsEmbeddings, ExposesGauges, LeavesUnjudged):
    """Flags toxic responses; scores the prompt too, so that a toxic answer to a clean prompt stands out.

    The embedding pass over responses is the costly stage (about 1 GFLOP per new response with the default
    model: 9-11 ms on 2 CPU cores), so it can be rationed like the NLI stages: ``head_share`` of the events (by
    event id), at most ``head_texts_per_second`` new texts, at most ``head_time_share`` of the wall clock, each
    bucket holding ``head_burst_s`` seconds' worth (a batch above the rate still runs). The worker turns on
    ``head_time_share=0.5`` (``Settings.detector_kwargs``: the model may take half of its wall clock; the
    forward pass has a thread of its own, so the detectors keep the other half and the other core); built
    alone, the detector judges every response. A response the ration refuses is left **unjudged**: no head, no
    rules, no finding, and the worker counts it (``unjudged`` per model version), so that the toxic-rate rule
    divides by the events toxicity judged: under load the rate is that of a fair sample (see :meth:`_plan`),
    not one diluted by the events nobody read.
    """

    name = "toxicity"
    categories = CATEGORIES  # the worker counts findings per category (streamwarden_finding_categories_total)

    def __init__(
        self,
        threshold: float | None = None,
        score_prompts: bool = True,
        rules: bool = True,
        chunk_chars: int = 400,
        max_chunks: int = 8,
        max_rule_chars: int = 100_000,
        embedding_model: str | None = None,
        embeddings: EmbeddingService | None = None,
        head_share: float = 1.0,
        head_texts_per_second: float | None = None,
        head_time_share: float | None = None,
        head_burst_s: float = 4.0,
    ):
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ConfigurationError("threshold must be between 0 and 1")
        if chunk_chars < 50 or max_chunks < 1:
            raise ConfigurationError("chunk_chars must be at least 50 and max_chunks at least 1")
        self._threshold = threshold
        self.score_prompts = score_prompts
        self.rules = rules
        self.chunk_chars = chunk_chars
        self.max_chunks = max_chunks
        self.max_rule_chars = max_rule_chars
        self._embedding_model = embedding_model
        self._embeddings = embeddings
        self._lock = threading.Lock()
        # The chunks of the texts texts_to_embed cut last (the batch's responses), so that scoring the same batch
        # does not normalise and mask them again; a function of the text alone, so never stale.
        self._cut: dict[str, tuple[list[str], bool]] = {}
        self.ration = Ration(
            head_share,
            head_texts_per_second,
            head_time_share,
            prefix="head",
            gauge="toxicity_head_events",
            units_per_second="texts_per_second",
            burst_s=head_burst_s,
            outcomes=("admitted", "skipped_share", "skipped_budget", "free"),
        )
        # The batch texts_to_embed planned (its event ids), the events the head judges in it, and the events the
        # last score_batch left unjudged.
        self._planned: tuple[str, ...] = ()
        self._judged: set[str] = set()
        self._unjudged: set[str] = set()
        self._share = 1.0  # the share of its new responses the ration admitted in the last batch that had any

    @cached_property
    def head(self) -> ToxicityHead:
        return ToxicityHead()

    @property
    def threshold(self) -> float:
        return self.head.threshold if self._threshold is None else self._threshold

    @property
    def embeddings(self) -> EmbeddingService:
        with self._lock:
            if self._embeddings is None:
                from .embeddings import EmbeddingService

                self._embeddings = EmbeddingService.shared(self._embedding_model)
            return self._embeddings

    def warm_up(self) -> None:
        _ = self.head
        self.embeddings.warm_up()

    # -- scoring -----------------------------------------------------------------------------------

    def score(self, text: str) -> ToxicityResult:
        return self.score_many([text])[0]

    def score_many(self, texts: Sequence[str]) -> list[ToxicityResult]:
        """Several texts, every chunk of them encoded in one call."""
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"toxicity scores text, not {type(t).__name__}")
        cut = self._cut
        pieces = [cut.get(t) or self._chunks(t) for t in texts]
        flat = [c for chunks, _ in pieces for c in chunks]
        tox = hate = np.zeros(0, dtype=np.float32)
        if flat:
            tox, hate = self.head.probabilities(self.embeddings.encode(flat))
        out: list[ToxicityResult] = []
        pos = 0
        for text, (chunks, truncated) in zip(texts, pieces):
            n = len(chunks)
            t_score = float(tox[pos : pos + n].max()) if n else 0.0
            h_score = float(hate[pos : pos + n].max()) if n else 0.0
            pos += n
            out.append(self._result(text, t_score, h_score, n, truncated))
        return out

    def _result(self, text: str, head_score: float, hate_score: float, chunks: int, truncated: bool) -> ToxicityResult:
        hits = tuple(rule_hits(text[: self.max_rule_chars])) if self.rules and text else ()
        score = head_score
        if any(h.flags_alone for h in hits) and self.head.rules_flag:
            score = max(score, 1.0)
        flagged = score >= self.threshold
        categories: list[str] = []
        if flagged:
            found = {h.category for h in hits}
            if hate_score >= self.head.hate_threshold:
                found.add("identity_hate")
            categories = [c for c in CATEGORIES if c in found]
        return ToxicityResult(
            score=round(score, 6),
            flagged=flagged,
            categories=tuple(categories),
            head_score=round(head_score, 6),
            hate_score=round(hate_score, 6),
            hits=hits,
            chunks=chunks,
            truncated=truncated,
        )

    # -- the detector hook -------------------------------------------------------------------------

    @staticmethod
    def _prompt(event: EventLike) -> str:
        user = getattr(event, "user_text", None)
        return user if isinstance(user, str) else event.prompt_text

    def _chunks(self, text: str) -> tuple[list[str], bool]:
        return chunk_text(text, self.chunk_chars, self.max_chunks, self.head.identity_mask)

    def _plan(self, events: Sequence[EventLike]) -> None:
        """Cut the batch's responses into chunks and decide which events the head judges.

        ``head_share`` picks events by their id first. The budgets then decide on each event whose response the
        model would have to encode (its uncached chunks, at the seconds per text the embedding service measured),
        taken in an order drawn from the event ids (not the batch's), until the first that the budget refuses: the
        rest of the batch's new responses are refused too, so the judged ones are a prefix of a random order
        (skipping on to the shorter ones that still fit would judge short answers more often than long ones; what
        the budget kept stays in its bucket for the next batch). Length still decides at the cut: the response
        there is refused if it costs more than the bucket has left, where a shorter one would have fit. Every
        other event costs nothing (its vectors cached, its response already paid for in this batch, or empty), but
        is judged with the probability the batch's new responses were admitted with (the last batch's while this
        one has none and the bucket is empty), by an independent draw from its event id. So the judged events stay
        a fair sample: repeated and empty answers are mostly canned or failed ones, and judging every one of them
        while new ones are refused would dilute the rate."""
        cut = {r: self._chunks(r) for r in dict.fromkeys(e.response for e in events)}  # once per distinct response
        if not self.ration.limited:
            judged = {e.event_id for e in events}
        else:
            service = self.embeddings
            if service.seconds_per_text:
                self.ration.seconds_per_pair = service.seconds_per_text
            cost = {r: len(service.uncached(chunks)) if chunks else 0 for r, (chunks, _) in cut.items()}
            judged, paid, free = set(), set(), []
            tried = admitted = 0
            refused = False
            for e in sorted(events, key=lambda e: Ration.uniform(e.event_id, b"order")):
                if not self.ration.chosen(e.event_id):
                    self.ration.count("skipped_share")
                    continue
                r = e.response
                if cost[r] == 0 or r in paid:
                    free.append(e)
                    continue
                tried += 1
                if not refused and self.ration.take(cost[r]):
                    self.ration.count("admitted")
                    admitted += 1
                    paid.add(r)
                    judged.add(e.event_id)
                else:
                    refused = True
                    self.ration.count("skipped_budget")
            if tried:
                share = self._share = admitted / tried
            else:
                share = 1.0 if self.ration.has_room() else self._share
            for e in free:
                if share >= 1.0 or Ration.uniform(e.event_id, b"toxicity") < share:
                    judged.add(e.event_id)
                    self.ration.count("free")
                else:
                    self.ration.count("skipped_budget")
        self._cut, self._judged, self._planned = cut, judged, tuple(e.event_id for e in events)

    def texts_to_embed(self, events: Sequence[EventLike]) -> list[str]:
        # The responses only: a prompt is scored when its response was flagged (rare), in a second,
        # small encode, so that the batch's shared forward pass carries one text per event, not two.
        self._plan(events)
        cut, judged = self._cut, self._judged
        return [c for e in events if e.event_id in judged for c in cut[e.response][0]]

    def unjudged(self, events: Sequence[EventLike]) -> set[str]:
        return {e.event_id for e in events if e.event_id in self._unjudged}

    def gauges(self) -> list[Gauge]:
        """Events so far by what the ration decided (``streamwarden_toxicity_head_events{detector, outcome}``:
        admitted, skipped_share, skipped_budget, and free: judged at no model cost); none when nothing is rationed."""
        return self.ration.gauges(self.name) if self.ration.limited else []

    def score_batch(self, events: Sequence[EventLike]) -> list[Finding]:
        if not events:
            self._unjudged = set()
            return []
        if self._planned != tuple(e.event_id for e in events):  # called without texts_to_embed (no worker)
            self._plan(events)
        judged = [e for e in events if e.event_id in self._judged]
        self._unjudged = {e.event_id for e in events if e.event_id not in self._judged}
        results = self.score_many([e.response for e in judged])
        self._cut, self._judged, self._planned = {}, set(), ()  # the batch's texts are not kept past it
        flagged = [i for i, r in enumerate(results) if r.flagged]
        prompts: dict[int, ToxicityResult] = {}
        if self.score_prompts and flagged:
            prompts = dict(zip(flagged, self.score_many([self._prompt(judged[i]) for i in flagged])))
        findings = []
        for i in flagged:
            event, r = judged[i], results[i]
            p = prompts.get(i)
            prompt_toxic = p.flagged if p is not None else None
            if prompt_toxic:
                kind, severity = "toxic_response_prompted", Severity.MEDIUM
            else:
                kind = "toxic_response"
                # HIGH, never CRITICAL: the policy kills a model on one critical finding, and one
                # response (the threat rules' precision is 0.39 on HateCheck) is no ground for that; the
                # toxic-rate rule rolls a version back on a rate instead.
                severity = Severity.HIGH
            prompt_note = "prompt not scored" if p is None else f"the prompt was {'toxic' if prompt_toxic else 'clean'} ({p.score:.2f})"
            findings.append(
                Finding.for_event(
                    event,
                    detector=self.name,
                    kind=kind,
                    severity=severity,
                    score=r.score,
                    summary=(
                        f"toxic response (score {r.score:.2f}, threshold {self.threshold:.2f}"
                        f"{'; ' + ', '.join(r.categories) if r.categories else ''}); {prompt_note}"
                    ),
                    details={
                        "score": r.score,
                        "head_score": r.head_score,
                        "threshold": self.threshold,
                        "categories": list(r.categories),
                        "identity_hate_score": r.hate_score,
                        "prompt_toxic": prompt_toxic,
                        "prompt_score": p.score if p is not None else None,
                        "prompt_categories": list(p.categories) if p is not None else [],
                        "evidence": [h.as_dict() for h in r.hits[:10]],
                        "chunks": r.chunks,
                        "truncated": r.truncated,
                        "head": self.head.meta.get("trained"),
                    },
                )
            )
        return findings
