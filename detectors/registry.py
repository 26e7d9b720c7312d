"""Detectors by name, so configuration can list them (``detectors=["descriptors", ...]``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .base import Detector
from .descriptors import ResponseDescriptorDetector

DetectorFactory = Callable[[], Detector]

REGISTRY: dict[str, DetectorFactory] = {
    ResponseDescriptorDetector.name: ResponseDescriptorDetector,
}


def build(names: Iterable[str]) -> list[Detector]:
    """Instantiate the named detectors, in order; an unknown name is a clear error."""
    detectors = []
    for name in names:
        try:
            factory = REGISTRY[name]
        except KeyError:
            raise ValueError(f"unknown detector {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
        detectors.append(factory())
    return detectors
