"""Detectors by name, so configuration can list them (``detectors=["descriptors", "pii"]``).

Each name maps to a class, imported only when that detector is built (so naming "pii"
never loads the embedding model), and configured with keyword options
(``detector_options`` in the settings).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from importlib import import_module
from typing import Any

from .base import Detector
from .errors import ConfigurationError
from .offline import apply_offline_defaults

REGISTRY: dict[str, str] = {
    "descriptors": "descriptors:ResponseDescriptorDetector",
    "pii": "pii:PIILeakDetector",
    "bias": "bias:BiasDetector",
    "consistency": "consistency:SelfConsistencyDetector",
    "cross_consistency": "consistency:CrossTrafficConsistency",
    "drift": "drift:EmbeddingDriftDetector",
    "descriptor_drift": "descriptor_drift:DescriptorDriftDetector",
    "grounding": "grounding:GroundingDetector",
    "injection": "injection:InjectionDetector",
    "toxicity": "toxicity:ToxicityDetector",
}
# Which of them a worker runs by default: ``streams.settings.Settings.detectors`` (all but ``cross_consistency``).


def detector_class(name: str) -> type[Detector]:
    """A built-in name, or your own detector as ``package.module:Class`` (a :class:`Detector`)."""
    if name in REGISTRY:
        module, cls = REGISTRY[name].split(":")
        return getattr(import_module(f"{__package__}.{module}"), cls)
    if ":" in name:
        module, _, cls_name = name.partition(":")
        try:
            cls = getattr(import_module(module), cls_name)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"cannot load detector {name!r}: {type(exc).__name__}: {exc}") from None
        if not (isinstance(cls, type) and issubclass(cls, Detector)):
            raise ConfigurationError(f"{name!r} is not a Detector class")
        return cls
    raise ConfigurationError(f"unknown detector {name!r}; known: {', '.join(sorted(REGISTRY))}, or 'package.module:Class'")


def build(names: Iterable[str], options: Mapping[str, Mapping[str, Any]] | None = None) -> list[Detector]:
    """Instantiate the named detectors, in order; an unknown name or option, or two detectors
    of one name (their findings and metrics would be confused), is a :class:`ConfigurationError`.

    First it sets the process's offline defaults (:mod:`detectors.offline`), before any detector
    imports a library that reads them."""
    apply_offline_defaults()
    options = options or {}
    unknown_options = set(options) - set(REGISTRY) - set(names := list(names))
    if unknown_options:
        raise ConfigurationError(f"options given for unknown detectors: {', '.join(sorted(unknown_options))}")
    detectors = []
    for name in names:
        cls = detector_class(name)
        try:
            detectors.append(cls(**dict(options.get(name, {}))))
        except TypeError as exc:
            raise ConfigurationError(f"bad options for detector {name!r}: {exc}") from None
    twice = sorted(n for n, count in Counter(d.name for d in detectors).items() if count > 1)
    if twice:
        raise ConfigurationError(f"several detectors named {', '.join(map(repr, twice))}: each needs its own name")
    return detectors
