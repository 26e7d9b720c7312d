"""OpenTelemetry in: the GenAI spans that applications already emit, as inference events.

``decode``    OTLP traces (``ExportTraceServiceRequest``, protobuf or OTLP/JSON) -> the
              :class:`~streams.events.schema.InferenceEvent` of each GenAI span; the worker
              decodes the OTLP topic with it, the receiver checks requests with it
``receiver``  ``streamwarden otlp receive``: an OTLP/HTTP endpoint (``POST /v1/traces``) for
              services without a Collector; it writes the GenAI spans to the OTLP topic
"""

from streams.otlp.decode import OUTCOMES, DecodeOptions, OTLPDecoder, OTLPPayloadError

__all__ = ["OUTCOMES", "DecodeOptions", "OTLPDecoder", "OTLPPayloadError"]
