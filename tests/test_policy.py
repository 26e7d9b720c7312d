"""The policy file and the state machine that turns metrics into decisions (no Kafka here)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import jsonschema
import pytest
import yaml

from streams.events.schema import LatencySummary, MetricsRecord
from streams.policy.engine import PolicyEngine
from streams.policy.rules import (
    DEFAULT_POLICY,
    POLICY_SCHEMA_FILE,
    PolicyError,
    load_policy,
    parse_policy,
    policy_json_schema,
    render_policy_schema,
)

T0 = 1_800_000_000.0


def record(
    t_end: float, events: int, *, model="m", version="v1", route="r", errors=0, findings=None, latency_ms=None, gauges=None, window=1.0
):
    lat = LatencySummary()
    for _ in range(events if latency_ms is not None else 0):
        lat.observe(latency_ms)
    return MetricsRecord(
        scope="model",
        model=model,
        model_version=version,
        route=route,
        worker_id="w",
        window_start=datetime.fromtimestamp(t_end - window, timezone.utc),
        window_end=datetime.fromtimestamp(t_end, timezone.utc),
        events=events,
        errors=errors,
        finding_severities=findings or {},
        latency=lat,
        gauges=gauges or {},
    )


def policy(rule: dict, rollouts=()):
    return parse_policy(yaml.safe_dump({"version": 1, "rules": [rule], "rollouts": list(rollouts)}))


ERROR_RULE = dict(
    name="errors",
    metric="error_rate",
    op=">",
    threshold=0.1,
    resolve_threshold=0.05,
    window_s=10,
    min_events=20,
    for_s=5,
    resolve_for_s=5,
    cooldown_s=100,
    actions=["rollback"],
)


def run(engine, seconds, per_s=10, error_share=0.0, start=T0, **kw):
    """Feed one record per second for ``seconds`` and evaluate after each; returns all decisions."""
    out = []
    for i in range(seconds):
        t = start + i
        engine.ingest(record(t, per_s, errors=round(per_s * error_share), **kw))
        out += engine.evaluate(t)
    return out


def test_default_policy_loads_matches_its_json_schema_and_the_committed_schema_is_current():
    p = load_policy()
    names = {r.name for r in p.rules}
    assert {"pii-leak", "safety-critical", "cascade-failure", "safety-incident", "error-rate", "latency-p99", "complaint-rate"} <= names
    assert {"hallucination-rate", "grounding-rate", "refusal-rate", "drift"} <= names
    jsonschema.validate(yaml.safe_load(DEFAULT_POLICY.read_text()), policy_json_schema())
    assert POLICY_SCHEMA_FILE.read_text() == render_policy_schema(), (
        "regenerate: streamwarden policy schema > streams/policy/policy.schema.json"
    )
    kill = {r.name for r in p.rules if "kill" in r.actions}
    assert kill == {"pii-leak", "safety-critical", "cascade-failure"}


def test_the_default_grounding_rule_alerts_on_a_high_share_of_ungrounded_responses_only():
    """The default policy's grounding-rate: an alert (no rollback, no kill) when more than 10% of a model
    version's events are ungrounded over 5 minutes, held 60 s; 5% does not trip it, nor do other findings."""
    rule = next(r for r in load_policy().rules if r.name == "grounding-rate")
    assert rule.actions == ["alert"] and rule.findings == ["grounding.ungrounded_response"]
    only = parse_policy(yaml.safe_dump({"version": 1, "rules": [rule.model_dump(exclude_defaults=True)]}))

    def feed(engine, seconds, start, ungrounded, other=None):
        out = []
        for i in range(seconds):  # 20 events per second: min_events (100) is met within 5 s
            findings = {"grounding.ungrounded_response": {"high": ungrounded[0], "medium": ungrounded[1]}, **(other or {})}
            engine.ingest(record(start + i, 20, findings=findings))
            out += engine.evaluate(start + i)
        return out

    quiet = PolicyEngine(only)
    # 1 in 20 ungrounded (5%), and many inconsistent responses (another detector's kind): nothing.
    assert feed(quiet, 200, T0, (1, 0), {"consistency.inconsistent_response": {"medium": 10}}) == []
    assert quiet.states[("grounding-rate", ("m", "v1", "*"))].state == "ok"

    tripped = PolicyEngine(only)
    assert feed(tripped, 10, T0, (0, 0)) == []
    # 3 in 20 (15%, high and medium severities alike): over 10% of the window from about T0+30, firing for_s (60 s) later.
    fired = feed(tripped, 150, T0 + 10, (2, 1), {"consistency.inconsistent_response": {"medium": 10}})
    assert [d.action for d in fired] == ["alert"]
    assert fired[0].evidence["value"] > 0.1 and set(fired[0].evidence["findings"]) == {"grounding.ungrounded_response"}
    assert fired[0].decided_at.timestamp() >= T0 + 30 + 60


