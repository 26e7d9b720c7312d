"""Policy and actions end to end, on the embedded broker with a real Alertmanager.

A PII-leak burst goes through the gateway -> the worker flags it -> the policy agent
writes a kill and a rollback to the actions topic -> the kill switch engages on the control
topic -> the gateway serves the fallback; Alertmanager delivers the alert to a receiver;
the rollback webhook and a generic webhook get signed, idempotent calls. The agent is
SIGKILLed right after its first decision and restarted: the actions topic still holds one
kill and one rollback.
"""

from __future__ import annotations

import json
import signal
import time

import httpx

from streams.actions.log import read_actions
from streams.actions.notify import SIGNATURE_HEADER, verify_signature
from streams.events.topics import ensure_topics
from streams.local.broker import free_port

from .conftest import http_ok, wait_for
from .model_standin import ModelStandIn
from .services import Alertmanager, Receiver

SECRET = "s3cret-webhook-key"
TOKEN = "admin-token-123"
LEAK = "dana.whitfield@example.com"

POLICY = """
version: 1
dashboard_url: "http://grafana.local/d/streamwarden-overview?var-model={model}"
rules:
  - name: pii-leak
    metric: finding_count
    findings: ["pii.pii_leak"]
    op: ">="
    threshold: 1
    window_s: 60
    resolve_for_s: 600
    severity: critical
    actions: [kill]
    fallback: "model:backup-bot"
  - name: safety-incident
    metric: finding_count
    findings: ["pii.pii_leak"]
    min_severity: high
    op: ">="
    threshold: 1
    window_s: 60
    resolve_for_s: 600
    actions: [rollback]
  - name: never-enough-events
    metric: finding_rate
    findings: ["pii.*"]
    op: ">"
    threshold: 0
    min_events: 100000
    actions: [kill]
  - name: never-long-enough
    metric: finding_count
    findings: ["pii.pii_leak"]
    op: ">="
    threshold: 1
    for_s: 3600
    actions: [kill]
rollouts:
  - model: support-bot
    version: v7
    stage: "10%"
    previous_version: v6
"""


def answer(prompt: str, model: str) -> str:
    if model == "support-bot" and "owner" in prompt:
        return f"The account owner is reachable at {LEAK}."
    return "You can change your plan from Settings > Billing."


def ask(base: str, model: str, prompt: str, stream: bool = False) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": stream}
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30)


def decisions(settings, **match) -> list:
    records, cons = read_actions(settings, "test-reader")
    cons.close()
    return [r for r in records if r.action not in ("outcome", "agent_start") and all(getattr(r, k) == v for k, v in match.items())]


