"""Alert rules generated from the policy: valid for promtool, and they fire (or not) as the policy says."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from streams.policy.prometheus_rules import render_prometheus_rules
from streams.policy.rules import load_policy

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "dashboards" / "prometheus" / "streamwarden-policy.rules.yml"


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: apt-get install prometheus (make test installs it)"
    return found


def test_committed_rules_are_what_the_default_policy_generates_and_promtool_accepts_them():
    assert COMMITTED.read_text() == render_prometheus_rules(load_policy()), (
        "regenerate: streamwarden policy prometheus-rules --out dashboards/prometheus/streamwarden-policy.rules.yml"
    )
    p = subprocess.run([promtool(), "check", "rules", str(COMMITTED)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"SUCCESS: {len(load_policy().rules)} rules found" in p.stdout  # one alerting rule per policy rule


def promtool_test(tmp_path, input_series: list[dict], alert_rule_test: list[dict]) -> None:
    """Run ``promtool test rules`` on the default policy's generated rules, 15 s steps."""
    run_promtool_tests(tmp_path, render_prometheus_rules(load_policy()), input_series, alert_rule_test)


def run_promtool_tests(tmp_path, rules_text: str, input_series: list[dict], alert_rule_test: list[dict]) -> None:
    """``promtool test rules`` on the rule file ``rules_text``, 15 s steps; fails with promtool's report."""
    rules = tmp_path / "rules.yml"
    rules.write_text(rules_text)
    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "15s",
        "tests": [{"interval": "15s", "input_series": input_series, "alert_rule_test": alert_rule_test}],
    }
    path = tmp_path / "tests.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    p = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_generated_rules_fire_on_a_leak_and_hold_without_enough_events(tmp_path):
    lbl = 'model="support", model_version="v7"'
    promtool_test(
        tmp_path,
        input_series=[
            # 40 events per 15 s; a PII leak counter that appears at 1m (its first sample counts too).
            {"series": f"streamwarden_events_total{{{lbl}}}", "values": "0+40x20"},
            {"series": f'streamwarden_findings_total{{{lbl}, detector="pii", kind="pii_leak", severity="high"}}', "values": "_x4 1x16"},
            # Another model: 60% errors but only 2 events per 15 s, fewer than cascade-failure's min_events (20 per 60 s).
            {"series": 'streamwarden_events_total{model="tiny", model_version="1"}', "values": "0+2x20"},
            {"series": 'streamwarden_model_errors_total{model="tiny", model_version="1"}', "values": "0+1.2x20"},
        ],
        alert_rule_test=[
            {"eval_time": "30s", "alertname": "streamwarden:pii-leak", "exp_alerts": []},
            {
                "eval_time": "75s",
                "alertname": "streamwarden:pii-leak",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "model": "support",
                            "model_version": "v7",
                            "severity": "critical",
                            "rule": "pii-leak",
                            "route": "*",
                            "source": "streamwarden",
                        },
                        "exp_annotations": {
                            "summary": "pii-leak on support v7",
                            "description": "The model disclosed personal data or a secret the user did not give it. finding_count >= 1 over 60s (value 1); the policy agent's actions: kill.",
                            "dashboard": "http://localhost:3000/d/streamwarden-overview/streamwarden-overview?var-model=support&var-model_version=v7",
                        },
                    }
                ],
            },
            {"eval_time": "4m", "alertname": "streamwarden:pii-leak", "exp_alerts": []},
            {"eval_time": "4m", "alertname": "streamwarden:cascade-failure", "exp_alerts": []},
        ],
    )


def test_a_breach_of_cascade_failure_with_enough_events_fires_after_for(tmp_path):
    lbl = 'model="m", model_version="1"'
    promtool_test(
        tmp_path,
        input_series=[
            {"series": f"streamwarden_events_total{{{lbl}}}", "values": "0+20x40"},
            {"series": f"streamwarden_model_errors_total{{{lbl}}}", "values": "0+0x8 0+18x32"},
        ],
        alert_rule_test=[
            {"eval_time": "2m30s", "alertname": "streamwarden:cascade-failure", "exp_alerts": []},  # pending (for: 30s)
            {
                "eval_time": "4m",
                "alertname": "streamwarden:cascade-failure",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "model": "m",
                            "model_version": "1",
                            "severity": "critical",
                            "rule": "cascade-failure",
                            "route": "*",
                            "source": "streamwarden",
                        },
                        "exp_annotations": {
                            "summary": "cascade-failure on m 1",
                            "description": "More than half of the requests fail. error_rate > 0.5 over 60s (value 0.9); the policy agent's actions: kill.",
                            "dashboard": "http://localhost:3000/d/streamwarden-overview/streamwarden-overview?var-model=m&var-model_version=1",
                        },
                    }
                ],
            },
        ],
    )


