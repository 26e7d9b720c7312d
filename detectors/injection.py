"""Prompt injection and jailbreaks: in what the user typed, and (indirect) in the context documents.

Two layers score a text, 0..1:

* **rules** (fast, and they say why): instruction overrides ("ignore all previous instructions"),
  fake role delimiters ("<|im_start|>system"), role-play jailbreaks (DAN, "developer mode", "an AI
  without restrictions"), system-prompt extraction ("print your system prompt", "repeat the words
  above"), directives addressed to an AI inside a document, and markdown/HTML exfiltration links
  (an image whose URL carries data). Encoded payloads are decoded and scanned again: base64, hex,
  rot13, Unicode tag characters and zero-width bit strings; zero-width characters and full-width
  letters are normalised away before every scan. Each rule has a weight; the hits of distinct rules
  combine as a noisy-or, so one borderline phrase scores low and a DAN prompt scores near 1;
* **a classifier**: logistic regression over the default sentence embeddings (all-MiniLM-L6-v2),
  trained by ``detectors/training/train_injection.py`` on in-the-wild jailbreaks against benign
  prompts (``detectors/data/injection_head.json``; see its model card in the README). A text longer
  than the model's window is scored on its head and its tail, the higher wins. A **screen** comes first
  (``screen=True``, the default): a logistic head on the static token table
  (``detectors/data/injection_screen.json``, ``detectors/training/train_injection_screen.py``) reads every
  text, and only a text it scores at or above its gate goes through MiniLM; below it, the screen's score
  stands for the classifier's. The gate was chosen on the tuning split so that the screened detector
  flags every tuning text the unscreened one flags; most benign text never reaches MiniLM.

The text's score is the noisy-or of the two; it is flagged at ``threshold`` (the shipped one was
chosen on a tuning split, see ``bench/bench_injection.py``), or when its rules alone reach
:data:`RULE_FLAG` (the classifier knows jailbreaks only). The ``category`` is the strongest rule
family that fired (or ``classifier``), and the ``kind`` of the finding follows from it and from where
the text was: ``indirect_injection`` for a context document, ``jailbreak`` for role-play and the
classifier (it learnt jailbreaks), ``prompt_injection`` for the rest.

Multi-turn: the user turns of a chat prompt, and the events that share a conversation id
(``conversation_id``, or ``metadata["conversation_id"]``), form a conversation. Its score is the
higher of (a) a recency-weighted noisy-or of its turns' scores (a turn ``k`` turns back counts
``turn_decay**k``) and (b) the score of its last turns joined (an attack split over turns). So turns
that each stay under the threshold but drift towards an attack score higher than any one of them.
Memory is bounded: at most ``max_conversations`` conversations (least recently seen evicted first),
at most ``max_turns`` turns each (the oldest dropped).

Findings carry the category, the rule that fired, the span's offsets and a masked excerpt (PII and
secrets replaced, as the PII detector masks them; cut to 160 characters): never the raw text.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import Detector, EventLike, Finding, Severity
from .contracts import ExposesGauges, Gauge, NeedsEmbeddings
from .embeddings import UsesEmbeddings
from .errors import ConfigurationError
from .literals import LiteralScreen

if TYPE_CHECKING:
    from .embeddings import EmbeddingService
    from .pii import PIILeakDetector

HEAD_FILE = Path(__file__).with_name("data") / "injection_head.json"
SCREEN_FILE = Path(__file__).with_name("data") / "injection_screen.json"
# Chosen on the tuning split (bench/bench_injection.py: the best F0.5, precision counting twice);
# the head file's own "threshold" wins when present.
DEFAULT_THRESHOLD = 0.5
RULES_ONLY_THRESHOLD = 0.5
# With the classifier on, a text is also flagged when its rules alone score this much (one strong rule,
# or several weaker ones): the classifier learnt jailbreaks only, and the combined threshold it was tuned
# at (high: jailbreaks score near 1) would otherwise let a bare "print your system prompt" pass.
RULE_FLAG = 0.75
MAX_SCAN_CHARS = 100_000  # of a longer text, the first and last 50,000 characters are scanned
WINDOW_CHARS = 1_500  # what the classifier reads of a text: its head (and its tail, when longer)
EXCERPT_CHARS = 160

# -- the rules --------------------------------------------------------------------------------------

_GAP = r"(?:[\s,;:'\"`*_-]+\w+){0,4}?[\s,;:'\"`*_-]+"  # up to 4 words between two phrases
_SHORT_GAP = r"(?:[\s,;:'\"`*_-]+\w+){0,2}?[\s,;:'\"`*_-]+"


@dataclass(frozen=True)
class Rule:
    name: str
    family: str  # instruction_override, role_play, prompt_extraction, ai_directive, exfiltration, encoded_payload
    weight: float
    pattern: re.Pattern[str]
    explanation: str


def _rule(name: str, family: str, weight: float, pattern: str, explanation: str, flags: int = re.IGNORECASE) -> Rule:
    return Rule(name, family, weight, re.compile(pattern, flags), explanation)


_OVERRIDE_VERB = r"\b(?:ignore|disregard|forget|override|overrule|bypass|discard|abandon|neglect|skip|drop|erase)\b"
_PRIOR = (
    r"(?:previous|prior|above|earlier|preceding|former|initial|original|old|existing|all|any|every|your|its|the|system|developer|safety)"
)
_DIRECTIVES = (
    r"(?:instructions?|prompts?|rules|directions?|directives?|guidelines|guidance|constraints|programming|polic(?:y|ies)|"
    r"restrictions|commands?|orders|context|training|filters?|safeguards?|limitations)"
)

RULES: tuple[Rule, ...] = (
    # instruction_override
    _rule(
        "ignore_instructions",
        "instruction_override",
        0.9,
        rf"{_OVERRIDE_VERB}{_SHORT_GAP}{_PRIOR}{_SHORT_GAP}{_DIRECTIVES}\b",
        "tells the model to drop its instructions",
    ),
    _rule(
        "ignore_everything",
        "instruction_override",
        0.7,
        rf"{_OVERRIDE_VERB}\s+(?:all|everything)\s+(?:(?:you\s+(?:were|have\s+been)\s+told)|(?:(?:said|written|above|before)\b))",
        "tells the model to forget everything before",
    ),
    _rule(
        "new_instructions",
        "instruction_override",
        0.6,
        r"(?:^|[\n.!:>\]])\s*(?:new|updated|real|actual|true|revised)\s+(?:system\s+)?(?:instructions?|rules|task|directive)s?\s*[:\-]",
        "announces new instructions",
    ),
    _rule(
        "no_longer_bound",
        "instruction_override",
        0.8,
        r"\byou\s+(?:are|'re)\s+(?:no\s+longer|not)\s+(?:bound|restricted|limited|constrained)\s+by\b",
        "tells the model it is no longer bound by its rules",
    ),
    _rule(
        "fake_delimiter",
        "instruction_override",
        0.8,
        r"<\|?(?:im_start|im_end|system|endoftext|eot_id|start_header_id)\|?>|\[/?(?:INST|SYS)\]|<</?SYS>>|"
        r"(?:^|\n)\s*#{2,}\s*(?:new\s+)?(?:system|instructions?)\b|(?:^|\n)\s*(?:end\s+of|</)\s*(?:system\s+prompt|instructions|user\s+input)",
        "fakes a role or prompt delimiter",
    ),
    # role_play (jailbreaks)
    _rule("dan", "role_play", 0.7, r"\bDAN\b", "sets up DAN", flags=0),
    _rule(
        "jailbreak_named",
        "role_play",
        0.8,
        r"\bdo\s+anything\s+now\b|\bjailbr(?:eak|oken)\b(?:\s+(?:mode|version|ai|prompt|response))?",
        "names a jailbreak ('do anything now', 'jailbroken')",
    ),
    _rule(
        "developer_mode",
        "role_play",
        0.7,
        r"\b(?:developer|dev|god|evil|unrestricted|unfiltered|uncensored|chaos|anarchy|opposite|unlocked)\s+mode\b",
        "switches on an unrestricted 'mode'",
    ),
    _rule(
        "unrestricted_ai",
        "role_play",
        0.6,
        r"\b(?:unfiltered|uncensored|unrestricted|amoral|unethical|immoral|unbound|limitless|rogue|evil)\s+"
        r"(?:and\s+\w+\s+)?(?:ai|a\.i\.|assistant|chat\s?bot|bot|model|language\s+model|llm|version|persona|character|entity)\b",
        "describes an AI without restrictions",
    ),
    _rule(
        "no_restrictions",
        "role_play",
        0.45,
        r"\b(?:no|without(?:\s+any)?|free\s+(?:of|from)|not\s+bound\s+by|doesn't\s+have|does\s+not\s+have|has\s+no|zero)\s+"
        r"(?:any\s+)?(?:ethical\s+|moral\s+|content\s+)?(?:restrictions|filters|filtering|limitations|limits|censorship|"
        r"boundaries|guidelines|morals|ethics|rules)\b",
        "asks for answers without restrictions",
    ),
    _rule(
        "never_refuse",
        "role_play",
        0.6,
        r"\b(?:never|cannot|can't|can\s+not|will\s+not|won't|must\s+not|shall\s+not|don't|do\s+not)\s+"
        r"(?:ever\s+)?(?:refuse|decline|say\s+no|reject)\b|\bnever\s+(?:says?|respond\s+with)\s+(?:that\s+)?(?:it|he|she|they|you)\s+can(?:'|no)t\b",
        "forbids the model to refuse",
    ),
    _rule(
        "stay_in_character",
        "role_play",
        0.45,
        r"\b(?:stay|remain|keep)\s+(?:in|into)\s+character\b|\bbreak(?:ing)?\s+character\b",
        "keeps the model in a role-play persona",
    ),
    _rule(
        "content_policy",
        "role_play",
        0.45,
        r"\b(?:openai|anthropic|google|meta)(?:'s)?\s+(?:content\s+)?(?:polic(?:y|ies)|guidelines|rules|restrictions)\b",
        "names the provider's content policy",
    ),
    _rule(
        "pretend_persona",
        "role_play",
        0.45,
        r"\b(?:pretend|act|role-?play|behave|respond|answer)\s+(?:to\s+be\s+|like\s+|as\s+)(?:an?\s+)?(?:\w+\s+){0,2}?"
        r"(?:ai|a\.i\.|chat\s?bot|assistant|model)\s+(?:that|which|who|without|with\s+no)\b",
        "sets up a persona of an AI with other rules",
    ),
    _rule(
        "two_responses",
        "role_play",
        0.6,
        r"\b(?:two|2|both)\s+(?:different\s+)?(?:responses|answers|paragraphs|ways)\b[^.\n]{0,80}?"
        r"\b(?:normal|classic|filtered|standard|gpt|chatgpt)\b[^.\n]{0,80}?\b(?:jailbr\w*|unfiltered|developer|dan|evil|uncensored)\b",
        "asks for a normal and a jailbroken answer side by side",
    ),
    # prompt_extraction
    _rule(
        "reveal_system_prompt",
        "prompt_extraction",
        0.9,
        r"\b(?:reveal|show|print|repeat|output|display|tell|give|leak|dump|write|copy|paste|recite|spell|list|disclose|share|return)\b"
        r"(?:\s+(?:me|us|out|back|verbatim|exactly))*\s+(?:all\s+)?(?:of\s+)?(?:your|the\s+(?:hidden|secret|initial|original|full|exact))\s+"
        r"(?:\w+\s+){0,2}?(?:system\s+(?:prompt|message|instructions?)|(?:initial|original|hidden|secret|pre-?)\s*(?:prompt|instructions?)|"
        r"prompt|instructions?|guidelines|rules\s+you\s+were\s+given)\b",
        "asks the model for its system prompt or hidden instructions",
    ),
    _rule(
        "what_is_your_prompt",
        "prompt_extraction",
        0.8,
        r"\bwhat\s+(?:is|are|was|were)\s+your\s+(?:\w+\s+)?(?:system\s+prompt|system\s+message|initial\s+(?:prompt|instructions)|"
        r"(?:hidden|secret|original)\s+(?:prompt|instructions)|instructions\s+(?:you\s+were\s+given|above))\b",
        "asks what the model's system prompt is",
    ),
    _rule(
        "repeat_above",
        "prompt_extraction",
        0.8,
        r"\b(?:repeat|print|output|copy|write\s+out|echo|translate)\b\s+(?:\w+\s+){0,3}?(?:words|text|everything|all|lines|content|message)\s+"
        r"(?:(?:written\s+|that\s+(?:is|was|were)\s+)?(?:above|before\s+(?:this|that|the)\b)|at\s+the\s+(?:start|beginning)\s+of\s+(?:this|the|our)\s+"
        r"(?:conversation|chat|prompt))|\bstarting\s+(?:with|from)\s+['\"`]you\s+are\b",
        "asks the model to repeat what came before the user's text",
    ),
    # ai_directive (typical of indirect injection: text in a document addressed to the model)
    _rule(
        "addressed_to_ai",
        "ai_directive",
        0.75,
        r"\b(?:note|message|instructions?|attention)\s+(?:to|for)\s+(?:the\s+|any\s+)?(?:ai|a\.i\.|assistant|chat\s?bot|llm|language\s+model|model|gpt)\b|"
        r"\bif\s+you\s+are\s+an?\s+(?:ai|a\.i\.|assistant|chat\s?bot|llm|large\s+language\s+model|language\s+model)\b|"
        r"\b(?:ai|assistant|llm|language\s+model)s?\s+(?:reading|processing|summari[sz]ing|parsing)\s+this\b",
        "addresses the AI reading the text",
    ),
    _rule(
        "instead_do",
        "ai_directive",
        0.5,
        r"\b(?:instead|rather)\s*,?\s+(?:you\s+(?:must|should|will)\s+)?(?:respond|reply|answer|say|output|print|write)\s+(?:only\s+)?(?:with\s+)?['\"`]",
        "dictates the model's answer",
    ),
    # exfiltration
    _rule(
        "markdown_image_exfil",
        "exfiltration",
        0.75,
        r"!\[[^\]\n]{0,200}\]\(\s*<?https?://[^)\s>]{1,500}?[?&][\w.%-]{1,40}=[^)\s]{0,500}\)|"
        r"<img\b[^>]{0,300}?\bsrc\s*=\s*['\"]?https?://[^'\">\s]{1,500}?[?&][\w.%-]{1,40}=",
        "an image link whose URL carries data (markdown/HTML exfiltration)",
    ),
    _rule(
        "send_data_to",
        "exfiltration",
        0.75,
        r"\b(?:send|post|forward|exfiltrate|upload|transmit|leak|email|e-mail)\b\s+(?:\w+\s+){0,4}?"
        r"(?:conversation|chat\s+history|history|messages|data|passwords?|credentials|api\s+keys?|tokens?|secrets?|e-?mails|"
        r"personal\s+(?:data|information)|user\s+(?:data|information))\s+to\s+(?:https?://|www\.|\S+@\S+\.\w+)",
        "tells the model to send data to an outside address",
    ),
    _rule(
        "exfil_placeholder",
        "exfiltration",
        0.7,
        r"https?://[^\s)'\"]{1,300}?[?&][\w.%-]{1,40}=\s*(?:\{\{?|\$\{|\[|<)\s*(?:data|secret|conversation|history|chat|password|"
        r"summary|message|info|user|email|token|key|answer)",
        "a URL template that puts conversation data into a link",
    ),
)
FAMILY_ORDER = ("instruction_override", "prompt_extraction", "exfiltration", "ai_directive", "encoded_payload", "role_play")
FAMILIES = (*FAMILY_ORDER, "classifier")

# Which rules can match a text at all: most texts hold none of the words a rule needs, and skip its pattern.
_SCREEN = LiteralScreen([rule.pattern for rule in RULES])

# Phrases that hedge a hit: a user asking *about* an instruction ("can I ignore the warning rules?")
# is not giving one. A hit inside such a sentence counts this much of its weight.
_HEDGE = re.compile(
    r"\b(?:can|could|should|may|might|do|does|would|is\s+it\s+(?:ok|okay|safe|fine|possible))\s+(?:i|we|you|one|they|people|users)\b|"
    r"\bhow\s+(?:do|can|should|to)\b|\bwhat\s+(?:happens|does|is\s+a|are)\b|\bwhy\s+(?:do|does|would|should)\b|"
    r"\b(?:don't|do\s+not|never|shouldn't|should\s+not)\s+(?:ignore|disregard|forget)\b|"
    r"\b(?:explain|define|describe|meaning\s+of|example\s+of|examples\s+of|write\s+an?\s+(?:article|essay|blog|post|story|paper))\b",
    re.IGNORECASE,
)
HEDGE_FACTOR = 0.5

# -- decoders ----------------------------------------------------------------------------------------

_ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u180e\u200e\u200f"
_ZW_STRIP = {ord(c): None for c in _ZERO_WIDTH}
_TAG_RUN = re.compile("[\U000e0000-\U000e007f]{4,}")
_ZW_BITS = re.compile("[\u200b\u200c]{16,}")
_B64 = re.compile(r"(?<![A-Za-z0-9+/=_-])(?:[A-Za-z0-9+/]{4}){4,}(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?(?![A-Za-z0-9+/=])")
_B64URL = re.compile(r"(?<![A-Za-z0-9_=-])(?=[A-Za-z0-9_-]*[_-])[A-Za-z0-9_-]{16,}={0,2}(?![A-Za-z0-9_=-])")
_HEX = re.compile(r"(?<![0-9A-Fa-f])(?:(?:\\x|0x)?[0-9A-Fa-f]{2}[\s:,]?){12,}")
_ROT13_HINT = re.compile(r"\brot-?13\b|\bcaesar\b", re.IGNORECASE)
_WORDS = re.compile(r"[A-Za-z]{2,}")
DECODERS = ("base64", "hex", "rot13", "unicode_tags", "zero_width")


def _printable_share(text: str) -> float:
    if not text:
        return 0.0
    return sum(1 for c in text if c.isprintable() or c in "\n\t") / len(text)


def _as_text(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if len(text) >= 8 and _printable_share(text) > 0.95 and _WORDS.search(text) else None


def decode_payloads(text: str) -> list[tuple[str, int, int, str]]:
    """Hidden texts: (decoder, start, end, decoded) for each base64, hex, Unicode-tag and zero-width
    bit string of ``text`` that decodes to readable text, and the rot13 reading of the whole text when
    it names rot13 (every decoded text is scanned again by the rules)."""
    out: list[tuple[str, int, int, str]] = []
    for m in _TAG_RUN.finditer(text):
        decoded = "".join(chr(ord(c) - 0xE0000) for c in m.group(0) if 0x20 <= ord(c) - 0xE0000 < 0x7F)
        if decoded.strip():
            out.append(("unicode_tags", m.start(), m.end(), decoded))
    for m in _ZW_BITS.finditer(text):
        bits = "".join("0" if c == "\u200b" else "1" for c in m.group(0))
        raw = bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits) - 7, 8))
        decoded_zw = _as_text(raw)
        if decoded_zw:
            out.append(("zero_width", m.start(), m.end(), decoded_zw))
    if len(out) < 16:
        for pattern in (_B64, _B64URL):
            for m in pattern.finditer(text):
                blob = m.group(0)
                if blob.isalpha() and (blob.islower() or blob.isupper()):
                    continue  # one long word, not base64
                try:
                    raw = base64.b64decode(blob + "=" * (-len(blob) % 4), altchars=b"-_" if pattern is _B64URL else None, validate=True)
                except (binascii.Error, ValueError):
                    continue
                decoded_b64 = _as_text(raw)
                if decoded_b64:
                    out.append(("base64", m.start(), m.end(), decoded_b64))
                if len(out) >= 16:
                    break
    for m in _HEX.finditer(text):
        digits = re.sub(r"\\x|0x|[\s:,]", "", m.group(0))
        if len(digits) % 2:
            digits = digits[:-1]
        try:
            decoded_hex = _as_text(bytes.fromhex(digits))
        except ValueError:
            continue
        if decoded_hex:
            out.append(("hex", m.start(), m.end(), decoded_hex))
        if len(out) >= 16:
            break
    if _ROT13_HINT.search(text):
        out.append(("rot13", 0, len(text), codecs.decode(text, "rot13")))
    return out


def normalise(text: str) -> tuple[str, list[int] | None]:
    """The text as the rules read it: NFKC (full-width and other compatibility letters folded), zero-width
    and tag characters removed; and the map of each of its characters to its offset in ``text`` (None:
    the same offsets)."""
    if text.isascii():
        return text, None
    chars: list[str] = []
    offsets: list[int] = []
    for i, c in enumerate(text):
        if c in _ZERO_WIDTH or 0xE0000 <= ord(c) <= 0xE007F:
            continue
        folded = unicodedata.normalize("NFKC", c) if ord(c) > 0x7F else c
        chars.append(folded)
        offsets.extend([i] * len(folded))
    return "".join(chars), offsets


# -- results -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleHit:
    rule: str
    family: str
    weight: float
    start: int  # span in the scored text (for a decoded payload: the encoded blob's span)
    end: int
    explanation: str
    decoder: str | None = None  # the decoder that revealed it, if any
    evidence: str = field(default="", repr=False)  # RAW matched text (decoded where decoded): mask before it leaves


@dataclass(frozen=True)
class InjectionResult:
    """How much a text looks like an injection. ``evidence`` of the hits is raw text: the caller holds
    the text anyway, but findings carry only its masked form (:meth:`InjectionDetector.excerpt`)."""

    score: float  # 0..1: noisy-or of the rule and classifier scores
    flagged: bool  # score >= the detector's threshold
    category: str | None  # the strongest rule family that fired, or "classifier"; None when nothing did
    explanation: str
    span: tuple[int, int] | None  # offsets in the text of the strongest hit (classifier: the window it read)
    rule_score: float = 0.0
    classifier_score: float | None = None  # None: no classifier (rules only)
    hits: tuple[RuleHit, ...] = ()

    @property
    def kind(self) -> str:
        return "jailbreak" if self.category in ("role_play", "classifier") else "prompt_injection"

    def as_dict(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 4),
            "flagged": self.flagged,
            "category": self.category,
            "rule_score": round(self.rule_score, 4),
            "classifier_score": None if self.classifier_score is None else round(self.classifier_score, 4),
            "rules": sorted({h.rule for h in self.hits}),
        }


def noisy_or(scores: Iterable[float]) -> float:
    p = 1.0
    for s in scores:
        p *= 1.0 - min(1.0, max(0.0, s))
    return 1.0 - p


def scan(text: str, decode: bool = True) -> list[RuleHit]:
    """Every rule hit in ``text`` (normalised first), then in each payload decoded from it."""
    if len(text) > MAX_SCAN_CHARS:
        half = MAX_SCAN_CHARS // 2
        head = scan(text[:half], decode)
        tail = [
            RuleHit(h.rule, h.family, h.weight, h.start + len(text) - half, h.end + len(text) - half, h.explanation, h.decoder, h.evidence)
            for h in scan(text[-half:], decode)
        ]
        return head + tail
    norm, offsets = normalise(text)
    hits: list[RuleHit] = []
    for rule, worth in zip(RULES, _SCREEN.allowed(norm)):
        if not worth:  # the pattern cannot match: norm lacks every word it needs (detectors.literals)
            continue
        for m in rule.pattern.finditer(norm):
            weight = rule.weight
            if rule.family in ("instruction_override", "role_play") and _hedged(norm, m.start(), m.end()):
                weight *= HEDGE_FACTOR
            start, end = (m.start(), m.end()) if offsets is None else (offsets[m.start()], offsets[max(m.start(), m.end() - 1)] + 1)
            hits.append(RuleHit(rule.name, rule.family, weight, start, end, rule.explanation, None, m.group(0)))
            break  # one hit per rule is enough to score and explain
    if decode:
        for decoder, start, end, decoded in decode_payloads(text):
            inner = scan(decoded, decode=decoder != "rot13")
            if inner:
                best = max(inner, key=lambda h: h.weight)
                weight = 1.0 - (1.0 - best.weight) * 0.5  # hiding it is a signal of its own
                hits.append(
                    RuleHit(
                        f"{decoder}:{best.rule}",
                        "encoded_payload",
                        weight,
                        start,
                        end,
                        f"{decoder} text that decodes to an attack: {best.explanation}",
                        decoder,
                        decoded[max(0, best.start - 40) : best.end + 40],
                    )
                )
            elif decoder in ("unicode_tags", "zero_width"):
                hits.append(
                    RuleHit(
                        f"{decoder}:hidden_text",
                        "encoded_payload",
                        0.6,
                        start,
                        end,
                        f"text hidden in {decoder.replace('_', ' ')}",
                        decoder,
                        decoded,
                    )
                )
    return hits


def _hedged(text: str, start: int, end: int) -> bool:
    """The hit stands in a question or a sentence about the phrase, not an order."""
    left = max(text.rfind(".", 0, start), text.rfind("\n", 0, start), text.rfind("!", 0, start), text.rfind("?", 0, start)) + 1
    right_candidates = [i for i in (text.find(c, end) for c in ".!?\n") if i != -1]
    right = min(right_candidates) if right_candidates else len(text)
    sentence = text[left : right + 1]
    return sentence.rstrip().endswith("?") or _HEDGE.search(sentence) is not None


def rule_score(hits: Sequence[RuleHit]) -> float:
    """Noisy-or of the best hit of each rule."""
    best: dict[str, float] = {}
    for h in hits:
        best[h.rule] = max(best.get(h.rule, 0.0), h.weight)
    return noisy_or(best.values())


# -- the classifier ----------------------------------------------------------------------------------


class InjectionHead:
    """sigmoid(w . e(x) + b) over the default sentence embeddings: the head trained by train_injection.py."""

    def __init__(self, head_file: Path = HEAD_FILE):
        head = json.loads(Path(head_file).read_text(encoding="utf-8"))
        self.w = np.asarray(head["weights"], dtype=np.float32)
        self.b = float(head["bias"])
        self.threshold = float(head.get("threshold", DEFAULT_THRESHOLD))
        self.meta = {k: v for k, v in head.items() if k not in ("weights", "bias")}

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        if len(vectors) == 0:
            return np.zeros(0, dtype=np.float64)
        logits = vectors.astype(np.float64) @ self.w + self.b
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))


class InjectionScreen:
    """sigmoid(w . s(x) + b) over the static token table, and the gate at which a text goes on to MiniLM."""

    def __init__(self, screen_file: Path = SCREEN_FILE):
        data = json.loads(Path(screen_file).read_text(encoding="utf-8"))
        self.w = np.asarray(data["weights"], dtype=np.float32)
        self.b = float(data["bias"])
        self.gate = float(data["gate"])

    @cached_property
    def service(self) -> EmbeddingService:
        from .static_embeddings import StaticEmbeddingService

        return StaticEmbeddingService.shared()

    def probabilities(self, texts: Sequence[list[str]]) -> list[float]:
        """Per text (its windows), the highest window probability."""
        flat = [w for ws in texts for w in ws]
        if not flat:
            return [0.0] * len(texts)
        logits = self.service.encode(flat).astype(np.float64) @ self.w + self.b
        return per_text_max(1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50))), texts)


def per_text_max(p: np.ndarray, texts: Sequence[list[str]]) -> list[float]:
    """The highest of each text's window scores (``p`` holds every window's, in order); 0.0 for a text without windows."""
    out, pos = [], 0
    for ws in texts:
        out.append(float(p[pos : pos + len(ws)].max()) if ws else 0.0)
        pos += len(ws)
    return out


def windows(text: str) -> list[str]:
    """What the classifier reads of a text: its head, and its tail when the text is longer."""
    text = " ".join(normalise(text)[0].split())
    if len(text) <= WINDOW_CHARS:
        return [text] if text else []
    return [text[:WINDOW_CHARS], text[-WINDOW_CHARS:]]


# -- conversations -----------------------------------------------------------------------------------


class ConversationWindows:
    """The last ``max_turns`` (score, text) of at most ``max_conversations`` conversations, least recently
    seen evicted first. Not thread-safe on its own: the detector holds its lock around it."""

    def __init__(self, max_conversations: int, max_turns: int):
        self.max_conversations = max_conversations
        self.max_turns = max_turns
        self._turns: OrderedDict[str, list[tuple[float, str]]] = OrderedDict()
        self.evicted = 0

    def add(self, key: str, turns: Sequence[tuple[float, str]]) -> list[tuple[float, str]]:
        held = self._turns.pop(key, [])
        held = (held + list(turns))[-self.max_turns :]
        self._turns[key] = held
        while len(self._turns) > self.max_conversations:
            self._turns.popitem(last=False)
            self.evicted += 1
        return list(held)

    def lengths(self) -> dict[str, int]:
        return {k: len(v) for k, v in self._turns.items()}

    def __len__(self) -> int:
        return len(self._turns)


# -- the detector ------------------------------------------------------------------------------------


class InjectionDetector(UsesEmbeddings, Detector, NeedsEmbeddings, ExposesGauges):
    """Flags prompt injection and jailbreaks in the user's turns, and indirect injection in the context.

    ``classifier``: use the embedding head (default) or the rules alone. ``threshold``: the flag
    threshold of the combined score (default: the head's tuned threshold; rules alone:
    :data:`RULES_ONLY_THRESHOLD`). ``scan_context``: score each context document (indirect injection).
    ``max_conversations``/``max_turns``/``turn_decay``/``joined_turns``: the multi-turn memory (see
    the module's docstring). ``score_batch`` changes the memory under ``_lock``;
    ``conversation_lengths`` and ``gauges`` copy from it under the lock.
    """

    name = "injection"
    categories = FAMILIES  # the worker counts findings per category (streamwarden_finding_categories_total)

    def __init__(
        self,
        classifier: bool = True,
        threshold: float | None = None,
        head_file: str | None = None,
        embedding_model: str | None = None,
        scan_context: bool = True,
        max_conversations: int = 10_000,
        max_turns: int = 8,
        turn_decay: float = 0.7,
        joined_turns: int = 3,
        embeddings: EmbeddingService | None = None,
        screen: bool = True,
        screen_file: str | None = None,
    ):
        if threshold is not None and not 0.0 < threshold <= 1.0:
            raise ConfigurationError("injection threshold must be in (0, 1]")
        if max_conversations < 1 or max_turns < 1 or joined_turns < 1:
            raise ConfigurationError("max_conversations, max_turns and joined_turns must be at least 1")
        if not 0.0 <= turn_decay <= 1.0:
            raise ConfigurationError("turn_decay must be in [0, 1]")
        self.classifier = classifier
        self._head_file = Path(head_file) if head_file else HEAD_FILE
        if classifier and not self._head_file.exists():
            raise ConfigurationError(f"injection head {str(self._head_file)!r} does not exist")
        self._embedding_model = embedding_model
        self._embeddings = embeddings
        self._screen_file = Path(screen_file) if screen_file else SCREEN_FILE
        self.screen_on = classifier and screen
        if self.screen_on and not self._screen_file.exists():
            raise ConfigurationError(f"injection screen {str(self._screen_file)!r} does not exist")
        self._threshold = threshold
        self.scan_context = scan_context
        self.turn_decay = turn_decay
        self.joined_turns = joined_turns
        self._lock = threading.Lock()
        self._conversations = ConversationWindows(max_conversations, max_turns)
        self._counts = {"flagged_user": 0, "flagged_context": 0, "flagged_conversation": 0}
        self._screen_counts = {"to_minilm": 0, "screened_out": 0}

    @cached_property
    def head(self) -> InjectionHead | None:
        return InjectionHead(self._head_file) if self.classifier else None

    @cached_property
    def screen(self) -> InjectionScreen | None:
        return InjectionScreen(self._screen_file) if self.screen_on else None

    def _screened(self, wins: Sequence[list[str]]) -> tuple[list[float | None], list[bool]]:
        """The screen's score of each text (None: no screen) and whether the text goes on to MiniLM."""
        screen = self.screen
        if screen is None:
            return [None] * len(wins), [True] * len(wins)
        p = screen.probabilities(wins)
        return list(p), [q >= screen.gate for q in p]

    @property
    def threshold(self) -> float:
        if self._threshold is not None:
            return self._threshold
        return self.head.threshold if self.head is not None else RULES_ONLY_THRESHOLD

    @property
    def embeddings(self) -> EmbeddingService | None:  # type: ignore[override]
        return UsesEmbeddings.embeddings.fget(self) if self.classifier else None  # type: ignore[attr-defined]

    def warm_up(self) -> None:
        self._redaction()
        if self.classifier:
            _ = self.head
            if self.screen is not None:
                self.screen.service.warm_up()
            service = self.embeddings
            assert service is not None
            service.warm_up()

    # -- scoring -------------------------------------------------------------------------------

    def score(self, text: str) -> InjectionResult:
        return self.score_many([text])[0]

    def score_many(self, texts: Sequence[str]) -> list[InjectionResult]:
        """Score several texts; the classifier encodes all their windows in one call. A non-str is an empty text."""
        texts = [t if isinstance(t, str) else "" for t in texts]
        all_hits = [scan(t) if t.strip() else [] for t in texts]
        probs: list[float | None] = [None] * len(texts)
        if self.classifier and self.head is not None:
            wins = [windows(t) for t in texts]
            screened, onward = self._screened(wins)
            if self.screen is not None:
                with self._lock:
                    self._screen_counts["to_minilm"] += sum(onward)
                    self._screen_counts["screened_out"] += len(onward) - sum(onward)
            onward_wins = [ws for ws, go in zip(wins, onward) if go]
            if any(onward_wins):
                service = self.embeddings
                assert service is not None
                p = self.head.probabilities(service.encode([w for ws in onward_wins for w in ws]))
                minilm = iter(per_text_max(p, onward_wins))
                probs = [next(minilm) if go else None for go in onward]
            probs = [q if q is not None else (s or 0.0) for q, s in zip(probs, screened)]
        return [self._result(t, h, p) for t, h, p in zip(texts, all_hits, probs)]

    def _result(self, text: str, hits: list[RuleHit], prob: float | None) -> InjectionResult:
        r = rule_score(hits)
        score = noisy_or([r, prob or 0.0])
        flagged = bool(text.strip()) and (score >= self.threshold or (prob is not None and self._threshold is None and r >= RULE_FLAG))
        best = max(hits, key=lambda h: (h.weight, -FAMILY_ORDER.index(h.family))) if hits else None
        if best is not None and (prob is None or best.weight >= prob * 0.8):
            category: str | None = best.family
            explanation = best.explanation + (f" ({best.decoder})" if best.decoder else "")
            span: tuple[int, int] | None = (best.start, best.end)
        elif prob is not None and prob >= 0.05:
            category = "classifier"
            explanation = f"the classifier scores the text {prob:.2f} (jailbreak-like)"
            span = (0, min(len(text), WINDOW_CHARS))
        else:
            category, explanation, span = None, "", None
        others = sorted({h.family for h in hits} - {category})
        if others and flagged:
            explanation += f"; also {', '.join(others)}"
        return InjectionResult(score, flagged, category, explanation, span, r, prob, tuple(hits))

    # -- conversations ------------------------------------------------------------------------

    def conversation_score(self, turn_scores: Sequence[float], joined: float = 0.0) -> float:
        """Recency-weighted noisy-or of the turns' scores (the last turn counts fully, one turn back
        ``turn_decay``, ...), or the score of the last turns joined, whichever is higher."""
        n = len(turn_scores)
        decayed = [s * self.turn_decay ** (n - 1 - i) for i, s in enumerate(turn_scores)]
        return max(noisy_or(decayed), joined)

    # Not the KeepsWindows contract: its keys become metric labels, and conversation ids are
    # unbounded user data. The gauges count the conversations held and evicted instead.
    def conversation_bounds(self) -> dict[str, int]:
        return {"conversations": self._conversations.max_conversations, "turns": self._conversations.max_turns}

    def conversation_lengths(self) -> dict[str, int]:
        """Turns held per conversation key (model and conversation id), a copy taken under the lock."""
        with self._lock:
            return self._conversations.lengths()

    def gauges(self) -> list[Gauge]:
        with self._lock:
            conversations = len(self._conversations)
            evicted = self._conversations.evicted
            screen = dict(self._screen_counts)
        return [
            Gauge("injection_conversations", {"detector": self.name}, float(conversations)),
            Gauge("injection_conversations_evicted", {"detector": self.name}, float(evicted)),
            # Texts so far, by what the static screen decided (to_minilm: at or over its gate).
            *(
                Gauge("injection_screen_texts", {"detector": self.name, "outcome": k}, float(v))
                for k, v in screen.items()
                if self.screen_on
            ),
        ]

    # -- the detector hook --------------------------------------------------------------------

    def texts_to_embed(self, events: Sequence[EventLike]) -> list[str]:
        if not self.classifier:
            return []
        texts: list[list[str]] = []
        for e in events:
            turns = user_turns(e)
            texts += [windows(t) for t in turns]
            if len(turns) > 1:
                texts.append(windows("\n".join(turns[-self.joined_turns :])))
            if self.scan_context:
                texts += [windows(d) for d in _context(e)]
        _, onward = self._screened(texts)  # the screen's vectors stay in its table's cache for score_batch
        return [w for ws, go in zip(texts, onward) if go for w in ws]

    def score_batch(self, events: Sequence[EventLike]) -> list[Finding]:
        # Every text of the batch in one score_many call (one forward pass of the classifier).
        plan: list[tuple[list[str], str | None, list[str]]] = []
        texts: list[str] = []
        for e in events:
            turns = user_turns(e)
            joined = "\n".join(turns[-self.joined_turns :]) if len(turns) > 1 else None
            docs = _context(e) if self.scan_context else []
            plan.append((turns, joined, docs))
            texts += turns + ([joined] if joined is not None else []) + docs
        results = iter(self.score_many(texts)) if texts else iter(())
        findings: list[Finding] = []
        for event, (turns, joined, docs) in zip(events, plan):
            turn_results = [next(results) for _ in turns]
            joined_result = next(results) if joined is not None else None
            doc_results = [next(results) for _ in docs]
            findings += self._event_findings(event, turns, turn_results, joined, joined_result, docs, doc_results)
        return findings

    def _event_findings(
        self,
        event: EventLike,
        turns: list[str],
        turn_results: list[InjectionResult],
        joined: str | None,
        joined_result: InjectionResult | None,
        docs: list[str],
        doc_results: list[InjectionResult],
    ) -> list[Finding]:
        findings: list[Finding] = []
        conv_id = conversation_id(event)
        history = [(r.score, t) for r, t in zip(turn_results, turns)]
        if conv_id is not None and turns:
            with self._lock:
                history = self._conversations.add(conv_id, history[-self._conversations.max_turns :])
            if joined_result is None and len(history) > 1:
                joined = "\n".join(t for _, t in history[-self.joined_turns :])
                joined_result = self.score_many([joined])[0]
        conv = self.conversation_score([s for s, _ in history], joined_result.score if joined_result else 0.0) if len(history) > 1 else 0.0
        flagged_turns = [k for k, r in enumerate(turn_results) if r.flagged]
        if flagged_turns:
            k = max(flagged_turns, key=lambda i: turn_results[i].score)
            r = turn_results[k]
            findings.append(
                self._finding(event, r.kind, r, turns[k], {"turn": k, "turns": len(turns), "conversation_score": round(conv, 4)})
            )
            with self._lock:
                self._counts["flagged_user"] += 1
        elif conv >= self.threshold and turns:
            r = joined_result if joined_result is not None and joined_result.flagged else max(turn_results, key=lambda x: x.score)
            text = joined if r is joined_result and joined is not None else turns[turn_results.index(r)]
            findings.append(
                self._finding(
                    event,
                    "multi_turn_injection",
                    r,
                    text,
                    {
                        "conversation_score": round(conv, 4),
                        "turn_scores": [round(s, 4) for s, _ in history],
                        "max_turn_score": round(max(s for s, _ in history), 4),
                        "turns": len(history),
                    },
                    score=conv,
                    summary=f"The conversation's last {len(history)} turns drift towards an injection (score {conv:.2f}; no single turn over the threshold)",
                )
            )
            with self._lock:
                self._counts["flagged_conversation"] += 1
        flagged_docs = [d for d, r in enumerate(doc_results) if r.flagged]
        if flagged_docs:
            d = max(flagged_docs, key=lambda i: doc_results[i].score)
            r = doc_results[d]
            findings.append(
                self._finding(
                    event,
                    "indirect_injection",
                    r,
                    docs[d],
                    {"document": d, "flagged_documents": flagged_docs, "documents": len(docs)},
                    summary=f"Context document {d} carries instructions for the model ({r.category}: {r.explanation}; score {r.score:.2f})",
                )
            )
            with self._lock:
                self._counts["flagged_context"] += 1
        return findings

    def _finding(
        self,
        event: EventLike,
        kind: str,
        r: InjectionResult,
        text: str,
        extra: Mapping[str, Any],
        score: float | None = None,
        summary: str | None = None,
    ) -> Finding:
        score = r.score if score is None else score
        return Finding.for_event(
            event,
            detector=self.name,
            kind=kind,
            severity=Severity.HIGH if score >= 0.9 else Severity.MEDIUM,
            score=score,
            summary=summary or f"The user's text looks like {kind.replace('_', ' ')} ({r.category}: {r.explanation}; score {r.score:.2f})",
            details={
                **r.as_dict(),
                "explanation": r.explanation,
                "span": list(r.span) if r.span else None,
                "excerpt": self.excerpt(text, r),
                "decoder": next((h.decoder for h in r.hits if h.decoder and h.family == r.category), None),
                **extra,
            },
        )

    def excerpt(self, text: str, r: InjectionResult) -> str:
        """The text around the strongest hit (for a decoded payload: the decoded text), with PII and
        secrets masked (as the PII detector masks them), cut to 160 characters."""
        if r.category is None or r.span is None:
            return ""
        hit = next((h for h in r.hits if h.family == r.category and (h.start, h.end) == r.span), None)
        if hit is not None and hit.decoder:
            window = hit.evidence
        else:
            start, end = r.span
            # Widen to whole words so no value is cut into a piece the PII recognizers would miss.
            a = max(0, start - 60)
            while a > 0 and not text[a - 1].isspace() and start - a < 120:
                a -= 1
            b = min(len(text), end + 60)
            while b < len(text) and not text[b].isspace() and b - end < 120:
                b += 1
            window = text[a:b]
        masked = " ".join(self._redact(window[:2000]).split())
        return masked if len(masked) <= EXCERPT_CHARS else masked[: EXCERPT_CHARS - 1] + "…"

    def _redact(self, text: str) -> str:
        return self._redaction().redact(text)

    @staticmethod
    def _redaction() -> PIILeakDetector:
        """The process's PII recognizers that mask excerpts (:func:`detectors.pii.shared_redactor`)."""
        from .pii import shared_redactor

        return shared_redactor()

    def describe(self) -> Mapping[str, Any]:
        return {**super().describe(), "classifier": self.classifier, "threshold": self.threshold, "scan_context": self.scan_context}


# -- reading events ----------------------------------------------------------------------------------


def user_turns(event: EventLike) -> list[str]:
    """The user's turns: each user message of a chat prompt, or the whole text prompt."""
    prompt = getattr(event, "prompt", None)
    if isinstance(prompt, list | tuple):
        turns = []
        for m in prompt:
            role = getattr(m, "role", None) if not isinstance(m, Mapping) else m.get("role")
            content = getattr(m, "content", None) if not isinstance(m, Mapping) else m.get("content")
            if role == "user" and isinstance(content, str) and content.strip():
                turns.append(content)
        return turns
    user_text = getattr(event, "user_text", None)
    text = user_text if isinstance(user_text, str) else getattr(event, "prompt_text", "")
    return [text] if isinstance(text, str) and text.strip() else []


def _context(event: EventLike) -> list[str]:
    return [d for d in (getattr(event, "context", None) or []) if isinstance(d, str) and d.strip()]


def conversation_id(event: EventLike) -> str | None:
    """``event.conversation_id``, else ``metadata["conversation_id"]``; keyed by model too."""
    cid = getattr(event, "conversation_id", None)
    if not cid:
        metadata = getattr(event, "metadata", None)
        cid = metadata.get("conversation_id") if isinstance(metadata, Mapping) else None
    if cid is None or (isinstance(cid, str) and not cid.strip()):
        return None
    return f"{getattr(event, 'model', '')}\x1f{cid}"


__all__ = [
    "DECODERS",
    "FAMILIES",
    "RULES",
    "InjectionDetector",
    "InjectionHead",
    "InjectionResult",
    "RuleHit",
    "decode_payloads",
    "noisy_or",
    "scan",
]
