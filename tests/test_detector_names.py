"""Detector names (findings' detector, metric labels) are distinct; configuration errors are typed."""

import pytest

from detectors import ConfigurationError, Detector, StreamwardenError, registry


class ToxicityDetector(Detector):
    def score_batch(self, events):
        return []


class PIIScanner(Detector):
    def score_batch(self, events):
        return []


class NamedPII(Detector):
    name = "pii"

    def score_batch(self, events):
        return []


def test_a_detector_without_a_name_is_named_after_its_class():
    assert ToxicityDetector.name == "toxicity_detector" and ToxicityDetector().name == "toxicity_detector"
    assert PIIScanner.name == "pii_scanner"
    assert ToxicityDetector.name != PIIScanner.name
    assert NamedPII.name == "pii"  # an explicit name stays


def test_build_refuses_two_detectors_of_one_name():
    with pytest.raises(ConfigurationError, match="'pii'"):
        registry.build(["pii", "pii"])
    with pytest.raises(ConfigurationError, match="'pii'"):
        registry.build(["pii", f"{__name__}:NamedPII"])
    detectors = registry.build([f"{__name__}:ToxicityDetector", f"{__name__}:PIIScanner", "descriptors"])
    assert [d.name for d in detectors] == ["toxicity_detector", "pii_scanner", "descriptors"]


@pytest.mark.parametrize(
    "names, options",
    [
        (["no_such_detector"], None),
        (["no.such.module:Detector"], None),
        (["descriptors"], {"nope": {}}),
        (["pii"], {"pii": {"no_such_option": 1}}),
        (["pii"], {"pii": {"entities": ["SHOE_SIZE"]}}),
        (["drift"], {"drift": {"mode": "sometimes"}}),
        (["bias"], {"bias": {"window": 10, "min_events": 50}}),
        (["consistency"], {"consistency": {"method": "magic"}}),
    ],
)
def test_configuration_errors_are_typed_and_still_value_errors(names, options):
    with pytest.raises(ConfigurationError) as info:
        registry.build(names, options)
    assert isinstance(info.value, ValueError) and isinstance(info.value, StreamwardenError)
