"""Detectors by name, so configuration can list them (``detectors=["descriptors", "pii"]``).

Each name maps to a class, imported only when that detector is built (so naming "pii"
never loads the embedding model), and configured with keyword options
(``detector_options`` in the settings).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import import_module
from typing import Any

from .base import Detector

REGISTRY: dict[str, str] = {
    "descriptors": "descriptors:ResponseDescriptorDetector",
    "pii": "pii:PIILeakDetector",
    "bias": "bias:BiasDetector",
    "consistency": "consistency:SelfConsistencyDetector",
    "cross_consistency": "consistency:CrossTrafficConsistency",
    "drift": "drift:EmbeddingDriftDetector",
    "descriptor_drift": "descriptor_drift:DescriptorDriftDetector",
}


def detector_class(name: str) -> type[Detector]:
    try:
        module, cls = REGISTRY[name].split(":")
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    return getattr(import_module(f"{__package__}.{module}"), cls)


def build(names: Iterable[str], options: Mapping[str, Mapping[str, Any]] | None = None) -> list[Detector]:
    """Instantiate the named detectors, in order; an unknown name or option is a clear error."""
    options = options or {}
    unknown_options = set(options) - set(REGISTRY)
    if unknown_options:
        raise ValueError(f"options given for unknown detectors: {', '.join(sorted(unknown_options))}")
    detectors = []
    for name in names:
        cls = detector_class(name)
        try:
            detectors.append(cls(**dict(options.get(name, {}))))
        except TypeError as exc:
            raise ValueError(f"bad options for detector {name!r}: {exc}") from None
    return detectors
