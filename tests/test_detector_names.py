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


def test_the_default_detector_list_is_stated_once_and_the_readme_quotes_it():
    import json
    import re
    from pathlib import Path

    from detectors.registry import REGISTRY
    from streams.settings import Settings

    defaults = Settings().detectors
    assert set(defaults) == set(REGISTRY) - {"cross_consistency"}  # every built-in runs by default but the opt-in one
    readme = Path(__file__).resolve().parents[1].joinpath("README.md").read_text(encoding="utf-8")
    quoted = re.search(r"default `(\[[^`]+\])`; `cross_consistency` is opt-in", readme)
    assert quoted and json.loads(quoted.group(1).replace("\n", " ")) == defaults
