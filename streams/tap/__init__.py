"""The tap: the library a production service uses to send every prompt/response to Kafka.

This is where events enter the monitor (besides the gateway, which uses it, and
``streamwarden tap replay``). See :class:`~streams.tap.client.Tap`.
"""

from streams.tap.client import Tap, TapStats

__all__ = ["Tap", "TapStats"]
