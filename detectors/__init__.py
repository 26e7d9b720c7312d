"""streamwarden's detectors: a pure library, batches of events in, findings out.

It never imports Kafka or faust; ``streams`` runs it inside the stream processors.
"""

from .base import Detector, EventLike, Finding, Severity, finding_id
from .errors import ConfigurationError, DetectorError, StreamwardenError

__all__ = [
    "ConfigurationError",
    "Detector",
    "DetectorError",
    "EventLike",
    "Finding",
    "Severity",
    "StreamwardenError",
    "finding_id",
]
