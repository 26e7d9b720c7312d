"""streamwarden's detectors: a pure library, batches of events in, findings out.

It never imports Kafka or faust; ``streams`` runs it inside the stream processors.
"""

from .base import Detector, EventLike, Finding, Severity, finding_id
from .contracts import (
    BuildsReports,
    ExposesGauges,
    Gauge,
    KeepsWindows,
    NeedsEmbeddings,
    PublishesSamples,
    RunsInBackground,
    TextGenerator,
    capabilities,
    declared,
)
from .errors import ConfigurationError, DetectorError, StreamwardenError

__all__ = [
    "BuildsReports",
    "ConfigurationError",
    "Detector",
    "DetectorError",
    "EventLike",
    "ExposesGauges",
    "Finding",
    "Gauge",
    "KeepsWindows",
    "NeedsEmbeddings",
    "PublishesSamples",
    "RunsInBackground",
    "Severity",
    "StreamwardenError",
    "TextGenerator",
    "capabilities",
    "declared",
    "finding_id",
]
