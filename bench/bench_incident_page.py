"""The policy agent's incident page: render time of an incident with 1,000 findings, and the memory the store keeps.

Baselines in the same process: the same incident with no findings, and the empty Now page (ratios, not
absolute times). Memory: tracemalloc's count of what a store holds when full (every incident at its
findings limit, every chart at its point limit), at the defaults and at 1,000 findings per incident.
Everything is SYNTHETIC: findings shaped as the PII detector's (masked values), a real engine's decision.

    .venv/bin/python bench/bench_incident_page.py
"""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from datetime import datetime, timezone

from streams.actions import pages
from streams.actions.incidents import IncidentStore, Snapshot
from streams.events.schema import ActionRecord, LatencySummary, MetricsRecord
from streams.policy.engine import PolicyEngine, RuleState
from streams.policy.rules import load_policy

T0 = 1_800_000_000.0
POLICY = load_policy()
GROUP = ("support-assistant", "2026.11.1", "*")


def finding(i: int, t: float, model: str = GROUP[0]) -> dict:
    return {
        "finding_id": f"{i:032x}",
        "detector": "pii",
        "kind": "pii_leak",
        "severity": "high",
        "score": 0.85,
        "model": model,
        "model_version": GROUP[1],
        "route": "gateway",
        "event_id": f"evt-{i:012d}",
        "summary": "The response discloses EMAIL_ADDRESS, PHONE_NUMBER the user did not provide.",
        "details": {
            "entities": [
                {
                    "entity_type": "EMAIL_ADDRESS",
                    "start": 40,
                    "end": 66,
                    "score": 1.0,
                    "origin": "leak",
                    "masked": "d***@***.com",
                    "hash": "9f" * 8,
                },
                {
                    "entity_type": "PHONE_NUMBER",
                    "start": 74,
                    "end": 89,
                    "score": 0.75,
                    "origin": "leak",
                    "masked": "[PHONE_NUMBER]***0142",
                    "hash": "4a" * 8,
                },
            ],
            "leaks": 2,
            "echoes": 0,
        },
        "detected_at": datetime.fromtimestamp(t, timezone.utc).isoformat(),
    }


def decisions(model: str = GROUP[0]) -> list[ActionRecord]:
    engine = PolicyEngine(POLICY)
    lat = LatencySummary()
    engine.ingest(
        MetricsRecord(
            scope="model",
            model=model,
            model_version=GROUP[1],
            route="gateway",
            worker_id="w",
            window_start=datetime.fromtimestamp(T0 - 1, timezone.utc),
            window_end=datetime.fromtimestamp(T0, timezone.utc),
            events=200,
            finding_severities={"pii.pii_leak": {"high": 3}},
            latency=lat,
        )
    )
    return [d for d in engine.evaluate(T0 + 1) if d.rule == "pii-leak"]


def fill(store: IncidentStore, model: str, findings: int, base: int) -> None:
    recs = decisions(model)
    store.add_actions(recs)
    for rec in recs:
        store.add_action(ActionRecord(action="outcome", action_id=rec.action_id, results={"control": "ok", "alertmanager[0]": "ok"}))
    for i in range(findings):
        store.add_finding(finding(base + i, T0 - 30 + i * 0.01, model))
    states = {("pii-leak", (model, GROUP[1], "*")): RuleState(state="firing", value=3.0)}
    for k in range(store.chart_points * 2):
        store.observe(T0 + 1 + k, states, POLICY)


def timed(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    big = IncidentStore(POLICY, max_findings=1000)
    fill(big, GROUP[0], 1000, 0)
    empty = IncidentStore(POLICY)
    fill(empty, GROUP[0], 0, 0)
    inc, bare = big.listing()[0], empty.listing()[0]
    assert len(inc.findings) == 1000
    viewer = pages.Viewer(user="alice", csrf="x" * 40)
    t = time.perf_counter()
    html = pages.incident_page(inc, viewer, switch_engaged=True)
    t_first = time.perf_counter() - t  # the findings' rows are rendered once, then reused
    t_big = timed(lambda: pages.incident_page(inc, viewer, switch_engaged=True), 30)
    t_bare = timed(lambda: pages.incident_page(bare, viewer, switch_engaged=True), 200)
    t_now = timed(lambda: pages.now_page(Snapshot(), [], viewer), 500)
    print(f"incident page, 1,000 findings: first {t_first * 1000:.1f} ms, then {t_big * 1000:.1f} ms; {len(html) / 1024:.0f} KiB of HTML")
    print(
        f"  the same incident, no findings: {t_bare * 1000:.2f} ms (first x{t_first / t_bare:.0f}, then x{t_big / t_bare:.1f}); the empty Now page: {t_now * 1000:.3f} ms (x{t_big / t_now:.0f})"
    )

    for max_incidents, max_findings in ((200, 200), (200, 1000)):
        gc.collect()
        tracemalloc.start()
        store = IncidentStore(POLICY, max_incidents=max_incidents, max_findings=max_findings)
        for j in range(max_incidents + 10):
            fill(store, f"model-{j}", max_findings, j * max_findings)
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(store.incidents) == max_incidents
        print(
            f"store full at incident_max={max_incidents}, incident_findings_max={max_findings}, chart_points={store.chart_points}: "
            f"{held / 2**20:.1f} MiB ({held / max_incidents / 1024:.0f} KiB per incident)"
        )
        del store


if __name__ == "__main__":
    main()