def test_pii_leak_burst_kills_rolls_back_alerts_and_survives_an_agent_restart(settings, tmp_path, start_worker, start_process):
    ensure_topics(settings)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY)
    gw_port, agent_port = free_port(), free_port()
    gw = f"http://127.0.0.1:{gw_port}"
    with ModelStandIn(answer) as model, Receiver() as receiver:
        with Alertmanager(tmp_path / "alertmanager", receiver.url("/alertmanager")) as am:
            env = dict(
                STREAMWARDEN_DETECTORS='["pii"]',
                STREAMWARDEN_POLICY_FILE=str(policy_file),
                STREAMWARDEN_POLICY_WEB_PORT=str(agent_port),
                STREAMWARDEN_ALERTMANAGER_URLS=json.dumps([am.url]),
                STREAMWARDEN_ALERT_WEBHOOKS=json.dumps([receiver.url("/hook")]),
                STREAMWARDEN_ROLLBACK_WEBHOOK_URL=receiver.url("/rollback"),
                STREAMWARDEN_WEBHOOK_SECRET=SECRET,
                STREAMWARDEN_GATEWAY_UPSTREAM_URL=model.base_url,
                STREAMWARDEN_GATEWAY_PORT=str(gw_port),
                STREAMWARDEN_GATEWAY_ADMIN_TOKEN=TOKEN,
                STREAMWARDEN_GATEWAY_MODEL_VERSIONS=json.dumps({"support-bot": "v7"}),
            )
            receiver.fail_first["/rollback"] = 2  # the controller is briefly down: the agent retries
            worker = start_worker(settings, **env)
            agent = start_process(settings, "policy", "run", **env)
            gateway = start_process(settings, "gateway", **env)
            wait_for(lambda: http_ok(f"{gw}/healthz"), 60, message="the gateway to read the control topic")
            wait_for(lambda: http_ok(f"http://127.0.0.1:{settings.web_port}/healthz"), 90, message="the worker to start")

            # Clean traffic, plain and streamed, goes to the model.
            for i in range(10):
                r = ask(gw, "support-bot", f"How do I change my plan? ({i})")
                assert r.status_code == 200 and r.headers["X-Streamwarden-Served-By"] == "upstream"
            streamed = ask(gw, "support-bot", "How do I change my plan?", stream=True)
            assert streamed.status_code == 200 and "data: [DONE]" in streamed.text
            assert "Billing" in "".join(
                json.loads(line[6:])["choices"][0]["delta"].get("content", "")
                for line in streamed.text.splitlines()
                if line.startswith("data: {")
            )

            # The incident: the model starts leaking an email address the user never gave.
            t_first_bad = time.monotonic()
            for i in range(5):
                r = ask(gw, "support-bot", f"Who is the account owner? ({i})")
                assert r.status_code == 200 and LEAK in r.text

            kills = wait_for(lambda: decisions(settings, action="kill", rule="pii-leak"), 60, 0.3, "the kill decision")
            t_action = time.monotonic()
            agent.stop(signal.SIGKILL)  # mid-incident, maybe before it dispatched or wrote the outcome
            agent = start_process(settings, "policy", "run", **env)

            def served_fallback():
                r = ask(gw, "support-bot", "How do I change my plan?")
                return r.status_code == 200 and r.headers["X-Streamwarden-Served-By"] == "fallback:backup-bot"

            wait_for(served_fallback, 30, 0.1, "the gateway to serve the fallback")
            t_fallback = time.monotonic()
            print(
                f"\nfirst bad event -> kill decision {t_action - t_first_bad:.1f}s; -> gateway on fallback {t_fallback - t_first_bad:.1f}s"
            )

            alerts = wait_for(
                lambda: [
                    a
                    for r in receiver.received("/alertmanager")
                    for a in json.loads(r["body"])["alerts"]
                    if a["labels"].get("alertname") == "streamwarden:pii-leak"
                ],
                60,
                0.2,
                "Alertmanager's notification",
            )
            a = alerts[0]
            assert a["labels"]["model"] == "support-bot" and a["labels"]["model_version"] == "v7" and a["status"] == "firing"
            assert "finding_count" in a["annotations"]["description"] and a["annotations"]["dashboard"].endswith("var-model=support-bot")
            assert "kill" in a["annotations"]["actions"]

            rollbacks = wait_for(lambda: receiver.received("/rollback"), 60, 0.2, "the rollback webhook")
            body = rollbacks[0]["body"]
            sent = json.loads(body)
            assert sent["from_version"] == "v7" and sent["to_version"] == "v6" and sent["model"] == "support-bot"
            assert rollbacks[0]["headers"]["Idempotency-Key"] == sent["action_id"]
            assert verify_signature(body, rollbacks[0]["headers"][SIGNATURE_HEADER], SECRET.encode())
            assert not verify_signature(body + b" ", rollbacks[0]["headers"][SIGNATURE_HEADER], SECRET.encode())
            assert not verify_signature(body, rollbacks[0]["headers"][SIGNATURE_HEADER], b"another key")
            assert len(receiver.received("/rollback", ok_only=False)) >= 3  # two 503s, then accepted

            hooks = wait_for(lambda: receiver.received("/hook"), 30, 0.2, "the generic webhook")
            assert all(verify_signature(h["body"], h["headers"][SIGNATURE_HEADER], SECRET.encode()) for h in hooks)
            assert LEAK not in json.dumps([h["body"].decode() for h in hooks + rollbacks])

            # Give the restarted agent time to evaluate the still-breaching window a few times.
            wait_for(
                lambda: len([r for r in _all(settings) if r.action == "agent_start" and r.by.startswith("policy-agent")]) >= 2,
                30,
                0.3,
                "the restarted agent",
            )
            time.sleep(4)
            assert len(decisions(settings, action="kill", rule="pii-leak")) == 1
            assert len(decisions(settings, action="rollback", rule="safety-incident")) == 1
            assert len(decisions(settings, action="should_rollback", model="support-bot", model_version="v7")) == 1
            assert decisions(settings, rule="never-enough-events") == [] and decisions(settings, rule="never-long-enough") == []
            assert kills[0].action_id == decisions(settings, action="kill", rule="pii-leak")[0].action_id
            outcomes = [r for r in _all(settings) if r.action == "outcome" and r.action_id == kills[0].action_id]
            assert outcomes and outcomes[-1].results["control"] == "ok"

            # The agent and the gateway export what they did.
            agent_metrics = httpx.get(f"http://127.0.0.1:{agent_port}/metrics", timeout=5).text
            assert 'streamwarden_policy_rule_state{model="support-bot",model_version="v7",route="",rule="pii-leak"} 2.0' in agent_metrics

            # The incident page of the restarted agent: rebuilt from the topics, the kill with its outcome, the findings.
            def incident_page():
                page = httpx.get(f"http://127.0.0.1:{agent_port}/incidents/{kills[0].episode_id}", timeout=5).text
                return 'id="findings"' in page and "control:" in page and page

            page = wait_for(incident_page, 30, 0.5, "the restarted agent's incident page")
            assert 'class="action-kill"' in page and "pii.pii_leak" in page and LEAK not in page
            assert a["generatorURL"] == f"http://127.0.0.1:{agent_port}/incidents/{kills[0].episode_id}"
            gw_metrics = httpx.get(f"{gw}/metrics", timeout=5).text
            assert 'streamwarden_killswitch_engaged{model="support-bot"} 1.0' in gw_metrics
            assert worker.proc.poll() is None and gateway.proc.poll() is None


