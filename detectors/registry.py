"""Detectors by name, so configuration can list them (``detectors=["descriptors", "pii"]``).

Each name maps to a factory taking keyword options (``detector_options`` in the settings),
so every detector is configured from the same settings file or environment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .base import Detector


def _descriptors(**options: Any) -> Detector:
    from .descriptors import ResponseDescriptorDetector

    return ResponseDescriptorDetector(**options)


def _pii(**options: Any) -> Detector:
    from .pii import PIILeakDetector

    return PIILeakDetector(**options)


def _bias(**options: Any) -> Detector:
    from .bias import BiasDetector

    return BiasDetector(**options)


def _consistency(**options: Any) -> Detector:
    from .consistency import SelfConsistencyDetector

    return SelfConsistencyDetector(**options)


def _cross_consistency(**options: Any) -> Detector:
    from .consistency import CrossTrafficConsistency

    return CrossTrafficConsistency(**options)


def _drift(**options: Any) -> Detector:
    from .drift import EmbeddingDriftDetector

    return EmbeddingDriftDetector(**options)


def _descriptor_drift(**options: Any) -> Detector:
    from .descriptor_drift import DescriptorDriftDetector

    return DescriptorDriftDetector(**options)


REGISTRY: dict[str, Callable[..., Detector]] = {
    "descriptors": _descriptors,
    "pii": _pii,
    "bias": _bias,
    "consistency": _consistency,
    "cross_consistency": _cross_consistency,
    "drift": _drift,
    "descriptor_drift": _descriptor_drift,
}


def build(names: Iterable[str], options: Mapping[str, Mapping[str, Any]] | None = None) -> list[Detector]:
    """Instantiate the named detectors, in order; an unknown name or option is a clear error."""
    options = options or {}
    unknown_options = set(options) - set(REGISTRY)
    if unknown_options:
        raise ValueError(f"options given for unknown detectors: {', '.join(sorted(unknown_options))}")
    detectors = []
    for name in names:
        try:
            factory = REGISTRY[name]
        except KeyError:
            raise ValueError(f"unknown detector {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
        try:
            detectors.append(factory(**dict(options.get(name, {}))))
        except TypeError as exc:
            raise ValueError(f"bad options for detector {name!r}: {exc}") from None
    return detectors
