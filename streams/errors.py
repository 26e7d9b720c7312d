"""The product's errors: one small hierarchy, so every command can say what went wrong in one line.

StreamwardenError                 (detectors.errors: the library raises its own part of the tree)
 +- ConfigurationError            settings, policy files, detector names and options    (also a ValueError)
 |   +- streams.policy.rules.PolicyError
 +- SchemaError                   a record or file that does not match its schema         (also a ValueError)
 +- DetectorError                 a detector that cannot run (a model missing, ...)
 +- ActionError                   an action that could not be taken or recorded (kill switch, rollout, audit log)
 +- UpstreamError                 a model endpoint or upstream that failed or answered wrongly
 +- BrokerError                   the embedded broker could not start (local tools)
"""

from __future__ import annotations

from detectors.errors import ConfigurationError, DetectorError, StreamwardenError


class SchemaError(StreamwardenError, ValueError):
    """A record or file does not match its schema."""


class ActionError(StreamwardenError):
    """An action could not be taken or recorded."""


class UpstreamError(StreamwardenError):
    """A model endpoint or another upstream failed."""


class BrokerError(StreamwardenError):
    """The embedded broker could not be started or reached."""


__all__ = [
    "ActionError",
    "BrokerError",
    "ConfigurationError",
    "DetectorError",
    "SchemaError",
    "StreamwardenError",
    "UpstreamError",
]
