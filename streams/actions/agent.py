"""The policy agent: the metrics topic in, decisions on the actions topic, then dispatched.

One agent per deployment is enough (metrics are a few records per model version and window)
and is what the compose file runs; its state lives in Kafka, so a restarted agent picks up
where the last one stopped:

1. it writes an ``agent_start`` record and reads the actions topic up to it: the states of
   the rules (what is firing, since when, the cool-downs) and the decisions that have no
   outcome yet, which it dispatches again (every target is idempotent by action id);
2. it reads the metrics topic from ``lookback`` ago (all partitions, assigned: the agent is
   an observer, it commits nothing) and evaluates the policy every ``policy_eval_interval_s``;
3. each decision is written to the actions topic and acknowledged *before* any target is
   called; then the kill switch (control topic), the rollback webhook, Alertmanager and the
   generic webhooks are called from a dispatcher thread, and an ``outcome`` record closes it.

It serves a web UI on ``policy_web_port`` (:mod:`streams.actions.web`): one page per incident
(firing episode), rebuilt like the rest from the topics: it keeps reading the actions topic
(outcomes, people's changes) and reads the findings topic from ``incident_lookback_s`` ago
(the evidence); alerts and webhooks carry the incident's URL.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge

from streams.actions import notify
from streams.actions.incidents import IncidentStore
from streams.actions.killswitch import ControlWatcher, publish_state
from streams.actions.log import action_json, consumer, parse_action, producer, read_actions
from streams.actions.web import WebUI, incident_url
from streams.events.schema import ActionRecord, KillSwitchState, MetricsRecord
from streams.events.topics import topic_name, topic_specs
from streams.policy.engine import PolicyEngine
from streams.policy.rules import Policy, load_policy
from streams.settings import Settings

log = logging.getLogger(__name__)


class AgentMetrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.rule_state = Gauge(
            "streamwarden_policy_rule_state",
            "State of a rule for a model version (and route, for a per-route rule; else ''): 0 ok, 1 pending, 2 firing.",
            ["rule", "model", "model_version", "route"],
            registry=r,
        )
        self.rule_value = Gauge(
            "streamwarden_policy_rule_value",
            "The value the rule last computed for a model version (and route, for a per-route rule; else '').",
            ["rule", "model", "model_version", "route"],
            registry=r,
        )
        self.actions = Counter(
            "streamwarden_actions_total",
            "Decisions written to the actions topic, by action and rule.",
            ["action", "rule", "model", "model_version"],
            registry=r,
        )
        self.dispatch = Counter(
            "streamwarden_action_dispatch_total",
            "Calls of action targets, by target kind and result.",
            ["target", "result"],
            registry=r,
        )
        self.killswitch = Gauge(
            "streamwarden_killswitch_engaged",
            "1 while the kill switch of a model is engaged (as last set by this agent).",
            ["model"],
            registry=r,
        )
        self.metrics_records = Counter("streamwarden_policy_metrics_records_total", "Metrics records read.", registry=r)
        self.bad_records = Counter("streamwarden_policy_bad_records_total", "Metrics records that did not parse.", registry=r)
        self.evaluations = Counter("streamwarden_policy_evaluations_total", "Evaluations of the whole policy.", registry=r)


class Dispatcher:
    """Calls the targets of a decision; returns the outcome record (target -> result)."""

    def __init__(self, settings: Settings, prod, metrics: AgentMetrics, sleep=time.sleep):
        self.settings = settings
        self.prod = prod
        self.metrics = metrics
        self.sleep = sleep
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
        self.key = secret.encode() if secret else None  # an empty secret (an unset compose variable) signs nothing

    def _count(self, target: str, result: str) -> None:
        self.metrics.dispatch.labels(target, result.split(":")[0]).inc()

    def dispatch(self, rec: ActionRecord) -> ActionRecord:
        s = self.settings
        results: dict[str, str] = {}
        if rec.action == "kill":
            state = KillSwitchState(
                model=rec.model,
                engaged=True,
                reason=rec.reason,
                fallback=rec.fallback,
                by=f"policy:{rec.rule}",
                action_id=rec.action_id,
                model_version=rec.model_version or None,
            )
            try:
                publish_state(s, state, self.prod)
                results["control"] = "ok"
                self.metrics.killswitch.labels(rec.model).set(1)
            except Exception as exc:  # noqa: BLE001 - recorded in the outcome
                results["control"] = f"failed: {type(exc).__name__}"
        if rec.action == "rollback":
            if s.rollback_webhook_url:
                r = notify.post_json(
                    s.rollback_webhook_url,
                    notify.rollback_payload(rec),
                    key=self.key,
                    idempotency_key=rec.action_id,
                    attempts=s.webhook_attempts,
                    sleep=self.sleep,
                )
                results["rollback"] = r.summary()
            else:
                results["rollback"] = "skipped: no rollback_webhook_url"
        page = incident_url(s, rec.episode_id)
        if rec.action in ("alert", "resolve"):
            alert = notify.alertmanager_alert(rec, resolved=rec.action == "resolve", generator_url=page)
            for i, url in enumerate(s.alertmanager_urls):
                results[f"alertmanager[{i}]"] = notify.send_alertmanager(url, [alert], s.webhook_attempts, self.sleep).summary()
        if rec.action in ("alert", "resolve", "should_advance", "should_rollback", "rollback", "kill"):
            for i, url in enumerate(s.alert_webhooks):
                r = notify.post_json(
                    url,
                    notify.webhook_payload(rec, incident_url=page),
                    key=self.key,
                    idempotency_key=rec.action_id,
                    attempts=s.webhook_attempts,
                    sleep=self.sleep,
                )
                results[f"webhook[{i}]"] = r.summary()
        if not results:  # the audit log says so, rather than nothing
            results["notify"] = "skipped: no alertmanager_urls or alert_webhooks configured (the decision is on the actions topic)"
        for target, result in results.items():
            self._count(target.split("[")[0], result)
        return ActionRecord(
            action="outcome",
            action_id=rec.action_id,
            episode_id=rec.episode_id,
            rule=rec.rule,
            model=rec.model,
            model_version=rec.model_version,
            route=rec.route,
            by=rec.by,
            results=results,
        )


class PolicyAgent:
    def __init__(self, settings: Settings, policy: Policy | None = None, agent_id: str | None = None):
        self.settings = settings
        self.policy = policy or load_policy(settings.policy_file)
        self.engine = PolicyEngine(self.policy)
        self.metrics = AgentMetrics()
        self.agent_id = agent_id or f"policy-agent:{int(time.time())}"
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self._queue: queue.Queue[ActionRecord | None] = queue.Queue()
        self._rollouts: queue.Queue[dict] = queue.Queue()  # stages read from the control topic
        self._alerts: dict[str, ActionRecord] = {}  # episode -> firing alert, re-sent to Alertmanager
        self._last_repeat = time.monotonic()
        self.store = IncidentStore(
            self.policy,
            max_incidents=settings.incident_max,
            max_findings=settings.incident_findings_max,
            chart_points=settings.incident_chart_points,
        )
        self.web: WebUI | None = None
        self._unknown_fields: set[str] = set()  # metrics fields of a newer worker, logged once each (at most 100 kept)

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        s = self.settings
        if s.policy_web_port:
            self.web = WebUI(s, self.store, self.metrics.registry, ready=self.ready.is_set).start()
        prod = producer(s, "streamwarden-policy")
        dispatcher = Dispatcher(s, prod, self.metrics)
        worker = threading.Thread(target=self._dispatch_loop, args=(dispatcher, prod), name="streamwarden-dispatch", daemon=True)
        try:
            history, actions_consumer = read_actions(s, self.agent_id, prod=prod)
            self.engine.restore(history)
            self.store.add_actions(history)  # the incidents, rebuilt; the consumer goes on reading (outcomes, people)
            undone = self._without_outcome(history)
            for rec in history:
                if rec.action == "alert" and rec.episode_id:
                    self._alerts[rec.episode_id] = rec
                elif rec.action == "resolve" and rec.episode_id:
                    self._alerts.pop(rec.episode_id, None)
            worker.start()
            for rec in undone:
                log.warning("re-dispatching %s %s (no outcome recorded)", rec.action, rec.action_id)
                self._queue.put(rec)
            watcher = ControlWatcher(s, on_rollout=self._rollouts.put, on_change=self.store.set_switch).start()
            watcher.ready.wait(30)
            self._apply_rollouts()
            metrics_consumer = self._consumer_since("metrics", "streamwarden-policy-metrics", self.engine.horizon_s + 60)
            findings_consumer = self._consumer_since("findings", "streamwarden-policy-findings", s.incident_lookback_s)
            self.ready.set()
            log.info(
                "policy agent %s: %d rules, %d past actions, %d to re-dispatch",
                self.agent_id,
                len(self.policy.rules),
                len(history),
                len(undone),
            )
            next_eval = time.monotonic()
            caught_up = False
            while not self.stop_event.is_set():
                polled = metrics_consumer.poll(timeout_ms=100)
                for messages in polled.values():
                    for m in messages:
                        self._ingest(m.value)
                self._follow(actions_consumer, findings_consumer)
                if not polled and not caught_up:  # the metrics re-read: the charts of the incidents rebuilt at start
                    caught_up = True
                    self._backfill(time.time())
                if time.monotonic() >= next_eval:
                    self._apply_rollouts()
                    self.step(prod, time.time())
                    next_eval = time.monotonic() + s.policy_eval_interval_s
            metrics_consumer.close()
            findings_consumer.close()
            actions_consumer.close()
            watcher.stop()
        finally:
            self._queue.put(None)
            if worker.is_alive():
                worker.join(30)
            prod.close(timeout=5)
            if self.web is not None:
                self.web.stop()

    def step(self, prod, now: float) -> list[ActionRecord]:
        """Evaluate once; write each decision (acknowledged) and queue it for dispatch."""
        decisions = self.engine.evaluate(now)
        self.metrics.evaluations.inc()
        for (rule, (model, version, route)), st in self.engine.states.items():
            labels = (rule, model, version, "" if route == "*" else route)  # '*': the rule sums the routes
            self.metrics.rule_state.labels(*labels).set(st.code)
            if st.value is not None:
                self.metrics.rule_value.labels(*labels).set(st.value)
        for rec in decisions:
            prod.send(topic_name(self.settings, "actions"), key=rec.action_id.encode(), value=action_json(rec), partition=0).get(timeout=30)
            self.metrics.actions.labels(rec.action, rec.rule or "", rec.model, rec.model_version).inc()
            log.warning("action %s: %s (%s)", rec.action, rec.reason, rec.action_id)
            if rec.action == "alert" and rec.episode_id:
                self._alerts[rec.episode_id] = rec
            elif rec.action == "resolve" and rec.episode_id:
                self._alerts.pop(rec.episode_id, None)
            self._queue.put(rec)
        self.store.observe(now, self.engine.states, self.engine.policy, self.engine.records_ingested)
        if self._alerts and self.settings.alertmanager_urls and time.monotonic() - self._last_repeat >= self.settings.alert_repeat_s:
            self._last_repeat = time.monotonic()
            alerts = [notify.alertmanager_alert(a, generator_url=incident_url(self.settings, a.episode_id)) for a in self._alerts.values()]
            for url in self.settings.alertmanager_urls:
                notify.send_alertmanager(url, alerts, attempts=1)
        return decisions

    def _dispatch_loop(self, dispatcher: Dispatcher, prod) -> None:
        while True:
            rec = self._queue.get()
            if rec is None:
                return
            try:
                outcome = dispatcher.dispatch(rec)
                prod.send(topic_name(self.settings, "actions"), key=rec.action_id.encode(), value=action_json(outcome), partition=0).get(
                    timeout=30
                )
                log.info("outcome of %s %s: %s", rec.action, rec.action_id, outcome.results)
            except Exception:
                log.exception("dispatch of %s failed", rec.action_id)

    # -- helpers -------------------------------------------------------------------------

    def _apply_rollouts(self) -> None:
        """Rollout stages set on the control topic (``streamwarden rollout set``) override the policy file."""
        while not self._rollouts.empty():
            st = self._rollouts.get_nowait()
            try:
                model, version, stage = st["model"], st["version"], st["stage"]
                current = self.engine.policy.rollout_of(model, version)
                if (
                    current is not None
                    and current.stage == stage
                    and current.previous_version == (st.get("previous_version") or current.previous_version)
                ):
                    continue
                self.engine.set_rollout(model, version, stage, st.get("previous_version"))
                log.warning("rollout of %s %s: stage %s", model, version, stage)
            except (KeyError, ValueError) as exc:
                log.warning("a rollout stage was refused: %s", str(exc).splitlines()[0])

    @staticmethod
    def _without_outcome(history: list[ActionRecord]) -> list[ActionRecord]:
        done = {r.action_id for r in history if r.action == "outcome"}
        return [r for r in history if r.by == "policy" and r.action not in ("outcome", "agent_start") and r.action_id not in done]

    def _ingest(self, value: bytes | None) -> None:
        try:
            record, unknown = MetricsRecord.from_wire(value or b"")
            self.engine.ingest(record)
            self.metrics.metrics_records.inc()
            new = [k[:64] for k in unknown if k[:64] not in self._unknown_fields]
            if new and len(self._unknown_fields) < 100:
                self._unknown_fields.update(new[:10])
                log.warning(
                    "metrics records carry fields this agent does not know, ignored (a newer worker: upgrade the agent): %s",
                    ", ".join(new[:10]),
                )
        except ValueError:
            self.metrics.bad_records.inc()
            log.warning("metrics topic: a record that is not a MetricsRecord was skipped")

    def _follow(self, actions_consumer, findings_consumer) -> None:
        """What arrived on the actions topic (outcomes, people's changes, the agent's own decisions) and the
        findings topic, for the incidents."""
        for messages in actions_consumer.poll(timeout_ms=0).values():
            for m in messages:
                rec = parse_action(m.value)
                if rec is not None:
                    self.store.add_action(rec)
        for messages in findings_consumer.poll(timeout_ms=0, max_records=2000).values():
            for m in messages:
                try:
                    data = json.loads(m.value or b"")
                except ValueError:
                    continue
                if isinstance(data, dict):
                    self.store.add_finding(data)

    def _backfill(self, now: float) -> None:
        """The charts of incidents rebuilt at start, from the metrics re-read (as far back as they reach)."""
        step = max(self.settings.policy_eval_interval_s, 1.0)
        for inc in self.store.needs_backfill():
            rule = next((r for r in self.engine.policy.rules if r.name == inc.rule), None)
            end = inc.resolved_at + max(60.0, inc.window_s) if inc.resolved_at is not None else now
            if rule is None:
                self.store.set_backfill(inc, [])
                continue
            start = inc.start - inc.window_s
            n = max(2, min(self.store.chart_points, int((end - start) / step) + 1))
            times = [start + i * (end - start) / (n - 1) for i in range(n)]
            self.store.set_backfill(inc, self.engine.values(rule, inc.group, times))

    def _consumer_since(self, role: str, client_id: str, lookback_s: float):
        """All partitions of the topic of ``role``, from ``lookback_s`` ago (or the beginning)."""
        from kafka import TopicPartition

        name = topic_name(self.settings, role)
        cons = consumer(self.settings, client_id)
        parts = cons.partitions_for_topic(name) or range(topic_specs(self.settings)[role].partitions)
        tps = [TopicPartition(name, p) for p in sorted(parts)]
        cons.assign(tps)
        since_ms = int((time.time() - lookback_s) * 1000)
        offsets = None
        if not self.settings.embedded:  # the embedded broker answers offset look-ups wrongly
            try:
                offsets = cons.offsets_for_times({tp: since_ms for tp in tps})
            except Exception:  # noqa: BLE001 - an old broker: read from the beginning
                offsets = None
        for tp in tps:
            found = offsets.get(tp) if offsets else None
            if found is not None:
                cons.seek(tp, found.offset)
            else:
                cons.seek_to_beginning(tp)
        return cons