def test_killswitch_cli_and_gateway_admin(settings, tmp_path, start_process):
    ensure_topics(settings)
    port = free_port()
    gw = f"http://127.0.0.1:{port}"
    with ModelStandIn(answer) as model:
        env = dict(
            STREAMWARDEN_GATEWAY_UPSTREAM_URL=model.base_url, STREAMWARDEN_GATEWAY_PORT=str(port), STREAMWARDEN_GATEWAY_ADMIN_TOKEN=TOKEN
        )
        start_process(settings, "gateway", **env)
        wait_for(lambda: http_ok(f"{gw}/healthz"), 60, message="the gateway")
        assert ask(gw, "code-bot", "hi").status_code == 200

        t0 = time.monotonic()
        out = _cli(settings, "killswitch", "engage", "code-bot", "--reason", "bad release 1.9", "--by", "alice")
        assert json.loads(out)["state"]["engaged"] is True
        wait_for(lambda: ask(gw, "code-bot", "hi").status_code == 503, 10, 0.05, "the gateway to refuse")
        print(f"\nkill switch engaged -> gateway answering 503: {time.monotonic() - t0:.2f}s (CLI start included)")
        r = ask(gw, "code-bot", "hi")
        assert r.json()["error"]["code"] == "kill_switch" and "bad release 1.9" in r.json()["error"]["message"]
        assert ask(gw, "support-bot", "hi").status_code == 200  # other models are untouched
        status = json.loads(_cli(settings, "killswitch", "status", "--json"))
        assert status["code-bot"]["engaged"] is True and status["code-bot"]["by"] == "human:alice"

        # Admin endpoints: no token, a wrong token, then the right one.
        url = f"{gw}/admin/killswitch/code-bot"
        assert httpx.post(url, json={"engaged": False, "reason": "x"}).status_code == 401
        assert httpx.post(url, json={"engaged": False, "reason": "x"}, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(f"{gw}/admin/killswitch").status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}", "X-Streamwarden-Actor": "bob"}
        assert httpx.post(url, json={"engaged": False}, headers=auth).status_code == 400  # a reason is required
        r = httpx.post(url, json={"engaged": False, "reason": "fixed in 1.9.1"}, headers=auth)
        assert r.status_code == 200 and r.json()["state"]["engaged"] is False
        wait_for(lambda: ask(gw, "code-bot", "hi").status_code == 200, 10, 0.05, "the gateway to serve again")

        audit = [r for r in _all(settings) if r.model == "code-bot" and r.action in ("kill", "release")]
        assert [(r.action, r.by, r.reason) for r in audit] == [
            ("kill", "human:alice", "bad release 1.9"),
            ("release", "human:bob", "fixed in 1.9.1"),
        ]
        rc = _cli(settings, "killswitch", "engage", "code-bot", "--reason", " ", expect_rc=2)
        assert "reason is required" in rc


