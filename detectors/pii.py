"""PII and secrets in responses, told apart from what the user typed.

Recognition uses the field's libraries, not home-made patterns:

* presidio-analyzer's pattern recognizers and validators (e-mail with TLD check, phone
  numbers through ``phonenumbers``, credit cards with Luhn, US SSN rules, IBAN checksum,
  IP addresses), called directly instead of through ``AnalyzerEngine``;
* detect-secrets' plugins for credentials (cloud keys, tokens, private keys, JWTs, basic
  auth URLs), and its entropy plugins only next to a secret-ish keyword;
* optionally a spaCy NER model for PERSON / LOCATION / NRP / DATE_TIME, run with only its
  ``ner`` component, over the whole micro-batch at once (``nlp.pipe``).

Where the speed comes from (see ``bench/bench_pii.py``): every recognizer is gated by a
cheap test of what it needs (an ``@`` for e-mail, 7+ digits for a phone, ...), so most
texts, which hold no PII, cost a few string scans; NER runs only the NER component.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

from .base import Detector, EventLike, Finding, Severity
from .errors import ConfigurationError

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
# and fire on most answers; PERSON/LOCATION need the NER model (see ner_model).
DEFAULT_TYPES = (*PATTERN_TYPES, SECRET)
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

# Cheap gates: a recognizer runs only when its text could hold what it looks for.
_DIGITS = re.compile(r"\d")
_IBAN_GATE = re.compile(r"\b[A-Za-z]{2}\d{2}[ ]?[A-Za-z0-9]{4}")
_IP_GATE = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{0,4}:")
_SECRET_GATE = re.compile(
    r"[A-Za-z0-9_\-+/=.]{10,}|-----BEGIN|://[^/\s:@]+:[^/\s@]+@|"
    r"(?i:pass(?:word|wd)?|secret|token|api[_-]?key|apikey|auth)",
)
_SECRET_KEYWORD = re.compile(r"(?i)(pass(?:word|wd)?|secret|token|api[_-]?key|apikey|credential|auth[a-z_]*)\W{0,4}(?:is|=|:|=>)?\W{0,3}$")


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

    ``entities``: which types to look for (default :data:`DEFAULT_TYPES`).
    ``ner_model``: a spaCy model name or path for PERSON/LOCATION/NRP/DATE_TIME; when None,
    the NER types are not detected (the pattern types need no model).
    ``hash_key``: key of the HMAC that lets people correlate a value across findings without
    seeing it; a random per-process key when not given.
    ``min_score``: results below this presidio score are ignored.
    """

    name = "pii"

    def __init__(
        self,
        entities: Iterable[str] | None = None,
        ner_model: str | None = None,
        hash_key: bytes | None = None,
        min_score: float = 0.3,
    ):
        self.entities = tuple(entities or DEFAULT_TYPES)
        unknown = set(self.entities) - set(ALL_TYPES)
        if unknown:
            raise ConfigurationError(f"unknown PII entity types {sorted(unknown)}; known: {', '.join(ALL_TYPES)}")
        if set(self.entities) & set(NER_TYPES) and not ner_model:
            raise ConfigurationError(f"{sorted(set(self.entities) & set(NER_TYPES))} need a NER model (ner_model=...)")
        self.ner_model = ner_model
        self._hash_key = hash_key or _secrets.token_bytes(32)
        self.min_score = min_score

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
            PhoneRecognizer,
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
            "PHONE_NUMBER": (PhoneRecognizer(), lambda t: gate_digits(t, 7)),
            "CREDIT_CARD": (CreditCardRecognizer(), lambda t: gate_digits(t, 12)),
            "US_SSN": (UsSsnRecognizer(), lambda t: gate_digits(t, 9)),
            "IBAN_CODE": (IbanRecognizer(regex_flags=_REGEX_FLAGS), lambda t: _IBAN_GATE.search(t) is not None),
            "IP_ADDRESS": (IpRecognizer(), lambda t: _IP_GATE.search(t) is not None),
            # With NER on, dates are found as presidio finds them: NER plus its date patterns.
            "DATE_TIME": (DateRecognizer(), lambda t: _DIGITS.search(t) is not None),
        }
        return [
            (etype, rec, gate, {"regex_flags": _REGEX_FLAGS} if isinstance(rec, PatternRecognizer) else {})
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
        disabled = [name for name in nlp.pipe_names if name not in keep]
        # NER in spaCy's small/medium English models has its own tok2vec: the rest can go.
        return spacy.load(self.ner_model, exclude=disabled) if disabled else nlp

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
            for etype, rec, gate, kwargs in self._recognizers:
                if gate(text):
                    for r in rec.analyze(text, [etype], None, **kwargs):
                        if r.score < self.min_score:
                            continue
                        if etype == "IP_ADDRESS" and not _is_public_ip(text, r.start, r.end):
                            continue
                        if etype == "PHONE_NUMBER" and len(_DIGITS.findall(text[r.start : r.end])) < 7:
                            continue  # short codes and years ("1648") that phonenumbers accepts in some regions
                        out.append(PIIEntity(r.entity_type, r.start, r.end, float(r.score)))
            if want_secret and _SECRET_GATE.search(text):
                out.extend(self._find_secrets(text))
        ner_types = [t for t in NER_TYPES if t in self.entities]
        if ner_types:
            for i, doc in enumerate(self._nlp.pipe(texts, batch_size=64)):
                for ent in doc.ents:
                    etype = _SPACY_TO_PRESIDIO.get(ent.label_)
                    if etype in ner_types:
                        results[i].append(PIIEntity(etype, ent.start_char, ent.end_char, 0.85))
        return [_resolve_overlaps(r) for r in results]

    def _find_secrets(self, text: str) -> list[PIIEntity]:
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
        for plugin in entropy:
            for value in plugin.analyze_string(text):
                start = text.find(value)
                # A random-looking string is a secret only when a secret-ish word stands just before it.
                if start != -1 and _SECRET_KEYWORD.search(text[max(0, start - 40) : start].rstrip("'\"` ")):
                    add(value, 0.7)
        return list(found.values())

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


def _is_public_ip(text: str, start: int, end: int) -> bool:
    """A public address standing alone: private, loopback, link-local and reserved addresses
    identify no one outside their network, and ``1.2.3.4.5`` is a version, not an address."""
    before, after = text[max(0, start - 1) : start], text[end : end + 2]
    if before == "." or re.match(r"\.\d", after):
        return False
    try:
        return ipaddress.ip_address(text[start:end].strip("[]")).is_global
    except ValueError:
        return False


@lru_cache(maxsize=1)
def _offline_tld_extractor() -> Any:
    """tldextract's extractor on its bundled public suffix list snapshot: no suffix list URLs (no
    download) and no cache directory (nothing written). Both are tldextract's documented options."""
    import tldextract

    return tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)
