"""``streamwarden gateway``: an OpenAI-compatible proxy in front of the model that enforces the kill switch.

Where an event can enter without a client library: every chat completion that passes is
tapped to the inference topic (the same tap as everywhere), streaming included. The
gateway watches the control topic; while a model's switch is engaged it serves the switch's
fallback (``model:NAME``: the same request to another model) or a clear 503, from the moment
it reads the switch (polled every 100 ms), without a restart.

Endpoints: ``POST /v1/chat/completions`` (``stream: true`` passes server-sent events through
as they arrive; a model server that fails in the middle of a stream ends it with an ``error``
event, tapped and counted as ``upstream_error``), ``GET /v1/models``, ``GET /healthz``,
``GET /metrics``, and the admin endpoints ``GET /admin/killswitch`` and
``POST /admin/killswitch/{model}`` (``{"engaged": bool, "reason": str, "fallback": str|null}``),
which need ``Authorization: Bearer <gateway_admin_token>`` and are off when no token is set.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import httpx
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from streams.actions.killswitch import ControlWatcher, set_switch
from streams.auth import bearer_matches
from streams.errors import ConfigurationError
from streams.events.schema import ChatMessage, InferenceEvent, KillSwitchState
from streams.settings import Settings

log = logging.getLogger(__name__)

_ROLES = {"system", "user", "assistant", "tool", "developer"}


class GatewayMetrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "streamwarden_gateway_requests_total",
            "Chat completion requests, by model asked (a served model's name, or 'other') and outcome "
            "(upstream, fallback, killed, upstream_error, bad_request).",
            ["model", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "streamwarden_gateway_request_duration_seconds",
            "Time to the last byte of a response.",
            ["model"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        self.killswitch = Gauge("streamwarden_killswitch_engaged", "1 while the kill switch of a model is engaged.", ["model"], registry=r)
        self.tap_failures = Counter("streamwarden_gateway_tap_failures_total", "Exchanges that could not be tapped.", registry=r)


def _error_body(message: str, code: str) -> dict:
    return {"error": {"message": message, "type": "streamwarden_gateway", "code": code}}


def _error(status: int, message: str, code: str, headers: dict | None = None) -> web.Response:
    return web.json_response(_error_body(message, code), status=status, headers=headers)


def _text_of(content: Any) -> str:
    """OpenAI message content: a string, or a list of parts of which the text ones count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


