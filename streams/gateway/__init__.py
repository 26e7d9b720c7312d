"""The gateway deployable: an OpenAI-compatible proxy that taps every exchange and honours the kill switch.

See :mod:`streams.gateway.server`.
"""

from streams.gateway.server import Gateway, run_gateway

__all__ = ["Gateway", "run_gateway"]