def test_the_grounding_rule_fires_on_a_high_share_of_ungrounded_responses_and_not_on_a_low_one(tmp_path):
    rag, fine = 'model="rag", model_version="2"', 'model="fine", model_version="1"'
    promtool_test(
        tmp_path,
        input_series=[
            # 40 events per 15 s each. rag: 6 ungrounded per 15 s (15%, high and medium severities together).
            {"series": f"streamwarden_events_total{{{rag}}}", "values": "0+40x24"},
            {
                "series": f'streamwarden_findings_total{{{rag}, detector="grounding", kind="ungrounded_response", severity="high"}}',
                "values": "0+4x24",
            },
            {
                "series": f'streamwarden_findings_total{{{rag}, detector="grounding", kind="ungrounded_response", severity="medium"}}',
                "values": "0+2x24",
            },
            # fine: 2 ungrounded per 15 s (5%), and inconsistent responses (another rule's findings) at 15%.
            {"series": f"streamwarden_events_total{{{fine}}}", "values": "0+40x24"},
            {
                "series": f'streamwarden_findings_total{{{fine}, detector="grounding", kind="ungrounded_response", severity="high"}}',
                "values": "0+2x24",
            },
            {
                "series": f'streamwarden_findings_total{{{fine}, detector="consistency", kind="inconsistent_response", severity="medium"}}',
                "values": "0+6x24",
            },
        ],
        alert_rule_test=[
            # 100 events by 45 s (min_events), then for: 60s.
            {"eval_time": "1m", "alertname": "streamwarden:grounding-rate", "exp_alerts": []},
            {
                "eval_time": "3m",
                "alertname": "streamwarden:grounding-rate",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "model": "rag",
                            "model_version": "2",
                            "severity": "warning",
                            "rule": "grounding-rate",
                            "route": "*",
                            "source": "streamwarden",
                        },
                        "exp_annotations": {
                            "summary": "grounding-rate on rag 2",
                            "description": "Many responses say what their context documents do not (RAG answers that contradict or ignore them). finding_rate > 0.1 over 300s (value 0.15); the policy agent's actions: alert.",
                            "dashboard": "http://localhost:3000/d/streamwarden-overview/streamwarden-overview?var-model=rag&var-model_version=2",
                        },
                    }
                ],
            },
        ],
    )


def test_the_toxic_rate_divides_by_the_events_toxicity_judged(tmp_path):
    # Under load toxicity's ration leaves most events unjudged: the rate is over the ones it judged (a sample),
    # not diluted by the others. canary: 200 events per 15 s, 180 unjudged, 1 toxic finding: 5% of the judged
    # (0.5% of all, which would stay silent); steady: the same findings over every event judged, 0.5%.
    from streams.policy.prometheus_rules import prometheus_rules

    canary, steady = 'model="chat", model_version="canary"', 'model="chat", model_version="steady"'
    finding = 'detector="toxicity", kind="toxic_response", severity="high"'
    promtool_test(
        tmp_path,
        input_series=[
            {"series": f"streamwarden_events_total{{{canary}}}", "values": "0+200x24"},
            {"series": f'streamwarden_unjudged_events_total{{{canary}, detector="toxicity"}}', "values": "0+180x24"},
            {"series": f"streamwarden_findings_total{{{canary}, {finding}}}", "values": "0+1x24"},
            {"series": f"streamwarden_events_total{{{steady}}}", "values": "0+200x24"},
            {"series": f"streamwarden_findings_total{{{steady}, {finding}}}", "values": "0+1x24"},
        ],
        alert_rule_test=[
            # 200 judged events (min_events) by 150 s, then for: 60s.
            {"eval_time": "2m", "alertname": "streamwarden:toxic-rate", "exp_alerts": []},
            {
                "eval_time": "5m",
                "alertname": "streamwarden:toxic-rate",
                "exp_alerts": [_expected_alert(prometheus_rules, "toxic-rate", "chat", "canary", "0.05")],
            },
        ],
    )


def _expected_alert(render, rule_name: str, model: str, version: str, value: str) -> dict:
    (alert,) = [a for a in render(load_policy())["groups"][0]["rules"] if a["alert"] == f"streamwarden:{rule_name}"]

    def fill(text: str) -> str:
        return text.replace("{{ $labels.model }}", model).replace("{{ $labels.model_version }}", version).replace("{{ $value }}", value)

    return {
        "exp_labels": {"model": model, "model_version": version, **alert["labels"]},
        "exp_annotations": {k: fill(v) for k, v in alert["annotations"].items()},
    }
