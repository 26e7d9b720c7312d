"""Telling people and machines: Alertmanager's v2 API, signed webhooks, the rollback webhook.

Every webhook body is JSON signed with HMAC-SHA256 in ``X-Streamwarden-Signature``:
``t=<unix seconds>,v1=<hex of HMAC(key, "<t>." + body)>``. The timestamp is signed too, so a
receiver can refuse replays older than a tolerance (:func:`verify_signature` does both).
Calls are retried with exponential backoff on connection errors, timeouts, 408, 429 and 5xx;
other 4xx answers are final. ``Idempotency-Key`` is the action id: a receiver that saw it
already must not act twice (the agent re-sends a decision it has no outcome for on restart).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from streams.events.schema import ActionRecord

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Streamwarden-Signature"
RETRYABLE = {408, 425, 429}


def sign(body: bytes, key: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else int(timestamp)
    mac = hmac.new(key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_signature(body: bytes, header: str | None, key: bytes, tolerance_s: float = 300.0, now: float | None = None) -> bool:
    """True when ``header`` is a valid signature of ``body`` under ``key``, made within the tolerance."""
    if not header:
        return False
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
        given = parts["v1"]
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = hmac.new(key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)


@dataclass
class CallResult:
    ok: bool
    attempts: int
    detail: str

    def summary(self) -> str:
        return "ok" if self.ok else f"failed: {self.detail} after {self.attempts} attempt(s)"


def post_json(
    url: str,
    payload: Any,
    *,
    key: bytes | None = None,
    idempotency_key: str | None = None,
    attempts: int = 6,
    backoff_s: float = 0.5,
    timeout_s: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> CallResult:
    body = json.dumps(payload, sort_keys=True, default=str).encode()
    detail = ""
    for attempt in range(1, attempts + 1):
        headers = {"Content-Type": "application/json", "User-Agent": "streamwarden"}
        if key is not None:
            headers[SIGNATURE_HEADER] = sign(body, key)
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        try:
            r = httpx.post(url, content=body, headers=headers, timeout=timeout_s)
            if r.status_code < 300:
                return CallResult(True, attempt, f"HTTP {r.status_code}")
            detail = f"HTTP {r.status_code}"
            if r.status_code < 500 and r.status_code not in RETRYABLE:
                return CallResult(False, attempt, detail)
        except httpx.HTTPError as exc:
            detail = type(exc).__name__
        if attempt < attempts:
            sleep(backoff_s * 2 ** (attempt - 1))
    return CallResult(False, attempts, detail)


def alertmanager_alert(rec: ActionRecord, resolved: bool = False, generator_url: str | None = None) -> dict:
    """One alert in Alertmanager's v2 format. Labels identify it (so re-sends deduplicate)."""
    labels = {
        "alertname": f"streamwarden:{rec.rule}" if rec.rule else f"streamwarden:{rec.action}",
        "severity": rec.severity,
        "model": rec.model,
        "model_version": rec.model_version,
        "route": rec.route,
        "source": "streamwarden",
    }
    if rec.rule:
        labels["rule"] = rec.rule
    actions = rec.evidence.get("actions") if isinstance(rec.evidence, dict) else None
    annotations = {
        "summary": f"{rec.rule or rec.action} on {rec.model} {rec.model_version}".strip(),
        "description": rec.reason,
        "evidence": json.dumps({k: v for k, v in rec.evidence.items() if k != "actions"}, sort_keys=True, default=str),
        "actions": ", ".join(actions) if actions else "alert",
        "action_id": rec.action_id,
    }
    if rec.link:
        annotations["dashboard"] = rec.link
    if generator_url:
        annotations["incident"] = generator_url
    alert: dict[str, Any] = {"labels": labels, "annotations": annotations, "startsAt": rec.decided_at.isoformat()}
    if resolved:
        alert["endsAt"] = datetime.now(timezone.utc).isoformat()
    else:
        # Alertmanager resolves an alert it does not hear about again; the agent re-sends before.
        alert["endsAt"] = (datetime.now(timezone.utc) + timedelta(minutes=10)).isoformat()
    if generator_url or rec.link:
        alert["generatorURL"] = generator_url or rec.link
    return alert


def send_alertmanager(base_url: str, alerts: list[dict], attempts: int = 6, sleep=time.sleep) -> CallResult:
    return post_json(base_url.rstrip("/") + "/api/v2/alerts", alerts, attempts=attempts, sleep=sleep)


def webhook_payload(rec: ActionRecord, incident_url: str | None = None) -> dict:
    """Every action as JSON; ``incident_url``: the page of its incident in the policy agent's web UI."""
    payload = {"type": "streamwarden.action", **rec.model_dump(mode="json")}
    if incident_url:
        payload["incident_url"] = incident_url
    return payload


def rollback_payload(rec: ActionRecord) -> dict:
    return {
        "type": "streamwarden.rollback",
        "action_id": rec.action_id,
        "model": rec.model,
        "from_version": rec.model_version,
        "to_version": rec.to_version,
        "stage": rec.stage,
        "route": rec.route,
        "rule": rec.rule,
        "reason": rec.reason,
        "evidence": rec.evidence,
        "decided_at": rec.decided_at.isoformat(),
    }
