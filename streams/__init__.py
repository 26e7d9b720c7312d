"""streamwarden's stream side: everything that touches Kafka, one package per deployable.

An event enters through :mod:`streams.tap` (a service's library), :mod:`streams.gateway`
or ``streamwarden tap replay`` into the inference topic; :mod:`streams.worker` consumes it
and runs :mod:`detectors`; :mod:`streams.policy` and :mod:`streams.actions` turn the
metrics into decisions, and the actions leave from there. :mod:`streams.events` is the
event model and the topics, :mod:`streams.kafka_clients` builds every Kafka client,
:mod:`streams.local` holds the local-only tools and :mod:`streams.cli` the command line.
"""

__version__ = "0.1.0"
