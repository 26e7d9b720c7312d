"""The policy: rules over the metrics topic, and the state machine that turns them into decisions.

``rules``  the policy file (YAML, pydantic, JSON Schema, errors that name the line)
``engine`` per rule and scope: ok -> pending -> firing -> resolved; staged-rollout decisions
The actions those decisions trip leave through ``streams.actions``.
"""