def _all(settings):
    records, cons = read_actions(settings, "test-reader")
    cons.close()
    return records


def _cli(settings, *args, expect_rc: int = 0) -> str:
    import subprocess
    import sys

    from .conftest import worker_env

    p = subprocess.run([sys.executable, "-m", "streams.cli", *args], env=worker_env(settings), capture_output=True, text=True, timeout=60)
    assert p.returncode == expect_rc, p.stderr
    return p.stdout + p.stderr


ROLLOUT_POLICY = """
version: 1
rules:
  - name: errors
    metric: error_rate
    op: ">"
    threshold: 0.5
    min_events: 10
    actions: [rollback]
rollouts:
  - model: chat
    version: v2
    stage: "1%"
    previous_version: v1
    advance_min_events: 20
    advance_after_s: 2
"""


def test_rollout_stages_set_on_the_control_topic_reach_the_agent(settings, tmp_path, start_process):
    from datetime import datetime, timedelta, timezone

    from streams.events.schema import MetricsRecord
    from streams.events.topics import produce

    ensure_topics(settings)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(ROLLOUT_POLICY)
    start_process(settings, "policy", "run", STREAMWARDEN_POLICY_FILE=str(policy_file), STREAMWARDEN_POLICY_WEB_PORT="0")
    # The agent is up once it has written its start marker (on a busy machine that takes a while).
    wait_for(lambda: any(r.action == "agent_start" and r.by.startswith("policy-agent") for r in _all(settings)), 90, 0.5, "the agent")

    def feed_until(found, message: str, timeout: float = 60.0):
        """Traffic of chat v2 (10 events a second) until ``found()`` returns something: the agent
        advances a stage on recent traffic, so it must keep flowing while it decides."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = datetime.now(timezone.utc)
            rec = MetricsRecord(
                scope="model",
                model="chat",
                model_version="v2",
                route="r",
                worker_id="w",
                events=10,
                window_start=now - timedelta(seconds=1),
                window_end=now,
            )
            produce(settings, "metrics", [(rec.key.encode(), rec.model_dump_json().encode())])
            if result := found():
                return result
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout}s waiting for {message}")

    first = feed_until(lambda: decisions(settings, action="should_advance"), "should_advance at 1%")
    assert [(d.stage, d.to_version) for d in first] == [("1%", "10%")]
    out = _cli(settings, "rollout", "set", "chat", "v2", "--stage", "10%", "--by", "deployer")
    assert json.loads(out)["stage"] == "10%"
    both = feed_until(lambda: (d := decisions(settings, action="should_advance")) and len(d) == 2 and d, "should_advance at 10%")
    assert [(d.stage, d.to_version) for d in both] == [("1%", "10%"), ("10%", "100%")]
    status = json.loads(_cli(settings, "rollout", "status"))
    assert status["chat v2"]["stage"] == "10%" and status["chat v2"]["by"] == "human:deployer"