def test_errors_name_the_line_and_the_field():
    text = "version: 1\nrules:\n  - name: ok\n    metric: error_rate\n    op: '>'\n    threshold: 0.1\n    actions: [alert]\n  - name: bad\n    metric: error_rate\n    op: '=>'\n    threshold: lots\n    actions: [explode]\n"
    with pytest.raises(PolicyError) as e:
        parse_policy(text, "p.yaml")
    msg = str(e.value)
    assert "p.yaml:10: rules.1.op" in msg
    assert "p.yaml:11: rules.1.threshold" in msg
    assert "p.yaml:12: rules.1.actions.0" in msg
    with pytest.raises(PolicyError, match=r"p.yaml:3: not valid YAML"):
        parse_policy("rules:\n  - name: [\n  oops: }\n", "p.yaml")
    with pytest.raises(PolicyError, match="needs 'findings'"):
        policy(dict(name="f", metric="finding_rate", op=">", threshold=0.1, actions=["alert"]))
    with pytest.raises(PolicyError, match="safe side"):
        policy({**ERROR_RULE, "resolve_threshold": 0.2})


def test_a_sustained_breach_fires_once_with_every_action_and_a_deterministic_id():
    engine = PolicyEngine(policy(ERROR_RULE))
    quiet = run(engine, 15)
    assert quiet == []
    decisions = run(engine, 20, error_share=0.5, start=T0 + 15)
    assert [d.action for d in decisions] == ["rollback", "alert"]
    assert decisions[0].episode_id == decisions[1].episode_id
    assert decisions[0].evidence["value"] > 0.1 and decisions[0].evidence["events"] >= 20
    # The breach began at T0+15 (first breaching evaluation) and fired for_s later, not before.
    assert decisions[0].decided_at.timestamp() >= T0 + 15 + 5
    again = PolicyEngine(policy(ERROR_RULE))
    run(again, 15)
    assert [d.action_id for d in run(again, 20, error_share=0.5, start=T0 + 15)] == [d.action_id for d in decisions]


def test_a_breach_shorter_than_for_and_too_few_events_do_not_fire():
    engine = PolicyEngine(policy({**ERROR_RULE, "window_s": 3, "for_s": 8}))
    run(engine, 10)
    short = run(engine, 3, error_share=1.0, start=T0 + 10)  # errors for 3 s: the 3 s window breaches for ~6 s < for_s
    after = run(engine, 20, start=T0 + 13)
    assert short == [] and after == []
    st = engine.states[("errors", ("m", "v1", "*"))]
    assert st.state == "ok"
    few = PolicyEngine(policy(ERROR_RULE))
    assert run(few, 30, per_s=1, error_share=1.0) == []  # 10 events per window < min_events 20


def test_hysteresis_holds_between_the_thresholds_and_resolution_needs_resolve_for():
    engine = PolicyEngine(policy(ERROR_RULE))
    fired = run(engine, 20, per_s=20, error_share=0.5)
    assert [d.action for d in fired] == ["rollback", "alert"]
    # 8% errors: under the threshold (10%) but above resolve_threshold (5%): still firing.
    held = run(engine, 30, per_s=100, error_share=0.08, start=T0 + 20)
    assert held == [] and engine.states[("errors", ("m", "v1", "*"))].state == "firing"
    resolved = run(engine, 30, per_s=100, error_share=0.0, start=T0 + 50)
    assert [d.action for d in resolved] == ["resolve"]
    assert resolved[0].episode_id == fired[0].episode_id


