"""The product's errors: one root, so a caller can catch everything streamwarden raises on purpose.

They live here, not in ``streams``, because the detectors (a pure library) may not import
``streams``; ``streams`` builds its own errors on :class:`StreamwardenError`.
"""

from __future__ import annotations


class StreamwardenError(Exception):
    """The root of streamwarden's errors."""


class ConfigurationError(StreamwardenError, ValueError):
    """A bad setting: an unknown detector, a bad or duplicate option or name. Still a ValueError,
    so callers that caught ValueError keep working."""


class DetectorError(StreamwardenError):
    """A detector could not score a batch (the worker isolates it from the others)."""
