"""The gateway in-process, without Kafka: a recording tap, a kill-switch view set by the test, and
a tiny aiohttp upstream (which can die in the middle of a stream)."""

from __future__ import annotations

import asyncio
import json
import random
import string
import threading

import httpx
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from streams.events.schema import KillSwitchState
from streams.gateway import Gateway
from streams.local.broker import free_port
from streams.settings import Settings


class RecordingTap:
    def __init__(self):
        self.events = []

    def record(self, event) -> bool:
        self.events.append(event)
        return True

    def close(self, timeout_s: float | None = None):
        return None


class StaticWatcher:
    """The kill-switch states the test sets, read at once."""

    def __init__(self, states: dict[str, KillSwitchState] | None = None):
        self.states = dict(states or {})
        self.ready = threading.Event()
        self.ready.set()
        self.error = None

    def start(self):
        return self

    def stop(self) -> None:
        pass

    def state(self, model: str):
        st = self.states.get(model)
        return st if st is not None and st.engaged else None


def _chunk(text: str | None, finish: str | None = None) -> bytes:
    delta = {"content": text} if text is not None else {}
    chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def upstream_chat(request: web.Request) -> web.StreamResponse:
    """Answers 'Hello world'; a model named 'dies-mid-stream' sends 'Hello' and drops the connection."""
    body = await request.json()
    if not body.get("stream"):
        return web.json_response(
            {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello world"}, "finish_reason": "stop"}]}
        )
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    await resp.write(_chunk("Hello"))
    if body["model"] == "dies-mid-stream":
        await asyncio.sleep(0.05)
        request.transport.abort()  # the model server crashes: the chunked body never ends
        return resp
    await resp.write(_chunk(" world"))
    await resp.write(_chunk(None, "stop") + b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


def with_gateway(scenario, watcher: StaticWatcher | None = None, **settings):
    """Run ``scenario(client, gateway)`` against a gateway in front of the test upstream."""

    async def main():
        up = web.Application()
        up.router.add_post("/v1/chat/completions", upstream_chat)
        up_runner, up_url = await _serve(up)
        gateway = Gateway(Settings(gateway_upstream_url=f"{up_url}/v1", **settings), tap=RecordingTap(), watcher=watcher or StaticWatcher())
        gw_runner, gw_url = await _serve(gateway.app())
        try:
            async with httpx.AsyncClient(base_url=gw_url, timeout=10) as client:
                return await scenario(client, gateway)
        finally:
            await gw_runner.cleanup()
            await up_runner.cleanup()

    return asyncio.run(main())


def chat(model: str, stream: bool = False) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}


def model_labels(metrics_text: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if "model" in sample.labels:
                out.setdefault(sample.name, set()).add(sample.labels["model"])
    return out


def test_metrics_label_only_the_models_the_gateway_knows():
    rng = random.Random(3)
    random_names = ["".join(rng.choices(string.ascii_letters + string.digits + '{}"=,\\ ', k=12)) for _ in range(60)]
    switched = {"old-model": KillSwitchState(model="old-model", engaged=True, reason="incident", fallback="model:backup")}
    known = {"chat-a", "chat-b", "old-model", "backup"}

    async def scenario(client, gateway):
        for name in ["chat-a", "chat-b", "old-model", "backup", *random_names]:
            for stream in (False, True):
                r = await client.post("/v1/chat/completions", json=chat(name, stream))
                assert r.status_code == 200, r.text
        return (await client.get("/metrics")).text

    text = with_gateway(scenario, StaticWatcher(switched), gateway_models=["chat-a"], gateway_model_versions={"chat-b": "1.0"})
    labels = model_labels(text)
    assert labels["streamwarden_gateway_requests_total"] == known | {"other"}
    assert labels["streamwarden_gateway_request_duration_seconds_count"] == known | {"other"}
    assert all(values <= known | {"other"} for values in labels.values()), labels
    assert not any(name in text for name in random_names)


def test_an_upstream_that_dies_mid_stream_is_tapped_and_counted():
    async def scenario(client, gateway):
        ok = await client.post("/v1/chat/completions", json=chat("chat-a", stream=True))
        cut = await client.post("/v1/chat/completions", json=chat("dies-mid-stream", stream=True))
        return ok, cut, gateway, (await client.get("/metrics")).text

    ok, cut, gateway, text = with_gateway(scenario, gateway_models=["chat-a", "dies-mid-stream"])
    assert ok.status_code == 200 and "[DONE]" in ok.text
    # The client gets what came, then an error event (not a silently cut answer).
    assert cut.status_code == 200 and '"Hello"' in cut.text and "upstream_interrupted" in cut.text
    good, bad = gateway.tap.events
    assert (good.model, good.response, good.error_type, good.finish_reason) == ("chat-a", "Hello world", None, "stop")
    assert (bad.model, bad.response, bad.finish_reason) == ("dies-mid-stream", "Hello", None)
    assert bad.error_type == "RemoteProtocolError"
    counts = {
        (s.labels["model"], s.labels["outcome"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "streamwarden_gateway_requests"
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert counts == {("chat-a", "upstream"): 1.0, ("dies-mid-stream", "upstream_error"): 1.0}


def test_the_bearer_check_every_endpoint_shares():
    from streams.auth import bearer_matches

    assert bearer_matches("Bearer s3cret", "s3cret")
    assert not bearer_matches("Bearer s3cret ", "s3cret") and not bearer_matches("bearer s3cret", "s3cret")
    assert not bearer_matches(None, "s3cret") and not bearer_matches("", "s3cret")
    # No token configured: nothing matches, not even the header an empty token would make.
    assert not bearer_matches("Bearer ", "") and not bearer_matches("Bearer None", None)