def test_cool_down_spaces_two_firings_of_the_same_rule():
    engine = PolicyEngine(policy({**ERROR_RULE, "cooldown_s": 60}))
    first = run(engine, 15, per_s=20, error_share=0.5)
    run(engine, 25, per_s=20, start=T0 + 15)  # resolves
    second = run(engine, 20, per_s=20, error_share=0.5, start=T0 + 40)
    assert second == []  # breached again 35 s after the first firing: held by the cool-down
    assert engine.states[("errors", ("m", "v1", "*"))].state == "pending"
    third = run(engine, 10, per_s=20, error_share=0.5, start=T0 + 60)
    assert [d.action for d in third] == ["rollback", "alert"]
    assert third[0].decided_at.timestamp() - first[0].decided_at.timestamp() >= 60
    assert third[0].action_id != first[0].action_id


def test_a_restored_engine_does_not_repeat_what_the_log_says_it_did():
    engine = PolicyEngine(policy(ERROR_RULE))
    fired = run(engine, 20, per_s=20, error_share=0.5)
    restarted = PolicyEngine(policy(ERROR_RULE))
    restarted.restore(fired)
    assert run(restarted, 20, per_s=20, error_share=0.5, start=T0 + 20) == []
    resolved = run(restarted, 30, per_s=20, start=T0 + 40)
    assert [d.action for d in resolved] == ["resolve"] and resolved[0].episode_id == fired[0].episode_id


def test_findings_gauges_latency_and_routes():
    pii = dict(
        name="pii",
        metric="finding_count",
        findings=["pii.pii_leak"],
        min_severity="high",
        op=">=",
        threshold=1,
        window_s=10,
        actions=["kill"],
        fallback="model:small",
    )
    engine = PolicyEngine(policy(pii))
    assert run(engine, 5, findings={"pii.pii_echo": {"low": 3}, "pii.pii_leak": {"medium": 2}}) == []
    out = run(engine, 1, findings={"pii.pii_leak": {"critical": 1}}, start=T0 + 5)
    assert [d.action for d in out] == ["kill", "alert"] and out[0].fallback == "model:small"
    assert out[0].evidence["findings"] == {"pii.pii_leak": 1}

    gauge = dict(name="drift", metric="gauge", gauge="drift_p_value{field=*}", op="<", threshold=0.01, window_s=10, actions=["alert"])
    engine = PolicyEngine(policy(gauge))
    assert run(engine, 3, gauges={"drift_p_value{field=prompt}": 0.4}) == []
    out = run(engine, 1, gauges={"drift_p_value{field=prompt}": 0.3, "drift_p_value{field=response}": 0.001}, start=T0 + 3)
    assert out and out[0].evidence["gauge"] == "drift_p_value{field=response}"

    lat = dict(
        name="p99",
        metric="latency_p99_ms",
        op=">",
        threshold=5000,
        window_s=10,
        min_events=10,
        scope={"route": "chat*", "per_route": True},
        actions=["alert"],
    )
    engine = PolicyEngine(policy(lat))
    engine.ingest(record(T0, 50, route="chat-eu", latency_ms=8000))
    engine.ingest(record(T0, 50, route="chat-us", latency_ms=300))
    engine.ingest(record(T0, 50, route="batch", latency_ms=9000))
    out = engine.evaluate(T0)
    assert [(d.route, d.evidence["value"]) for d in out] == [("chat-eu", 10000)]


def test_staged_rollout_publishes_should_rollback_or_should_advance_once():
    rollouts = [
        {"model": "m", "version": "v2", "stage": "10%", "previous_version": "v1", "advance_min_events": 100, "advance_after_s": 20},
        {"model": "m", "version": "v3", "stage": "1%", "previous_version": "v2", "advance_min_events": 100, "advance_after_s": 20},
    ]
    engine = PolicyEngine(policy(ERROR_RULE, rollouts))
    out = []
    for i in range(40):
        t = T0 + i
        engine.ingest(record(t, 20, version="v2", errors=10 if i > 10 else 0))
        engine.ingest(record(t, 20, version="v3"))
        out += engine.evaluate(t)
    by = {(d.action, d.model_version): d for d in out}
    assert by[("rollback", "v2")].to_version == "v1" and by[("rollback", "v2")].stage == "10%"
    assert by[("should_rollback", "v2")].to_version == "v1"
    assert by[("should_advance", "v3")].to_version == "10%"
    assert ("should_advance", "v2") not in by
    assert sum(1 for d in out if d.action.startswith("should_")) == 2
    restored = PolicyEngine(policy(ERROR_RULE, rollouts))
    restored.restore(out)
    later = []
    for i in range(40, 60):
        restored.ingest(record(T0 + i, 20, version="v3"))
        later += restored.evaluate(T0 + i)
    assert [d for d in later if d.action.startswith("should_")] == []


