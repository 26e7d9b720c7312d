"""The event model and the topics: what every deployable reads and writes.

``schema``  InferenceEvent (what the tap sends), MetricsRecord, ActionRecord, KillSwitchState
``topics``  the topic names and specs, creating them, producing to them
"""
