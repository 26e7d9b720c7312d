"""The kill switch: per model, on the compacted control topic (key: the model name).

Engaging or releasing writes the new state there, and an audit entry on the actions topic
(who, why). The gateway watches the topic and serves the fallback as soon as it reads it.
"""

from __future__ import annotations

import getpass
import logging
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timezone

from ..schema import ActionRecord, KillSwitchState
from ..settings import Settings
from ..topics import topic_name
from .log import MARKER_KEY_PREFIX, action_json, producer, read_until_marker

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


def set_switch(settings: Settings, model: str, engaged: bool, reason: str, fallback: str | None = None,
               by: str | None = None, prod=None) -> tuple[KillSwitchState, ActionRecord]:
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


def _apply(states: dict[str, KillSwitchState], key: bytes | None, value: bytes | None) -> str | None:
    if key is None or key.startswith(MARKER_KEY_PREFIX):
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


def read_states(settings: Settings, timeout_s: float = 30.0) -> dict[str, KillSwitchState]:
    """The current state of every model's switch (reads the control topic to its end)."""
    states: dict[str, KillSwitchState] = {}
    cons = read_until_marker(
        settings, "control", MARKER_KEY_PREFIX + uuid.uuid4().hex.encode(), None, lambda k, v: _apply(states, k, v), timeout_s
    )
    cons.close()
    return states


class ControlWatcher:
    """Keeps the control topic's state in memory, in a background thread (the gateway's view).

    ``ready`` is set once everything written before the watcher started has been read.
    """

    def __init__(self, settings: Settings, on_change: Callable[[KillSwitchState | None, str], None] | None = None, poll_ms: int = 100):
        self.settings = settings
        self.states: dict[str, KillSwitchState] = {}
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._on_change = on_change
        self._poll_ms = poll_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamwarden-control-watcher", daemon=True)

    def start(self) -> "ControlWatcher":
        """Start reading (once; later calls do nothing)."""
        if self._thread.ident is None:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def state(self, model: str) -> KillSwitchState | None:
        st = self.states.get(model)
        return st if st is not None and st.engaged else None

    def _changed(self, model: str | None) -> None:
        if model is not None and self._on_change is not None:
            self._on_change(self.states.get(model), model)

    def _run(self) -> None:
        try:
            cons = read_until_marker(
                self.settings, "control", MARKER_KEY_PREFIX + uuid.uuid4().hex.encode(), None,
                lambda k, v: self._changed(_apply(self.states, k, v)),
            )
            self.ready.set()
            log.info("control topic read: %d model(s) with a switch", len(self.states))
            while not self._stop.is_set():
                for messages in cons.poll(timeout_ms=self._poll_ms).values():
                    for m in messages:
                        self._changed(_apply(self.states, m.key, m.value))
            cons.close()
        except BaseException as exc:  # noqa: BLE001 - surfaced through .error and /healthz
            self.error = exc
            log.exception("control watcher stopped")