def test_policy_records_and_evidence_are_json():
    engine = PolicyEngine(policy(ERROR_RULE))
    fired = run(engine, 20, per_s=20, error_share=0.5)
    for d in fired:
        assert json.loads(d.model_dump_json())["action_id"] == d.action_id


def test_a_new_rollout_stage_gets_its_own_decisions():
    rollouts = [{"model": "m", "version": "v2", "stage": "1%", "previous_version": "v1", "advance_min_events": 50, "advance_after_s": 10}]
    engine = PolicyEngine(policy(ERROR_RULE, rollouts))
    first = run(engine, 15, version="v2")
    assert [(d.action, d.stage, d.to_version) for d in first] == [("should_advance", "1%", "10%")]
    engine.set_rollout("m", "v2", "10%")  # the controller promoted it
    second = run(engine, 15, version="v2", start=T0 + 15)
    assert [(d.action, d.stage, d.to_version) for d in second] == [("should_advance", "10%", "100%")]
    assert engine.policy.rollout_of("m", "v2").previous_version == "v1"  # kept from the file
    with pytest.raises(ValueError):
        engine.set_rollout("m", "v2", "50%")  # not one of its stages


def test_the_agent_exports_one_rule_series_per_route():
    from streams.actions.agent import PolicyAgent
    from streams.settings import Settings

    per_route = dict(name="errors", metric="error_rate", op=">", threshold=0.9, window_s=10, scope={"per_route": True}, actions=["alert"])
    summed = dict(ERROR_RULE, threshold=0.9)
    agent = PolicyAgent(Settings(), parse_policy(yaml.safe_dump({"version": 1, "rules": [per_route, dict(summed, name="all-errors")]})))
    agent.engine.ingest(record(T0, 10, route="chat", errors=2))
    agent.engine.ingest(record(T0, 10, route="batch", errors=6))
    assert agent.step(prod=None, now=T0) == []
    value = agent.metrics.registry.get_sample_value
    labels = dict(rule="errors", model="m", model_version="v1")
    assert value("streamwarden_policy_rule_value", {**labels, "route": "chat"}) == 0.2
    assert value("streamwarden_policy_rule_value", {**labels, "route": "batch"}) == 0.6
    assert value("streamwarden_policy_rule_state", {**labels, "route": "batch"}) == 0
    # A rule that sums the routes has one series, with an empty route.
    assert value("streamwarden_policy_rule_value", {**labels, "rule": "all-errors", "route": ""}) == 0.4


def test_a_rollout_stage_must_be_one_the_rollout_declares():
    from streams.policy.rules import check_rollout_stage

    declared = parse_policy(
        yaml.safe_dump(
            {"version": 1, "rollouts": [{"model": "m", "version": "v2", "stage": "canary", "stages": ["canary", "half", "all"]}]}
        )
    )
    check_rollout_stage(declared, "m", "v2", "half")
    with pytest.raises(ValueError, match="canary, half, all"):
        check_rollout_stage(declared, "m", "v2", "10%")  # a default stage, but not one of this rollout's
    # A model version the policy declares no rollout for takes the default stages (as the agent does).
    check_rollout_stage(declared, "m", "v3", "10%")
    with pytest.raises(ValueError, match=r"internal, 1%, 10%, 100%"):
        check_rollout_stage(declared, "m", "v3", "50%")
    with pytest.raises(ValueError):
        check_rollout_stage(load_policy(), "m", "v3", "")