class Gateway:
    def __init__(self, settings: Settings, tap=None, watcher: ControlWatcher | None = None):
        if not settings.gateway_upstream_url:
            raise ConfigurationError("the gateway needs gateway_upstream_url (the model server's OpenAI-compatible base URL)")
        self.upstream_url: str = settings.gateway_upstream_url
        self.settings = settings
        self.metrics = GatewayMetrics()
        self.watcher = watcher or ControlWatcher(settings, on_change=self._on_switch)
        self.tap = tap
        self._client: httpx.AsyncClient | None = None
        self._models = frozenset(settings.gateway_models) | frozenset(settings.gateway_model_versions)

    def _label(self, model: str) -> str:
        """The metrics label of the model a client asked for: a model the gateway knows (configured, or
        named by a kill switch: its model or its fallback), else 'other': bounded series, no client text."""
        if model in self._models or model in self.watcher.states:
            return model
        if any(st.fallback == f"model:{model}" for st in list(self.watcher.states.values())):
            return model
        return "other"

    def _on_switch(self, state: KillSwitchState | None, model: str) -> None:
        engaged = bool(state and state.engaged)
        self.metrics.killswitch.labels(model).set(1 if engaged else 0)
        log.warning("kill switch %s for %s", "ENGAGED" if engaged else "released", model)

    # -- app -----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/admin/killswitch", self.admin_status)
        app.router.add_post("/admin/killswitch/{model}", self.admin_set)
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _startup(self, app) -> None:
        self._client = httpx.AsyncClient(timeout=self.settings.gateway_timeout_s)
        self.watcher.start()
        if self.tap is None:
            from streams.tap import Tap

            self.tap = Tap(settings=self.settings)

    async def _cleanup(self, app) -> None:
        if self._client is not None:
            await self._client.aclose()
        self.watcher.stop()
        if self.tap is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.tap.close)

    # -- public endpoints ----------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        if self.watcher.error is not None:
            return web.json_response({"status": "error", "control": type(self.watcher.error).__name__}, status=503)
        if not self.watcher.ready.is_set():
            return web.json_response({"status": "starting", "control": "reading"}, status=503)
        engaged = sorted(m for m, s in self.watcher.states.items() if s.engaged)
        return web.json_response({"status": "ok", "killswitch_engaged": engaged})

    @property
    def client(self) -> httpx.AsyncClient:
        """The upstream client (made when the server starts)."""
        if self._client is None:
            raise RuntimeError("the gateway has not started")
        return self._client

    async def prometheus(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    async def models(self, request: web.Request) -> web.StreamResponse:
        r = await self.client.get(self._url(self.upstream_url, "/models"), headers=self._auth())
        return web.Response(body=r.content, status=r.status_code, content_type="application/json")

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        t0 = time.perf_counter()
        try:
            body = await request.json()
            model = body["model"]
            if not isinstance(model, str) or not isinstance(body.get("messages"), list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            self.metrics.requests.labels("", "bad_request").inc()
            return _error(400, "the body must be JSON with a 'model' string and a 'messages' list", "bad_request")
        if not self.watcher.ready.is_set():
            await asyncio.get_running_loop().run_in_executor(None, self.watcher.ready.wait, 10.0)
            if not self.watcher.ready.is_set():
                return _error(503, "the gateway has not read the kill-switch state yet", "starting")
        label = self._label(model)
        state = self.watcher.state(model)
        base, served_model, served_by = self.upstream_url, model, "upstream"
        if state is not None:
            fallback = state.fallback if state.fallback and state.fallback != "none" else None
            if fallback is None:
                self.metrics.requests.labels(label, "killed").inc()
                return _error(
                    503,
                    f"The model '{model}' is switched off by the streamwarden kill switch ({state.reason}). No fallback is configured.",
                    "kill_switch",
                    headers={"Retry-After": "60", "X-Streamwarden-Kill-Switch": "engaged"},
                )
            served_model = fallback.split(":", 1)[1]
            base = self.settings.gateway_fallback_url or self.upstream_url
            served_by = f"fallback:{served_model}"
            body = {**body, "model": served_model}
        outcome = "upstream" if served_by == "upstream" else "fallback"
        headers = {"X-Streamwarden-Served-By": served_by}
        if body.get("stream"):
            return await self._stream(request, body, base, model, served_model, label, outcome, headers, t0)
        try:
            r = await self.client.post(self._url(base, "/chat/completions"), json=body, headers=self._auth())
        except httpx.HTTPError as exc:
            self._tap(body, served_model, "", t0, error=type(exc).__name__, asked=model)
            self.metrics.requests.labels(label, "upstream_error").inc()
            return _error(502, f"the model server did not answer ({type(exc).__name__})", "upstream_unreachable", headers)
        text, finish, usage = "", None, dict[str, Any]()
        if r.status_code < 300:
            try:
                data = r.json()
                choice = (data.get("choices") or [{}])[0]
                text = _text_of((choice.get("message") or {}).get("content"))
                finish, usage = choice.get("finish_reason"), data.get("usage") or {}
            except ValueError:
                pass
        error = None if r.status_code < 300 else str(r.status_code)
        self._tap(
            body, served_model, text, t0, error=error, finish=finish, usage=usage, asked=model, version=r.headers.get("x-model-version")
        )
        self.metrics.requests.labels(label, outcome if error is None else "upstream_error").inc()
        self.metrics.latency.labels(label).observe(time.perf_counter() - t0)
        return web.Response(body=r.content, status=r.status_code, content_type="application/json", headers=headers)

    async def _stream(self, request, body, base, model, served_model, label, outcome, headers, t0) -> web.StreamResponse:
        parts: list[str] = []
        finish = error = None
        req = self.client.build_request("POST", self._url(base, "/chat/completions"), json=body, headers=self._auth())
        try:
            upstream = await self.client.send(req, stream=True)
        except httpx.HTTPError as exc:
            self._tap(body, served_model, "", t0, error=type(exc).__name__, asked=model)
            self.metrics.requests.labels(label, "upstream_error").inc()
            return _error(502, f"the model server did not answer ({type(exc).__name__})", "upstream_unreachable", headers)
        try:
            if upstream.status_code >= 300:
                content = await upstream.aread()
                self._tap(body, served_model, "", t0, error=str(upstream.status_code), asked=model)
                self.metrics.requests.labels(label, "upstream_error").inc()
                return web.Response(body=content, status=upstream.status_code, content_type="application/json", headers=headers)
            resp = web.StreamResponse(status=200, headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            await resp.prepare(request)
            buffer = b""
            try:
                async for chunk in upstream.aiter_raw():
                    await resp.write(chunk)
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        finish = _read_sse_line(line, parts) or finish
            except httpx.HTTPError as exc:  # the status is sent: the client gets an error event instead of a silent cut
                error = type(exc).__name__
                log.warning("the model server failed in the middle of a stream (%s)", error)
                message = f"the model server failed in the middle of the response ({error})"
                await resp.write(b"data: " + json.dumps(_error_body(message, "upstream_interrupted")).encode() + b"\n\n")
            await resp.write_eof()
        finally:
            await upstream.aclose()
        self._tap(
            body, served_model, "".join(parts), t0, error=error, finish=finish, asked=model, version=upstream.headers.get("x-model-version")
        )
        self.metrics.requests.labels(label, outcome if error is None else "upstream_error").inc()
        self.metrics.latency.labels(label).observe(time.perf_counter() - t0)
        return resp

    # -- admin ---------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> web.Response | None:
        token = self.settings.gateway_admin_token
        if token is None or not token.get_secret_value():
            return _error(403, "the admin endpoints are off: set gateway_admin_token", "admin_disabled")
        if not bearer_matches(request.headers.get("Authorization"), token.get_secret_value()):
            return _error(401, "a valid bearer token is required", "unauthorized", headers={"WWW-Authenticate": "Bearer"})
        return None

    async def admin_status(self, request: web.Request) -> web.Response:
        denied = self._authorised(request)
        if denied is not None:
            return denied
        return web.json_response({m: json.loads(s.model_dump_json()) for m, s in sorted(self.watcher.states.items())})

    async def admin_set(self, request: web.Request) -> web.Response:
        denied = self._authorised(request)
        if denied is not None:
            return denied
        model = request.match_info["model"]
        try:
            body = await request.json()
            engaged, reason = body["engaged"], body["reason"]
            fallback = body.get("fallback")
            if not isinstance(engaged, bool) or not isinstance(reason, str) or not reason.strip():
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return _error(400, 'send {"engaged": true|false, "reason": "why", "fallback": "model:NAME"|null}', "bad_request")
        by = request.headers.get("X-Streamwarden-Actor", "gateway-admin")[:128]
        loop = asyncio.get_running_loop()
        state, record = await loop.run_in_executor(
            None, lambda: set_switch(self.settings, model, engaged, reason, fallback, by=f"human:{by}")
        )
        return web.json_response({"state": json.loads(state.model_dump_json()), "action_id": record.action_id})

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    def _url(base: str, path: str) -> str:
        return base.rstrip("/") + path

    def _auth(self) -> dict[str, str]:
        key = self.settings.gateway_upstream_api_key
        return {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}

    def _tap(
        self,
        body: dict,
        model: str,
        text: str,
        t0: float,
        *,
        error: str | None = None,
        finish: str | None = None,
        usage: dict | None = None,
        asked: str | None = None,
        version: str | None = None,
    ) -> None:
        try:
            messages = [m for m in body.get("messages", []) if isinstance(m, dict)]
            chat = [ChatMessage(role=m.get("role"), content=_text_of(m.get("content"))) for m in messages if m.get("role") in _ROLES]
            prompt: Any = chat or "\n".join(_text_of(m.get("content")) for m in messages) or "(empty)"
            usage = usage or {}
            metadata: dict[str, Any] = {"gateway": True}
            if asked and asked != model:
                metadata["fallback_for"] = asked
            event = InferenceEvent(
                event_id=str(uuid.uuid4()),
                timestamp=datetime.now(timezone.utc),
                model=model,
                model_version=version or self.settings.gateway_model_versions.get(model, "unknown"),
                route=self.settings.gateway_route,
                prompt=prompt,
                response=text,
                latency_ms=(time.perf_counter() - t0) * 1000,
                input_tokens=usage.get("prompt_tokens"),
                output_tokens=usage.get("completion_tokens"),
                finish_reason=finish,
                error_type=error,
                metadata=metadata,
            )
            if not self.tap.record(event):
                self.metrics.tap_failures.inc()
        except Exception:  # noqa: BLE001 - serving never fails because tapping did
            self.metrics.tap_failures.inc()
            log.warning("an exchange could not be tapped", exc_info=False)


def _read_sse_line(line: bytes, parts: list[str]) -> str | None:
    """Collect the text deltas of one server-sent-events line; returns a finish reason if it has one."""
    line = line.strip()
    if not line.startswith(b"data:"):
        return None
    data = line[5:].strip()
    if data == b"[DONE]":
        return None
    try:
        chunk = json.loads(data)
        choice = (chunk.get("choices") or [{}])[0]
        delta = choice.get("delta") or {}
        if isinstance(delta.get("content"), str):
            parts.append(delta["content"])
        return choice.get("finish_reason")
    except (ValueError, AttributeError, IndexError):
        return None


def run_gateway(settings: Settings) -> None:
    gateway = Gateway(settings)
    web.run_app(gateway.app(), host=settings.gateway_host, port=settings.gateway_port, print=None, access_log=None)
