"""The monitor's own health alerts (dashboards/prometheus/streamwarden-health.rules.yml): valid for promtool, loaded by
the compose stack's Prometheus, and each fires when streamwarden stops watching or acting, and not otherwise."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from .test_prometheus_rules import promtool, run_promtool_tests

ROOT = Path(__file__).resolve().parent.parent
HEALTH = ROOT / "dashboards" / "prometheus" / "streamwarden-health.rules.yml"
ALERTS = {
    "streamwarden:no-worker-up",
    "streamwarden:worker-down",
    "streamwarden:policy-agent-down",
    "streamwarden:detector-failing",
    "streamwarden:falling-behind",
    "streamwarden:worker-stalled",
    "streamwarden:dead-letters",
    "streamwarden:references-not-persisted",
}
W1, W2 = 'job="streamwarden-worker", instance="w1:6066"', 'job="streamwarden-worker", instance="w2:6066"'
POLICY = 'job="streamwarden-policy", instance="policy:6067"'
LAG = 'streamwarden_consumer_lag_records{topic="inference", partition="%d", instance="%s"}'


def health_test(tmp_path, input_series: list[dict], alert_rule_test: list[dict]) -> None:
    """``promtool test rules`` on the health rules, 15 s steps. promtool compares annotations too; these tests are
    about when each alert fires and with which labels, so they run on a copy without the annotations."""
    spec = yaml.safe_load(HEALTH.read_text())
    for rule in spec["groups"][0]["rules"]:
        rule.pop("annotations", None)
    run_promtool_tests(tmp_path, yaml.safe_dump(spec, sort_keys=False), input_series, alert_rule_test)


def firing(alert: str, at: str, *labels: dict) -> dict:
    return {"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": lbl} for lbl in labels]}


def test_the_rules_are_valid_and_the_compose_prometheus_loads_them():
    p = subprocess.run([promtool(), "check", "rules", str(HEALTH)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in p.stdout
    rules = yaml.safe_load(HEALTH.read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == ALERTS
    assert all(r["labels"]["source"] == "streamwarden-health" and r["annotations"]["description"] for r in rules)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = dict(v.split(":")[:2][::-1] for v in compose["services"]["prometheus"]["volumes"] if v.startswith("./"))
    assert mounts["/etc/prometheus/rules/streamwarden-health.rules.yml"] == "./dashboards/prometheus/streamwarden-health.rules.yml"
    # The jobs the rules name are the ones the stack's Prometheus scrapes.
    config = yaml.safe_load((ROOT / "dashboards" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"streamwarden-worker", "streamwarden-policy"} <= jobs
    assert "/etc/prometheus/rules/*.rules.yml" in config["rule_files"]


def test_a_worker_down_warns_and_no_worker_up_is_critical(tmp_path):
    health_test(
        tmp_path,
        input_series=[
            # w1 stays up; w2 goes down at 1m. The policy agent is up throughout.
            {"series": f"up{{{W1}}}", "values": "1x20"},
            {"series": f"up{{{W2}}}", "values": "1x3 0x16"},
            {"series": f"up{{{POLICY}}}", "values": "1x20"},
        ],
        alert_rule_test=[
            firing("streamwarden:worker-down", "2m"),  # down for 1m: not yet (for: 2m)
            firing(
                "streamwarden:worker-down",
                "4m",
                {"severity": "warning", "source": "streamwarden-health", "job": "streamwarden-worker", "instance": "w2:6066"},
            ),
            firing("streamwarden:no-worker-up", "4m"),  # w1 still watches the traffic
            firing("streamwarden:policy-agent-down", "4m"),
        ],
    )
    health_test(
        tmp_path,
        input_series=[
            {"series": f"up{{{W1}}}", "values": "1x3 0x16"},  # the last worker goes down at 1m
            {"series": f"up{{{POLICY}}}", "values": "1x3 0x16"},  # and so does the policy agent
        ],
        alert_rule_test=[
            firing("streamwarden:no-worker-up", "4m", {"severity": "critical", "source": "streamwarden-health"}),
            firing("streamwarden:policy-agent-down", "4m", {"severity": "critical", "source": "streamwarden-health"}),
        ],
    )
    # Never scraped at all (a stack without workers): absent is down too.
    health_test(
        tmp_path,
        input_series=[{"series": f"up{{{POLICY}}}", "values": "1x20"}],
        alert_rule_test=[firing("streamwarden:no-worker-up", "3m", {"severity": "critical", "source": "streamwarden-health"})],
    )


def test_a_detector_that_keeps_failing_warns_and_one_failure_does_not(tmp_path):
    health_test(
        tmp_path,
        input_series=[
            # toxicity raises on a batch every 15 s from the start; pii failed once at 1m, then never again; drift's
            # own thread fails a run every 6 minutes (its tests are rare under light traffic). Every series exists
            # at 0 from the start: the worker creates them for its detectors, so a first error is an increase too.
            {"series": 'streamwarden_detector_errors_total{detector="toxicity", instance="w1:6066"}', "values": "0+1x80"},
            {"series": 'streamwarden_detector_errors_total{detector="pii", instance="w1:6066"}', "values": "0x3 1x76"},
            {"series": 'streamwarden_detector_errors_total{detector="drift", instance="w1:6066"}', "values": "0x23 1x23 2x23 3x23 4x8"},
        ],
        alert_rule_test=[
            firing("streamwarden:detector-failing", "4m"),  # failing, but not yet for 5 minutes
            # pii's one failure 9 minutes ago, and drift's first, are not a detector that keeps failing.
            firing(
                "streamwarden:detector-failing", "10m", {"severity": "warning", "source": "streamwarden-health", "detector": "toxicity"}
            ),
            firing(
                "streamwarden:detector-failing",
                "19m",
                {"severity": "warning", "source": "streamwarden-health", "detector": "toxicity"},
                {"severity": "warning", "source": "streamwarden-health", "detector": "drift"},
            ),
        ],
    )


def test_a_growing_backlog_warns_and_a_large_but_shrinking_one_does_not(tmp_path):
    health_test(
        tmp_path,
        input_series=[
            # Two partitions growing by 300 records per 15 s from 20,000 each.
            {"series": LAG % (0, "w1:6066"), "values": "20000+300x80"},
            {"series": LAG % (1, "w1:6066"), "values": "20000+300x80"},
        ],
        alert_rule_test=[firing("streamwarden:falling-behind", "15m", {"severity": "warning", "source": "streamwarden-health"})],
    )
    health_test(
        tmp_path,
        input_series=[
            # Large, but the workers are working it off; and a small backlog that grows does not page either.
            {"series": LAG % (0, "w1:6066"), "values": "60000-300x80"},
            {"series": LAG % (1, "w1:6066"), "values": "10+1x80"},
        ],
        alert_rule_test=[firing("streamwarden:falling-behind", "15m")],
    )


def test_a_partition_reported_by_two_workers_is_counted_once(tmp_path):
    # After a rebalance both the old and the new owner may report a partition for a while: the backlog is
    # counted by partition (the largest report), not summed over workers.
    health_test(
        tmp_path,
        input_series=[
            {"series": LAG % (0, "w1:6066"), "values": "6000+10x80"},
            {"series": LAG % (0, "w2:6066"), "values": "6000+10x80"},
        ],
        alert_rule_test=[firing("streamwarden:falling-behind", "15m")],
    )


def test_a_worker_that_finishes_no_batch_while_records_wait_warns(tmp_path):
    health_test(
        tmp_path,
        input_series=[
            # w1's batch count stops at 2m with 50,000 records waiting: its lag gauge freezes (it is set per batch).
            {"series": LAG % (0, "w1:6066"), "values": "100x8 50000x72"},
            {"series": 'streamwarden_batch_duration_seconds_count{instance="w1:6066"}', "values": "0+4x8 32x72"},
            # w2 works through its backlog; w3 is idle with nothing waiting.
            {"series": LAG % (1, "w2:6066"), "values": "50000-100x80"},
            {"series": 'streamwarden_batch_duration_seconds_count{instance="w2:6066"}', "values": "0+4x80"},
            {"series": LAG % (2, "w3:6066"), "values": "0x80"},
            {"series": 'streamwarden_batch_duration_seconds_count{instance="w3:6066"}', "values": "10x80"},
        ],
        alert_rule_test=[
            firing("streamwarden:worker-stalled", "6m"),  # no batch for 4 minutes: not yet
            firing("streamwarden:worker-stalled", "15m", {"severity": "warning", "source": "streamwarden-health", "instance": "w1:6066"}),
        ],
    )
    # A caught-up worker whose next batch hangs: its lag read 0 at its last report, but the batch is in flight.
    health_test(
        tmp_path,
        input_series=[
            {"series": LAG % (0, "w1:6066"), "values": "0x80"},
            {"series": 'streamwarden_batches_in_flight{instance="w1:6066"}', "values": "0x8 1x72"},
            {"series": 'streamwarden_batch_duration_seconds_count{instance="w1:6066"}', "values": "0+4x8 32x72"},
            # w2: caught up and idle, nothing in flight.
            {"series": LAG % (1, "w2:6066"), "values": "0x80"},
            {"series": 'streamwarden_batches_in_flight{instance="w2:6066"}', "values": "0x80"},
            {"series": 'streamwarden_batch_duration_seconds_count{instance="w2:6066"}', "values": "10x80"},
        ],
        alert_rule_test=[
            firing("streamwarden:worker-stalled", "15m", {"severity": "warning", "source": "streamwarden-health", "instance": "w1:6066"}),
        ],
    )


@pytest.mark.parametrize(("dead_per_step", "fires"), [(12, True), (2, False)])
def test_a_high_share_of_dead_letters_warns(tmp_path, dead_per_step, fires):
    # 200 events per 15 s; 12 dead letters per 15 s is 5.7% of the records, 2 is 1%.
    health_test(
        tmp_path,
        input_series=[
            {"series": 'streamwarden_events_total{model="m", model_version="v", instance="w1:6066"}', "values": "0+200x80"},
            {"series": 'streamwarden_dead_letters_total{reason="schema", instance="w1:6066"}', "values": f"0+{dead_per_step}x80"},
        ],
        alert_rule_test=[
            firing("streamwarden:dead-letters", "15m", *([{"severity": "warning", "source": "streamwarden-health"}] if fires else []))
        ],
    )


def test_dead_letters_alone_warn(tmp_path):
    # A producer whose every record is malformed: no event was ever counted, so there is no events series at all.
    health_test(
        tmp_path,
        input_series=[{"series": 'streamwarden_dead_letters_total{reason="schema", instance="w1:6066"}', "values": "0+50x80"}],
        alert_rule_test=[firing("streamwarden:dead-letters", "15m", {"severity": "warning", "source": "streamwarden-health"})],
    )


@pytest.mark.parametrize(("persisted", "fires"), [("0x80", True), ("0x10 1x70", False)])
def test_references_that_keep_failing_to_persist_warn_and_one_retried_does_not(tmp_path, persisted, fires):
    # A failed write every 15 s (the worker retries each second, every try times out after 10 s); in the second
    # case a retry succeeds after 2.5 minutes and the failures stop.
    failed = "0+1x80" if fires else "0+1x10 10x70"
    health_test(
        tmp_path,
        input_series=[
            {"series": 'streamwarden_references_total{detector="drift", outcome="persist_failed", instance="w1:6066"}', "values": failed},
            {"series": 'streamwarden_references_total{detector="drift", outcome="persisted", instance="w1:6066"}', "values": persisted},
        ],
        alert_rule_test=[
            firing(
                "streamwarden:references-not-persisted",
                "15m",
                *([{"severity": "warning", "source": "streamwarden-health", "instance": "w1:6066", "detector": "drift"}] if fires else []),
            ),
            firing("streamwarden:references-not-persisted", "4m"),  # not for 5 minutes yet
        ],
    )


def test_a_worker_that_never_reads_the_references_back_warns(tmp_path):
    health_test(
        tmp_path,
        input_series=[
            {"series": 'streamwarden_references_read{instance="w1:6066"}', "values": "0x80"},
            {"series": 'streamwarden_references_read{instance="w2:6066"}', "values": "0x4 1x76"},  # read after a minute
        ],
        alert_rule_test=[
            firing(
                "streamwarden:references-not-persisted",
                "15m",
                {"severity": "warning", "source": "streamwarden-health", "instance": "w1:6066"},
            )
        ],
    )