def test_a_finding_rate_of_one_detector_divides_by_the_events_it_judged():
    """toxicity's ration under load leaves events unjudged: the toxic-rate is over the judged ones (a sample), and
    min_events counts judged events. A rule spanning detectors still divides by every event."""
    toxic = next(r for r in load_policy().rules if r.name == "toxic-rate")
    assert toxic.judged_by == "toxicity"
    only = parse_policy(yaml.safe_dump({"version": 1, "rules": [toxic.model_dump(exclude_defaults=True)]}))

    def feed(engine, seconds, unjudged):
        out = []
        for i in range(seconds):  # 20 events a second, one toxic finding every second
            rec = record(T0 + i, 20, findings={"toxicity.toxic_response": {"high": 1}})
            rec.unjudged = {"toxicity": unjudged, "grounding": 20}
            engine.ingest(rec)
            out += engine.evaluate(T0 + i)
        return out

    # Every event judged: 1 in 20 (5% > 2%) rolls back.
    assert "rollback" in [d.action for d in feed(PolicyEngine(only), 150, 0)]
    # 10 of 20 left unjudged: 1 in 10 judged (10%); over every event it would read 5% all the same, so check the value.
    sampled = PolicyEngine(only)
    fired = [d for d in feed(sampled, 150, 10) if d.action == "rollback"]
    assert fired and fired[0].evidence["value"] == 0.1 and fired[0].evidence["judged_events"] * 2 == fired[0].evidence["events"]
    # All unjudged (the detector failed on every batch): no value, never a breach, never a recovery read from nothing.
    blind = PolicyEngine(only)
    assert feed(blind, 150, 20) == [] and blind.states[("toxic-rate", ("m", "v1", "*"))].value is None
    spanning = parse_policy(
        yaml.safe_dump(
            {
                "version": 1,
                "rules": [
                    {**ERROR_RULE, "name": "any", "metric": "finding_rate", "findings": ["toxicity.*", "grounding.*"], "threshold": 0.5}
                ],
            }
        )
    )
    assert spanning.rules[0].judged_by is None


def test_the_default_grounding_rate_is_a_share_of_the_rag_answers():
    """grounding leaves the events without context unjudged: 1 ungrounded answer in 5 RAG answers (20%) alerts
    even where RAG answers are a quarter of the traffic (5% of every event, under the 10% threshold)."""
    rule = next(r for r in load_policy().rules if r.name == "grounding-rate")
    assert rule.judged_by == "grounding"
    only = parse_policy(yaml.safe_dump({"version": 1, "rules": [rule.model_dump(exclude_defaults=True)]}))
    engine, out = PolicyEngine(only), []
    for i in range(150):
        rec = record(T0 + i, 20, findings={"grounding.ungrounded_response": {"medium": 1}})
        rec.unjudged = {"grounding": 15}
        engine.ingest(rec)
        out += engine.evaluate(T0 + i)
    assert [d.action for d in out] == ["alert"] and out[0].evidence["value"] == 0.2


def test_the_agent_reads_a_newer_workers_metrics_and_refuses_another_schema_version(caplog):
    """Fields a later release adds are ignored (and named once in the log), so agents and workers upgrade in either
    order; a record of another schema_version, or not an object, is refused and counted."""
    from streams.actions.agent import PolicyAgent
    from streams.settings import Settings

    agent = PolicyAgent(Settings(), policy(ERROR_RULE))
    newer = json.loads(record(T0, 10, errors=3).model_dump_json())
    newer["judged_by_region"] = {"eu": 4}  # fields this release does not know, at the top and in a nested model
    newer["latency"]["p999_ms"] = 812
    with caplog.at_level("WARNING", logger="streams.actions.agent"):
        agent._ingest(json.dumps(newer).encode())
        agent._ingest(json.dumps(newer).encode())
    value = agent.metrics.registry.get_sample_value
    assert value("streamwarden_policy_metrics_records_total") == 2 and value("streamwarden_policy_bad_records_total") == 0
    assert [(r.getMessage().count("judged_by_region"), r.getMessage().count("latency.p999_ms")) for r in caplog.records] == [(1, 1)]
    agent.step(prod=None, now=T0)
    assert value("streamwarden_policy_rule_value", dict(rule="errors", model="m", model_version="v1", route="")) == 0.3
    for bad in (dict(newer, schema_version=2), [newer], dict(newer, events="many")):
        agent._ingest(json.dumps(bad).encode())
    agent._ingest(b"[" * 100_000)  # deeper than the JSON parser goes: refused, the agent goes on
    agent._ingest(b"\xff\xfe")
    assert value("streamwarden_policy_bad_records_total") == 5
    with pytest.raises(ValueError, match="extra"):  # writers stay strict
        MetricsRecord(**newer)
