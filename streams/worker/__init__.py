"""The worker deployable: the faust stream processor that runs the detectors.

``app``        the faust app: agents, timers, publishing (:class:`Worker`)
``pipeline``   one micro-batch, free of Kafka: decode, dead letters, every detector isolated
``commits``    metrics count a batch once faust has committed its offsets (the app's faust Monitor)
``metrics``    windowed records for the metrics topic, Prometheus series
``deadletters`` the dead-letter body: redacted and bounded
``drift_wire`` drift samples between workers
``sampler``    re-asking the model for self-consistency samples (``model_client``)
``web``        /metrics, /healthz, reports
"""
