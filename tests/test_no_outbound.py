"""No outbound connection but those configured (SECURITY.md, "Connections").

Every DNS lookup and every connection to a non-loopback address is refused and recorded
(tests/netguard.py) while:

* the worker's default detectors (``Settings().detectors``, built by ``detectors.registry.build``
  with the worker's options) run through the worker's pipeline on events with e-mail addresses,
  URLs, phone numbers, an IBAN, secrets, and a dead letter to redact: in a fresh interpreter,
  with an empty tldextract cache and the Hugging Face variables unset, as a new worker starts;
* the gateway proxies to an upstream on 127.0.0.1 and taps to the (embedded) broker;
* the policy agent starts against the broker and dispatches an alert, a rollback and a kill to
  Alertmanager, webhooks and the control topic, all on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from streams.actions.agent import AgentMetrics, Dispatcher, PolicyAgent
from streams.actions.log import producer
from streams.events.schema import ActionRecord
from streams.events.topics import ensure_topics
from streams.gateway import Gateway

from .conftest import ROOT, wait_for
from .netguard import NetGuard, is_loopback
from .services import Receiver

PUBLIC_SUFFIX_LIST = "https://publicsuffix.org/list/public_suffix_list.dat"


def test_the_guard_refuses_and_records_what_is_not_loopback():
    import socket

    guard = NetGuard().install()
    try:
        with pytest.raises(OSError):
            socket.getaddrinfo("publicsuffix.org", 443)
        with pytest.raises(OSError), socket.socket() as s:
            s.connect(("192.0.2.1", 9))
        assert socket.getaddrinfo("127.0.0.1", 80) and socket.getaddrinfo(None, 80)
    finally:
        guard.uninstall()
    assert guard.attempts == ["getaddrinfo 'publicsuffix.org':443", "connect ('192.0.2.1', 9)"]
    assert is_loopback("::1") and is_loopback("localhost") and not is_loopback("10.0.0.1")


def test_the_workers_detectors_make_no_outbound_call_from_a_fresh_start(tmp_path):
    cache = tmp_path / "tldextract-cache"
    cache.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "TLDEXTRACT_", "STREAMWARDEN_"))}
    # A fresh tldextract cache (a warm one hides the download), and the suffix list URL given, so
    # that anything calling tldextract's own extractor would try to fetch it.
    env.update(TLDEXTRACT_CACHE=str(cache), TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS=PUBLIC_SUFFIX_LIST, PYTHONPATH=str(ROOT))
    out = tmp_path / "seen.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.no_outbound_child", str(out), str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    seen = json.loads(out.read_text())
    assert seen["detectors"] == [
        "descriptors",
        "pii",
        "bias",
        "consistency",
        "grounding",
        "injection",
        "toxicity",
        "drift",
        "descriptor_drift",
    ]
    assert seen["product"] == [], seen["product"]
    assert seen["cache_files"] == []  # and nothing written to tldextract's cache
    # The detectors' start-up set the Hugging Face switches (they were unset).
    assert seen["environment"]["HF_HUB_OFFLINE"] == "1" and seen["environment"]["TRANSFORMERS_OFFLINE"] == "1"
    # It did run: PII leaks found, a drift report built (evidently).
    assert {"pii_leak"} <= {f["kind"] for f in seen["findings"] if f["detector"] == "pii"}
    assert {"ungrounded_response"} <= {f["kind"] for f in seen["findings"] if f["detector"] == "grounding"}  # the NLI model ran
    assert seen["reports"] and all(Path(p).exists() for p in seen["reports"])
    # The control: tldextract's module-level extractor, from that fresh cache, does try to download.
    assert any("publicsuffix.org" in a for a in seen["control"]), seen["control"]


@pytest.fixture
def guard():
    g = NetGuard().install()
    yield g
    g.uninstall()


async def _upstream_chat(request: web.Request) -> web.Response:
    body = await request.json()
    return web.json_response(
        {
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"Mail ops@example.org ({body['model']})"},
                    "finish_reason": "stop",
                }
            ]
        }
    )


def test_the_gateway_connects_only_to_its_upstream_and_kafka(settings, guard):
    ensure_topics(settings)

    async def main():
        up = web.Application()
        up.router.add_post("/v1/chat/completions", _upstream_chat)
        up_runner = web.AppRunner(up, handle_signals=False)
        await up_runner.setup()
        site = web.TCPSite(up_runner, "127.0.0.1", 0)
        await site.start()
        up_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        gateway = Gateway(settings.model_copy(update={"gateway_upstream_url": f"http://127.0.0.1:{up_port}/v1"}))
        gw_runner = web.AppRunner(gateway.app(), handle_signals=False)
        await gw_runner.setup()
        gw_site = web.TCPSite(gw_runner, "127.0.0.1", 0)
        await gw_site.start()
        gw_port = gw_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw_port}", timeout=30) as client:
                for _ in range(3):
                    r = await client.post("/v1/chat/completions", json={"model": "chat-a", "messages": [{"role": "user", "content": "hi"}]})
                    assert r.status_code == 200, r.text
                deadline = time.monotonic() + 30
                while not gateway.watcher.ready.is_set() and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                return gateway.tap, (await client.get("/healthz")).json()
        finally:
            await gw_runner.cleanup()  # closes the tap: what it holds reaches the broker
            await up_runner.cleanup()

    tap, health = asyncio.run(main())
    assert health["status"] == "ok"
    assert tap.stats.sent == 3, tap.stats
    assert guard.attempts == []


def test_the_policy_agent_calls_only_its_configured_targets(settings, guard):
    ensure_topics(settings)
    with Receiver() as receiver:
        s = settings.model_copy(
            update={
                "policy_web_port": 0,
                "alertmanager_urls": [receiver.url("")],
                "alert_webhooks": [receiver.url("/hook")],
                "rollback_webhook_url": receiver.url("/rollback"),
                "webhook_attempts": 1,
            }
        )
        agent = PolicyAgent(s)
        runner = threading.Thread(target=agent.run, daemon=True)
        runner.start()
        try:
            assert agent.ready.wait(60), "the policy agent did not start"
            prod = producer(s, "no-outbound-test")
            dispatcher = Dispatcher(s, prod, AgentMetrics())
            base = dict(rule="pii_leak", model="support-assistant", model_version="2026.11.1", reason="test")
            outcomes = [
                dispatcher.dispatch(ActionRecord(action="alert", action_id="a1", **base)),
                dispatcher.dispatch(ActionRecord(action="rollback", action_id="a2", to_version="2026.10.4", **base)),
                dispatcher.dispatch(ActionRecord(action="kill", action_id="a3", **base)),
            ]
            prod.close(timeout=5)
        finally:
            agent.stop_event.set()
            runner.join(30)
        wait_for(lambda: receiver.received("/hook"), 10, message="the generic webhook")
    assert all(v == "ok" for o in outcomes for v in o.results.values()), [o.results for o in outcomes]
    assert receiver.received("/api/v2/alerts") and receiver.received("/rollback")
    assert guard.attempts == []
