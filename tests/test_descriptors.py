import pytest

from detectors.base import Severity
from detectors.descriptors import ResponseDescriptorDetector, is_refusal
from detectors.registry import build

from .conftest import make_event


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "I am afraid I cannot provide that information.",
        "I can\u2019t assist with that request.",
        "As an AI language model, I cannot browse the internet.",
        "I must decline to answer.",
    ],
)
def test_refusals_are_recognised(text):
    assert is_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "Sure! Here is how to cancel your plan.",
        "The error 'I can't connect' usually means the VPN is down.",
        "Paris. " * 60 + "I'm sorry, but I can't help with that.",  # a late quote is not a refusal
    ],
)
def test_helpful_answers_are_not_refusals(text):
    assert not is_refusal(text)


def test_detector_flags_refusals_low_and_empty_answers_medium_with_stable_ids():
    det = ResponseDescriptorDetector()
    refusal, empty, fine = make_event(response="I cannot help with that."), make_event(response="  "), make_event()
    findings = det.score_batch([refusal, empty, fine])
    by_event = {f.event_id: f for f in findings}
    assert set(by_event) == {refusal.event_id, empty.event_id}
    assert by_event[refusal.event_id].severity is Severity.LOW and by_event[refusal.event_id].kind == "refusal"
    assert by_event[empty.event_id].severity is Severity.MEDIUM
    again = det.score_batch([refusal])[0]
    assert again.finding_id == by_event[refusal.event_id].finding_id  # deterministic: idempotent downstream
    with pytest.raises(Exception):
        again.score = 0.5  # findings are frozen


def test_registry_builds_by_name_and_rejects_unknown_names():
    assert [d.name for d in build(["descriptors"])] == ["descriptors"]
    with pytest.raises(ValueError, match="unknown detector 'nope'"):
        build(["nope"])


def test_registry_rejects_unknown_options_clearly():
    with pytest.raises(ValueError, match="bad options for detector 'descriptors'"):
        build(["descriptors"], {"descriptors": {"threshold": 1}})
    with pytest.raises(ValueError, match="options given for unknown detectors: nope"):
        build(["descriptors"], {"nope": {}})


def test_every_registered_name_resolves_to_a_detector_class():
    from detectors.base import Detector
    from detectors.registry import REGISTRY, detector_class

    for name in REGISTRY:
        cls = detector_class(name)
        assert issubclass(cls, Detector) and cls.name == name


def test_sentiment_is_vaders_and_a_repeated_text_is_answered_from_a_bounded_cache_of_hashes(monkeypatch):
    from detectors import descriptors

    texts = ["What a wonderful, helpful answer!", "This is terrible and I hate it.", "The train leaves at noon."]
    vader = descriptors._vader()
    expected = [vader.polarity_scores(t)["compound"] for t in texts]
    monkeypatch.setattr(descriptors, "_sentiments", type(descriptors._sentiments)(2))
    calls = []
    real = vader.polarity_scores
    monkeypatch.setattr(vader, "polarity_scores", lambda t: calls.append(t) or real(t))
    assert [descriptors.sentiment(t) for t in texts] == expected
    assert descriptors.sentiment(texts[2]) == expected[2] and len(calls) == 3  # the last one, from the cache
    assert descriptors.sentiment(texts[0]) == expected[0] and len(calls) == 4  # evicted (two entries): scored again
    assert len(descriptors._sentiments) == 2
    assert all(isinstance(k, bytes) and len(k) == 16 for k in descriptors._sentiments)  # hashes, never the texts


def test_the_sentiment_cache_gives_vaders_scores_to_threads_at_once(monkeypatch):
    import threading

    from detectors import descriptors

    texts = [f"Answer {i}: this is {'great' if i % 2 else 'awful'} and {'fine' if i % 3 else 'bad'}." for i in range(60)]
    vader = descriptors._vader()
    expected = {t: vader.polarity_scores(t)["compound"] for t in texts}
    monkeypatch.setattr(descriptors, "_sentiments", type(descriptors._sentiments)(16))  # evicting all the time
    wrong: list[str] = []

    def score(seed: int) -> None:
        for k in range(400):
            t = texts[(seed * 7 + k * 13) % len(texts)]
            if descriptors.sentiment(t) != expected[t]:
                wrong.append(t)

    threads = [threading.Thread(target=score, args=(s,)) for s in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not wrong and len(descriptors._sentiments) <= 16
