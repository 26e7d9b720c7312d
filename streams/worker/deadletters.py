"""What the worker writes to the dead-letter topic: the reason in headers, the body redacted and bounded.

``deadletter_payload: redacted`` (the default) masks every PII value and secret in the body,
so the monitor keeps no personal data at rest; ``original`` keeps the exact bytes. Either way
a body too large for the producer is truncated, and the headers say so and give its size. A
redacted OTLP protobuf record is written as OTLP/JSON text (header ``payload_format``), masked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from detectors.base import Detector
from streams.otlp.decode import render_text
from streams.settings import Settings
from streams.worker.pipeline import DeadLetter, fit_dead_letter

if TYPE_CHECKING:  # presidio loads only when a dead letter is redacted
    from detectors.pii import PIILeakDetector


class DeadLetterWriter:
    def __init__(self, settings: Settings, detectors: Sequence[Detector], max_message_bytes: int, otlp_topic: str | None = None):
        self.redacted = settings.deadletter_payload == "redacted"
        self.otlp_topic = otlp_topic
        self.otlp_encoding = settings.otlp_encoding
        self.max_message_bytes = max_message_bytes
        self._detectors = detectors
        self._redactor: PIILeakDetector | None = None

    def prepare(self, dead: DeadLetter, worker_id: str) -> tuple[bytes | None, list[tuple[str, bytes]]]:
        """The (value, headers) to produce for ``dead``."""
        value, headers = dead.record.value, dead.headers(worker_id)
        if self.redacted:
            text = None
            if value and self.otlp_topic is not None and dead.record.topic == self.otlp_topic:
                text = render_text(value, self.otlp_encoding)
                headers.append(("streamwarden.dlq.payload_format", b"otlp_json" if text.startswith("{") else b"text"))
            value = self._redact(value, text)
            headers.append(("streamwarden.dlq.payload", b"redacted"))
        return fit_dead_letter(value, headers, self.max_message_bytes, key=dead.record.key)

    def _redact(self, value: bytes | None, text: str | None = None) -> bytes | None:
        if not value:
            return value
        if self._redactor is None:
            from detectors.pii import PIILeakDetector

            # The configured PII detector when there is one (its recognizers), else a default one.
            self._redactor = next((d for d in self._detectors if isinstance(d, PIILeakDetector)), None) or PIILeakDetector()
        return self._redactor.redact(value.decode("utf-8", "replace") if text is None else text).encode("utf-8")
