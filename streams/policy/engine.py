"""The policy engine: metrics records in, decisions out. Pure logic, no Kafka: time is an argument.

Per rule and group (model, model version, and the route when the rule's scope is per route)
a state machine::

    ok --breach--> pending --held for_s, past the cool-down--> firing --recovered for resolve_for_s--> resolved
          pending --no breach or too few events--> ok                       resolved --breach--> pending ...

A breach needs ``min_events`` in the window; so does a recovery (no traffic after a kill
switch does not resolve it). ``resolve_threshold`` gives hysteresis, ``cooldown_s`` spaces
two firings of the same rule and group. Firing emits one decision per action of the rule,
plus an alert; resolving emits a ``resolve``. Staged rollouts get ``should_rollback`` when a
rollback rule fires for them, ``should_advance`` after a quiet, busy enough stage.

Every id is deterministic (rule, group, the moment the breach began), and :meth:`restore`
rebuilds the states from the actions topic, so a restarted agent does not repeat an action.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from fnmatch import fnmatchcase

from streams.events.schema import ActionRecord, LatencySummary, MetricsRecord
from streams.policy.rules import SEVERITIES, Policy, Rollout, Rule

Group = tuple[str, str, str]  # model, model_version, route ("*" when routes are summed)


def stable_id(*parts: str) -> str:
    h = hashlib.blake2b(digest_size=12)
    for part in parts:
        h.update(part.encode())
        h.update(b"\x1f")
    return h.hexdigest()


def _ts(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)


@dataclass
class RuleState:
    state: str = "ok"  # ok | pending | firing | resolved
    pending_since: float | None = None
    firing_since: float | None = None
    recover_since: float | None = None
    last_fired: float | None = None
    episode_id: str | None = None
    value: float | None = None
    events: int = 0

    @property
    def code(self) -> int:
        return {"ok": 0, "resolved": 0, "pending": 1, "firing": 2}[self.state]


@dataclass
class Evaluation:
    value: float | None
    events: int
    evidence: dict


class PolicyEngine:
    def __init__(self, policy: Policy):
        self.policy = policy
        self.states: dict[tuple[str, Group], RuleState] = defaultdict(RuleState)
        self._records: dict[tuple[str, str, str], deque[MetricsRecord]] = defaultdict(deque)
        self.horizon_s = max([r.window_s for r in policy.rules] + [ro.advance_after_s for ro in policy.rollouts] + [60.0])
        self.rollout_done: set[str] = set()  # action ids of rollout decisions already published
        self._stage_seen: dict[tuple[str, str, str], float] = {}
        self.records_ingested = 0

    # -- input ---------------------------------------------------------------------------

    def set_rollout(self, model: str, version: str, stage: str, previous_version: str | None = None) -> None:
        """A new stage for a model version (from the control topic): the file's entry is the default."""
        current = self.policy.rollout_of(model, version)
        base = current.model_dump() if current else {"model": model, "version": version}
        updated = Rollout.model_validate({**base, "stage": stage, "previous_version": previous_version or base.get("previous_version")})
        others = [r for r in self.policy.rollouts if not (r.model == model and r.version == version)]
        self.policy = self.policy.model_copy(update={"rollouts": [*others, updated]})

    def ingest(self, record: MetricsRecord) -> None:
        if record.scope != "model":
            return
        self._records[record.route_key].append(record)
        self.records_ingested += 1

    def restore(self, records: Iterable[ActionRecord]) -> None:
        """Rebuild states from the actions topic (oldest first)."""
        for rec in records:
            if rec.action in ("should_advance", "should_rollback"):
                self.rollout_done.add(rec.action_id)
                continue
            if rec.rule is None or rec.by != "policy":
                continue
            key = (rec.rule, (rec.model, rec.model_version, rec.route))
            st = self.states[key]
            at = rec.decided_at.timestamp()
            if rec.action in ("alert", "rollback", "kill"):
                if st.episode_id != rec.episode_id:
                    st.state, st.firing_since, st.last_fired, st.episode_id = "firing", at, at, rec.episode_id
                    st.pending_since, st.recover_since = None, None
            elif rec.action == "resolve":
                st.state, st.recover_since, st.pending_since = "resolved", None, None

    # -- evaluation ----------------------------------------------------------------------

    def _prune(self, now: float) -> None:
        oldest = now - self.horizon_s - 60
        for key in list(self._records):
            q = self._records[key]
            while q and q[0].window_end.timestamp() < oldest:
                q.popleft()
            if not q:
                del self._records[key]

    def _groups(self, rule: Rule) -> dict[Group, list[tuple[str, str, str]]]:
        groups: dict[Group, list] = defaultdict(list)
        for key in self._records:
            model, version, route = key
            if rule.scope.matches(model, version, route):
                groups[(model, version, route if rule.scope.per_route else "*")].append(key)
        # Groups that fired stay evaluated when their traffic stops (so they hold, visibly).
        for (name, group), st in self.states.items():
            if name == rule.name and st.state in ("pending", "firing"):
                groups.setdefault(group, [])
        return groups

    def evaluate_rule(self, rule: Rule, keys: list, now: float, until: float | None = None) -> Evaluation:
        since = now - rule.window_s
        recs = [r for k in keys for r in self._records.get(k, ()) if since < r.window_end.timestamp() <= (until or float("inf"))]
        events = sum(r.events for r in recs)
        evidence: dict = {"metric": rule.metric, "op": rule.op, "threshold": rule.threshold, "window_s": rule.window_s, "events": events}
        value: float | None
        m = rule.metric
        if m == "events":
            value = float(events)
        elif m in ("error_rate", "complaint_rate"):
            n = sum(r.errors if m == "error_rate" else r.complaints for r in recs)
            evidence["count"] = n
            value = n / events if events else None
        elif m in ("finding_rate", "finding_count"):
            floor = SEVERITIES.index(rule.min_severity)
            counts: dict[str, int] = defaultdict(int)
            for r in recs:
                for key, by_sev in r.finding_severities.items():
                    if rule.matches_finding(key):
                        counts[key] += sum(n for sev, n in by_sev.items() if sev in SEVERITIES and SEVERITIES.index(sev) >= floor)
            total = sum(counts.values())
            evidence["findings"] = {k: v for k, v in sorted(counts.items()) if v}
            if m == "finding_rate" and (detector := rule.judged_by) is not None:
                # Over the events the rule's detector judged: a ration under load samples, it must not dilute.
                events = max(0, events - sum(r.unjudged.get(detector, 0) for r in recs))
                evidence["judged_events"] = events
            value = float(total) if m == "finding_count" else (total / events if events else None)
        elif m.startswith("latency_"):
            q = {"latency_p50_ms": 0.5, "latency_p95_ms": 0.95, "latency_p99_ms": 0.99}[m]
            merged = LatencySummary()
            for r in recs:
                merged.merge(r.latency)
            value = merged.quantile(q)
            evidence["latency_events"] = merged.count
        else:  # gauge
            values = {k: v for r in recs for k, v in r.gauges.items() if fnmatchcase(k, rule.gauge or "*")}
            worst = rule.worst(values.items(), key=lambda kv: kv[1]) if values else None
            value = worst[1] if worst else None
            if worst:
                evidence["gauge"] = worst[0]
        evidence["value"] = value
        return Evaluation(value, events, evidence)

    def values(self, rule: Rule, group: Group, times: Iterable[float]) -> list[tuple[float, float]]:
        """The rule's value for one group at past moments, from the records still held (an incident's chart
        after a restart). Moments the records do not reach, or without a value, are left out."""
        model, version, route = group
        keys = [
            k for k in self._records if rule.scope.matches(*k) and k[0] == model and k[1] == version and (route == "*" or k[2] == route)
        ]
        oldest = min((q[0].window_end.timestamp() for k in keys if (q := self._records[k])), default=None)
        out = []
        for t in times:
            if oldest is None or t - rule.window_s < oldest - 1.0:
                continue
            value = self.evaluate_rule(rule, keys, t, until=t).value
            if value is not None:
                out.append((t, value))
        return out

    def evaluate(self, now: float) -> list[ActionRecord]:
        self._prune(now)
        out: list[ActionRecord] = []
        for rule in self.policy.rules:
            for group, keys in self._groups(rule).items():
                out.extend(self._step(rule, group, self.evaluate_rule(rule, keys, now), now))
        out.extend(self._rollouts(now, out))
        return out

    def _step(self, rule: Rule, group: Group, ev: Evaluation, now: float) -> list[ActionRecord]:
        st = self.states[(rule.name, group)]
        st.value, st.events = ev.value, ev.events
        value = ev.value
        enough = value is not None and ev.events >= rule.min_events
        breach = value is not None and enough and rule.breached(value)
        if st.state in ("ok", "resolved") and breach:
            st.state, st.pending_since = "pending", now
        if st.state == "pending":
            if not breach:
                st.state, st.pending_since = "ok", None
            elif (
                st.pending_since is not None
                and now - st.pending_since >= rule.for_s
                and (st.last_fired is None or now - st.last_fired >= rule.cooldown_s)
            ):
                st.state, st.firing_since, st.last_fired, st.recover_since = "firing", now, now, None
                st.episode_id = stable_id(rule.name, *group, _ts(st.pending_since).isoformat())
                return self._fire(rule, group, ev, now, st.episode_id)
            return []
        if st.state == "firing":
            if value is not None and enough and rule.recovered(value):
                st.recover_since = st.recover_since if st.recover_since is not None else now
                if now - st.recover_since >= rule.resolve_for_s:
                    st.state, st.recover_since = "resolved", None
                    return [
                        self._record(
                            "resolve", rule, group, ev, now, st.episode_id or "", reason=f"{rule.name} resolved: {_describe(rule, ev)}"
                        )
                    ]
            else:
                st.recover_since = None
        return []

    def _fire(self, rule: Rule, group: Group, ev: Evaluation, now: float, episode: str) -> list[ActionRecord]:
        reason = f"{rule.name}: {_describe(rule, ev)}"
        pending_since = self.states[(rule.name, group)].pending_since
        if pending_since is not None:  # the incident page's timeline, rebuilt from the actions topic
            ev = Evaluation(ev.value, ev.events, {**ev.evidence, "pending_since": _ts(pending_since).isoformat()})
        actions = list(dict.fromkeys([*(a for a in rule.actions if a == "kill"), *(a for a in rule.actions if a == "rollback"), "alert"]))
        out = []
        for action in actions:
            rec = self._record(action, rule, group, ev, now, episode, reason=reason)
            if action == "kill":
                rec.fallback = rule.fallback
            if action == "rollback":
                rollout = self.policy.rollout_of(group[0], group[1])
                rec.to_version = rollout.previous_version if rollout else None
                rec.stage = rollout.stage if rollout else None
            if action == "alert":
                rec.evidence = {**rec.evidence, "actions": [a for a in actions if a != "alert"]}
            out.append(rec)
        return out

    def _record(self, action: str, rule: Rule, group: Group, ev: Evaluation, now: float, episode: str, reason: str) -> ActionRecord:
        model, version, route = group
        return ActionRecord(
            action=action,
            action_id=stable_id(episode, action),
            episode_id=episode,
            rule=rule.name,
            model=model,
            model_version=version,
            route=route,
            severity=rule.severity,
            reason=reason,
            evidence=dict(ev.evidence),
            link=self.policy.link(model, version),
            decided_at=_ts(now),
        )

    # -- staged rollout ------------------------------------------------------------------

    def _rollouts(self, now: float, fired: list[ActionRecord]) -> list[ActionRecord]:
        out = []
        rules = {r.name: r for r in self.policy.rules}
        for ro in self.policy.rollouts:
            key = (ro.model, ro.version, ro.stage)
            rollback_id = stable_id("rollout", *key, "should_rollback")
            advance_id = stable_id("rollout", *key, "should_advance")
            if rollback_id in self.rollout_done or advance_id in self.rollout_done:
                continue
            active = [
                (name, st)
                for (name, (m, v, _)), st in self.states.items()
                if m == ro.model and v == ro.version and st.state in ("pending", "firing")
            ]
            firing_rollback = [name for name, st in active if st.state == "firing" and "rollback" in rules[name].actions]
            base = dict(model=ro.model, model_version=ro.version, route="*", stage=ro.stage, decided_at=_ts(now))
            if firing_rollback:
                self.rollout_done.add(rollback_id)
                out.append(
                    ActionRecord(
                        action="should_rollback",
                        action_id=rollback_id,
                        to_version=ro.previous_version,
                        severity="critical",
                        reason=f"{ro.model} {ro.version} at stage {ro.stage}: {', '.join(sorted(firing_rollback))} firing",
                        evidence={"rules": sorted(firing_rollback)},
                        **base,
                    )
                )
                continue
            seen = [r for (m, v, _), q in self._records.items() if m == ro.model and v == ro.version for r in q]
            if not seen:
                continue
            first = self._stage_seen.setdefault(key, now)
            recent = sum(r.events for r in seen if r.window_end.timestamp() > now - ro.advance_after_s)
            if ro.next_stage and not active and now - first >= ro.advance_after_s and recent >= ro.advance_min_events:
                self.rollout_done.add(advance_id)
                out.append(
                    ActionRecord(
                        action="should_advance",
                        action_id=advance_id,
                        to_version=ro.next_stage,
                        severity="info",
                        reason=f"{ro.model} {ro.version}: {recent} events in {ro.advance_after_s:.0f}s at stage {ro.stage}, no rule pending or firing",
                        evidence={"events": recent, "next_stage": ro.next_stage},
                        **base,
                    )
                )
        return out


def _describe(rule: Rule, ev: Evaluation) -> str:
    value = "n/a" if ev.value is None else f"{ev.value:.4g}"
    return f"{rule.metric} {value} {rule.op} {rule.threshold:g} over {rule.window_s:g}s ({ev.events} events)"
