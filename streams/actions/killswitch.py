"""The kill switch: per model, on the compacted control topic (key: the model name).

Engaging or releasing writes the new state there, and an audit entry on the actions topic
(who, why). The gateway watches the topic and serves the fallback as soon as it reads it.
"""

from __future__ import annotations

import getpass
import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timezone

from streams.actions.log import action_json, producer
from streams.events.schema import ActionRecord, KillSwitchState
from streams.events.topics import MARKER_KEY_PREFIX, TopicWatcher, read_until_marker, topic_name
from streams.settings import Settings

log = logging.getLogger(__name__)


def default_actor() -> str:
    try:
        return f"human:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "human:unknown"


def publish_state(settings: Settings, state: KillSwitchState, prod=None, timeout_s: float = 30.0) -> None:
    own = prod is None
    prod = prod or producer(settings, "streamwarden-killswitch")
    try:
        prod.send(topic_name(settings, "control"), key=state.model.encode(), value=state.model_dump_json().encode()).get(timeout=timeout_s)
    finally:
        if own:
            prod.close(timeout=5)


def set_switch(
    settings: Settings, model: str, engaged: bool, reason: str, fallback: str | None = None, by: str | None = None, prod=None
) -> tuple[KillSwitchState, ActionRecord]:
    """A person (CLI, gateway admin) engages or releases the switch: audit entry first, then the state."""
    by = by or default_actor()
    now = datetime.now(timezone.utc)
    record = ActionRecord(
        action="kill" if engaged else "release",
        action_id=f"manual-{uuid.uuid4().hex}",
        model=model,
        severity="critical" if engaged else "info",
        reason=reason,
        fallback=fallback,
        by=by,
        decided_at=now,
    )
    state = KillSwitchState(model=model, engaged=engaged, reason=reason, fallback=fallback, by=by, action_id=record.action_id, at=now)
    own = prod is None
    prod = prod or producer(settings, "streamwarden-killswitch")
    try:
        prod.send(topic_name(settings, "actions"), key=record.action_id.encode(), value=action_json(record), partition=0).get(timeout=30)
        publish_state(settings, state, prod)
    finally:
        if own:
            prod.close(timeout=5)
    return state, record


ROLLOUT_KEY_PREFIX = b"rollout|"


def _apply(states: dict[str, KillSwitchState], key: bytes | None, value: bytes | None) -> str | None:
    if key is None or key.startswith(MARKER_KEY_PREFIX) or key.startswith(ROLLOUT_KEY_PREFIX):
        return None
    model = key.decode("utf-8", "replace")
    if value is None:
        states.pop(model, None)
        return model
    try:
        states[model] = KillSwitchState.model_validate_json(value)
    except ValueError:
        log.warning("control topic: a record that is not a KillSwitchState was skipped (key %r)", model[:64])
        return None
    return model


def rollout_key(model: str, version: str) -> bytes:
    return ROLLOUT_KEY_PREFIX + f"{model}|{version}".encode()


def publish_rollout(
    settings: Settings, model: str, version: str, stage: str, previous_version: str | None, by: str | None = None, prod=None
) -> dict:
    """Where a model version stands in its staged rollout (the deployment controller, or a person, says)."""
    state = {
        "model": model,
        "version": version,
        "stage": stage,
        "previous_version": previous_version,
        "by": by or default_actor(),
        "at": datetime.now(timezone.utc).isoformat(),
    }
    own = prod is None
    prod = prod or producer(settings, "streamwarden-rollout")
    try:
        prod.send(topic_name(settings, "control"), key=rollout_key(model, version), value=json.dumps(state).encode()).get(timeout=30)
    finally:
        if own:
            prod.close(timeout=5)
    return state


def read_rollouts(settings: Settings, timeout_s: float = 30.0) -> dict[tuple[str, str], dict]:
    """Every rollout stage set on the control topic, by (model, version)."""
    out: dict[tuple[str, str], dict] = {}

    def keep(key, value):
        if key and key.startswith(ROLLOUT_KEY_PREFIX) and value:
            try:
                st = json.loads(value)
                out[(st["model"], st["version"])] = st
            except (ValueError, KeyError):
                log.warning("control topic: a rollout record that does not parse was skipped")

    cons = read_until_marker(settings, "control", MARKER_KEY_PREFIX + uuid.uuid4().hex.encode(), None, keep, timeout_s)
    cons.close()
    return out


def read_states(settings: Settings, timeout_s: float = 30.0) -> dict[str, KillSwitchState]:
    """The current state of every model's switch (reads the control topic to its end)."""
    states: dict[str, KillSwitchState] = {}
    cons = read_until_marker(
        settings, "control", MARKER_KEY_PREFIX + uuid.uuid4().hex.encode(), None, lambda k, v: _apply(states, k, v), timeout_s
    )
    cons.close()
    return states


class ControlWatcher(TopicWatcher):
    """Keeps the control topic's state in memory, in a background thread (the gateway's view).

    ``ready`` is set once everything written before the watcher started has been read.
    """

    thread_name = "streamwarden-control-watcher"

    def __init__(
        self,
        settings: Settings,
        on_change: Callable[[KillSwitchState | None, str], None] | None = None,
        poll_ms: int = 100,
        on_rollout: Callable[[dict], None] | None = None,
    ):
        super().__init__(settings, poll_ms)
        self._on_rollout = on_rollout
        self.states: dict[str, KillSwitchState] = {}
        self._on_change = on_change

    def state(self, model: str) -> KillSwitchState | None:
        st = self.states.get(model)
        return st if st is not None and st.engaged else None

    def _record(self, key: bytes | None, value: bytes | None) -> None:
        if key is not None and key.startswith(ROLLOUT_KEY_PREFIX):
            if self._on_rollout is not None and value:
                try:
                    self._on_rollout(json.loads(value))
                except ValueError:
                    log.warning("control topic: a rollout record that does not parse was skipped")
            return
        self._changed(_apply(self.states, key, value))

    def _changed(self, model: str | None) -> None:
        if model is not None and self._on_change is not None:
            self._on_change(self.states.get(model), model)

    def _run(self) -> None:
        try:
            cons = read_until_marker(
                self.settings,
                "control",
                MARKER_KEY_PREFIX + uuid.uuid4().hex.encode(),
                None,
                self._record,
            )
            self.ready.set()
            log.info("control topic read: %d model(s) with a switch", len(self.states))
            self._follow(cons, lambda m: self._record(m.key, m.value))
            cons.close()
        except BaseException as exc:
            self.error = exc
            log.exception("control watcher stopped")
