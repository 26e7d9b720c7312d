"""streamwarden's stream side: event schema, topics, the tap, the faust worker, the CLI.

Events enter through :mod:`streams.tap` (or ``streamwarden tap replay``) into the
inference topic; :mod:`streams.app` consumes them and runs :mod:`detectors`.
"""

__version__ = "0.1.0"
