"""Incidents: one per firing episode of a rule (per model, version, route), for the agent's web UI.

Everything here is rebuilt from the topics, as the agent's own state is: the actions topic
gives the episodes (the alert, kill and rollback records share an ``episode_id``), their
timeline (``pending_since`` in the evidence, the decision time, the ``resolve`` record), the
outcomes, and the people's changes (a ``release`` of the model's kill switch); the findings
topic gives the evidence (findings are masked at the source: rule 6); the metrics the agent
evaluates give the chart. No Kafka in this module: the agent feeds it.

Memory is bounded: at most ``max_incidents`` incidents (the oldest go first), ``max_findings``
findings per incident (the first ones; the rest are counted), ``chart_points`` points per chart
(halved in resolution when full, so a long incident keeps its whole span), and a buffer of the
recent findings per model version (at most ``max_findings`` each, no older than the longest
window of a findings rule, of the ``max_keys`` model versions seen last) so that an incident
that opens after its findings arrived finds them.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from streams.events.schema import ActionRecord, KillSwitchState
from streams.policy.rules import SEVERITIES, Policy, Rule

Group = tuple[str, str, str]

# What of a finding's details the page shows: entity types, masked forms and numbers, never more.
_DETAILS_CHARS = 400


@dataclass(slots=True)
class FindingView:
    finding_id: str
    key: str  # detector.kind
    severity: str
    score: float
    summary: str
    model: str
    model_version: str
    route: str
    event_id: str | None
    at: float
    details: dict[str, Any]  # a drift finding's details (its report); else what the page shows, compact
    entities: tuple[tuple[str, str], ...] = ()  # (entity type, masked form)
    html: str | None = field(default=None, repr=False, compare=False)  # its table row, rendered once (it never changes)

    @property
    def is_drift(self) -> bool:
        return self.key.split(".", 1)[0] in ("drift", "descriptor_drift") or self.key.endswith("_drift")


def finding_view(data: dict) -> FindingView | None:
    """The part of a finding (the findings topic's JSON) the page shows; None when it does not parse."""
    try:
        at = datetime.fromisoformat(str(data["detected_at"]).replace("Z", "+00:00")).timestamp()
        key = f"{data['detector']}.{data['kind']}"
        details = data.get("details") or {}
        if not isinstance(details, dict):
            details = {}
        entities: tuple[tuple[str, str], ...] = ()
        if key.split(".", 1)[0] in ("drift", "descriptor_drift") or key.endswith("_drift"):
            kept = dict(details)  # the drift report: statistics, windows, tests (numbers and column names)
        else:
            kept = {}
            raw = details.get("entities")
            if isinstance(raw, list):
                entities = tuple(
                    (sys.intern(str(e.get("entity_type", "?"))), str(e.get("masked", ""))) for e in raw[:20] if isinstance(e, dict)
                )
            rest = {k: v for k, v in details.items() if k != "entities" and isinstance(v, (int, float, str, bool))}
            if rest:
                text = json.dumps(rest, sort_keys=True, default=str)
                kept["other"] = text if len(text) <= _DETAILS_CHARS else text[:_DETAILS_CHARS] + "…"
        return FindingView(
            finding_id=str(data["finding_id"]),
            key=sys.intern(key),  # the few distinct ones are shared by thousands of findings
            severity=sys.intern(str(data.get("severity", "info"))),
            score=float(data.get("score") or 0.0),
            summary=str(data.get("summary", ""))[:500],
            model=sys.intern(str(data.get("model", ""))),
            model_version=sys.intern(str(data.get("model_version", ""))),
            route=sys.intern(str(data.get("route") or "")),
            event_id=data.get("event_id"),
            at=at,
            details=kept,
            entities=entities,
        )
    except (KeyError, TypeError, ValueError):
        return None


@dataclass
class Incident:
    id: str  # the episode id
    rule: str
    group: Group
    severity: str
    reason: str
    threshold: float | None = None
    op: str = ""
    metric: str = ""
    window_s: float = 60.0
    pending_at: float | None = None
    firing_at: float = 0.0
    resolved_at: float | None = None
    value_at_firing: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    link: str | None = None
    actions: list[ActionRecord] = field(default_factory=list)
    outcomes: dict[str, dict[str, str]] = field(default_factory=dict)
    findings: list[FindingView] = field(default_factory=list)
    finding_ids: set[str] = field(default_factory=set)
    findings_dropped: int = 0
    series: list[tuple[float, float]] = field(default_factory=list)
    backfill: bool = False  # rebuilt at start: its chart is computed from the metrics the agent re-read

    @property
    def model(self) -> str:
        return self.group[0]

    @property
    def model_version(self) -> str:
        return self.group[1]

    @property
    def route(self) -> str:
        return self.group[2]

    @property
    def state(self) -> str:
        return "resolved" if self.resolved_at is not None else "firing"

    @property
    def killed(self) -> bool:
        return any(a.action == "kill" for a in self.actions)

    @property
    def start(self) -> float:
        return self.pending_at if self.pending_at is not None else self.firing_at

    def covers(self, t: float, slack_s: float = 0.0) -> bool:
        """``t`` lies in the incident's evidence window: from a window before the breach began to its end."""
        end = self.resolved_at if self.resolved_at is not None else float("inf")
        return self.start - self.window_s - slack_s <= t <= end + slack_s


@dataclass
class Snapshot:
    """What the Now page shows, as of the agent's last evaluation (copied, so the web thread reads it safely)."""

    at: float = 0.0
    rules: list[dict[str, Any]] = field(default_factory=list)  # pending or firing (rule, group, state, value, since, episode)
    rollouts: list[dict[str, Any]] = field(default_factory=list)
    switches: dict[str, KillSwitchState] = field(default_factory=dict)
    records_ingested: int = 0


class IncidentStore:
    """The incidents and the Now view, fed by the agent; every method is thread-safe."""

    def __init__(
        self,
        policy: Policy,
        max_incidents: int = 200,
        max_findings: int = 200,
        chart_points: int = 240,
        max_keys: int = 64,
    ):
        self.policy = policy
        self.max_incidents = max_incidents
        self.max_findings = max_findings
        self.chart_points = chart_points
        self.max_keys = max_keys
        self.lock = threading.RLock()
        self.incidents: OrderedDict[str, Incident] = OrderedDict()
        self._by_action: dict[str, str] = {}  # action id -> incident id
        self._recent: OrderedDict[tuple[str, str], deque[FindingView]] = OrderedDict()  # (model, version) -> findings
        self._rings: OrderedDict[tuple[str, Group], deque[tuple[float, float]]] = OrderedDict()  # (rule, group) -> values
        self.now = Snapshot()
        self.findings_read = 0

    # -- the policy ----------------------------------------------------------------------

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.policy.rules if r.name == name), None)

    def _max_window(self) -> float:
        return max((r.window_s for r in self.policy.rules if r.metric in ("finding_rate", "finding_count")), default=60.0)

    def set_policy(self, policy: Policy) -> None:
        with self.lock:
            self.policy = policy

    # -- the actions topic ---------------------------------------------------------------

    def add_actions(self, records: Iterable[ActionRecord]) -> None:
        for rec in records:
            self.add_action(rec)

    def add_action(self, rec: ActionRecord) -> None:
        with self.lock:
            if rec.action == "outcome":
                inc = self.incidents.get(self._by_action.get(rec.action_id, ""))
                if inc is not None:
                    inc.outcomes[rec.action_id] = dict(rec.results)
                return
            if rec.action == "agent_start":
                return
            at = rec.decided_at.timestamp()
            if rec.episode_id and rec.rule and rec.by == "policy":
                inc = self.incidents.get(rec.episode_id)
                if inc is None:
                    inc = self._open(rec, at)
                if rec.action == "resolve":
                    inc.resolved_at = at
                if not any(a.action_id == rec.action_id for a in inc.actions):
                    inc.actions.append(rec)
                    self._by_action[rec.action_id] = inc.id
                return
            # Not of an episode: a rollout decision, or a person's change of a kill switch.
            for inc in reversed(self.incidents.values()):
                if inc.model != rec.model or at < inc.start:
                    continue
                if rec.action in ("should_rollback", "should_advance"):
                    if rec.model_version != inc.model_version or inc.rule not in (rec.evidence.get("rules") or []):
                        continue
                elif rec.action in ("release", "kill"):
                    if not inc.killed:
                        continue
                else:
                    continue
                if not any(a.action_id == rec.action_id for a in inc.actions):
                    inc.actions.append(rec)
                    self._by_action[rec.action_id] = inc.id
                break

    def _open(self, rec: ActionRecord, at: float) -> Incident:
        rule = self.rule(rec.rule or "")
        ev = rec.evidence or {}
        pending = ev.get("pending_since")
        try:
            pending_at = datetime.fromisoformat(pending).timestamp() if isinstance(pending, str) else None
        except ValueError:
            pending_at = None
        group: Group = (rec.model, rec.model_version, rec.route)
        inc = Incident(
            id=rec.episode_id or rec.action_id,
            rule=rec.rule or "",
            group=group,
            severity=rec.severity,
            reason=rec.reason,
            threshold=ev.get("threshold", rule.threshold if rule else None),
            op=str(ev.get("op", rule.op if rule else "")),
            metric=str(ev.get("metric", rule.metric if rule else "")),
            window_s=float(ev.get("window_s", rule.window_s if rule else 60.0)),
            pending_at=pending_at,
            firing_at=at,
            value_at_firing=ev.get("value"),
            evidence={k: v for k, v in ev.items() if k not in ("actions", "pending_since")},
            link=rec.link,
        )
        ring = self._rings.get((inc.rule, group))
        if ring:
            inc.series = [p for p in ring if p[0] >= inc.start - inc.window_s]
        else:
            inc.backfill = True
        if rule is not None and rule.metric in ("finding_rate", "finding_count"):
            for f in self._recent.get((inc.model, inc.model_version), ()):
                self._attach(inc, rule, f)
        self.incidents[inc.id] = inc
        while len(self.incidents) > self.max_incidents:
            _, old = self.incidents.popitem(last=False)
            for a in old.actions:
                self._by_action.pop(a.action_id, None)
        return inc

    # -- the findings topic --------------------------------------------------------------

    def add_finding(self, data: dict) -> None:
        f = finding_view(data)
        if f is None:
            return
        with self.lock:
            self.findings_read += 1
            key = (f.model, f.model_version)
            recent = self._recent.get(key)
            if recent is None:
                recent = self._recent[key] = deque(maxlen=self.max_findings)
                while len(self._recent) > self.max_keys:
                    self._recent.popitem(last=False)
            else:
                self._recent.move_to_end(key)
            recent.append(f)
            horizon = f.at - self._max_window() - 60.0
            while recent and recent[0].at < horizon:
                recent.popleft()
            for inc in self.incidents.values():
                if inc.model == f.model and inc.model_version == f.model_version:
                    rule = self.rule(inc.rule)
                    if rule is not None and rule.metric in ("finding_rate", "finding_count"):
                        self._attach(inc, rule, f)

    def _attach(self, inc: Incident, rule: Rule, f: FindingView) -> None:
        if f.finding_id in inc.finding_ids or not rule.matches_finding(f.key):
            return
        if f.severity in SEVERITIES and SEVERITIES.index(f.severity) < SEVERITIES.index(rule.min_severity):
            return
        if inc.route != "*" and f.route != inc.route:
            return
        if not inc.covers(f.at, slack_s=5.0):  # a few seconds of clock skew between the worker and the agent
            return
        if len(inc.findings) >= self.max_findings:
            inc.findings_dropped += 1
            return
        inc.finding_ids.add(f.finding_id)
        inc.findings.append(f)

    # -- the agent's evaluations ---------------------------------------------------------

    def observe(self, now: float, states: dict, policy: Policy, records_ingested: int = 0) -> None:
        """After an evaluation: the rules' values (the charts) and what is pending or firing (the Now page)."""
        with self.lock:
            self.policy = policy
            rules = []
            for (name, group), st in list(states.items()):
                if st.value is not None:
                    key = (name, group)
                    ring = self._rings.get(key)
                    if ring is None:
                        ring = self._rings[key] = deque(maxlen=self.chart_points)
                        while len(self._rings) > self.max_keys:
                            self._rings.popitem(last=False)
                    ring.append((now, st.value))
                if st.state in ("pending", "firing"):
                    rules.append(
                        {
                            "rule": name,
                            "group": group,
                            "state": st.state,
                            "value": st.value,
                            "events": st.events,
                            "since": st.firing_since if st.state == "firing" else st.pending_since,
                            "episode": st.episode_id if st.state == "firing" else None,
                        }
                    )
            for inc in self.incidents.values():
                tail = inc.resolved_at is None or now <= inc.resolved_at + max(60.0, inc.window_s)
                st = states.get((inc.rule, inc.group))
                if tail and st is not None and st.value is not None and (not inc.series or inc.series[-1][0] < now):
                    self._append(inc, (now, st.value))
            self.now = Snapshot(
                at=now,
                rules=sorted(rules, key=lambda r: (r["state"] != "firing", r["rule"], r["group"])),
                rollouts=[ro.model_dump() | {"next_stage": ro.next_stage} for ro in policy.rollouts],
                switches=dict(self.now.switches),
                records_ingested=records_ingested,
            )

    def _append(self, inc: Incident, point: tuple[float, float]) -> None:
        inc.series.append(point)
        if len(inc.series) > self.chart_points:
            inc.series = inc.series[:1] + inc.series[1::2]  # halve the resolution, keep the first point and the span

    def needs_backfill(self) -> list[Incident]:
        with self.lock:
            return [inc for inc in self.incidents.values() if inc.backfill]

    def set_backfill(self, inc: Incident, points: list[tuple[float, float]]) -> None:
        """The chart of an incident rebuilt at start, computed from the metrics the agent re-read."""
        with self.lock:
            merged = dict(points)
            merged.update(dict(inc.series))
            inc.series = sorted(merged.items())
            while len(inc.series) > self.chart_points:
                inc.series = inc.series[:1] + inc.series[1::2]
            inc.backfill = False

    # -- the control topic ---------------------------------------------------------------

    def set_switch(self, state: KillSwitchState | None, model: str) -> None:
        with self.lock:
            switches = dict(self.now.switches)
            if state is None:
                switches.pop(model, None)
            else:
                switches[model] = state
            self.now.switches = switches

    # -- reading (the web thread) --------------------------------------------------------

    def get(self, incident_id: str) -> Incident | None:
        with self.lock:
            return self.incidents.get(incident_id)

    def listing(self) -> list[Incident]:
        with self.lock:
            return list(reversed(self.incidents.values()))
