"""The incident page, as the person on call uses it, in a real browser (headless Chromium driven by Selenium).

The demo's incident end to end: its policy, its model and version, its planted personal data.
The model behind the gateway starts leaking (the demo's PII phase); the worker flags it, the
policy agent engages the kill switch; Alertmanager (Debian's) delivers the alert, whose
``generatorURL`` is the incident's page. The browser opens that link, sees the incident with its
masked findings and the kill, signs in, releases the kill switch from the page; the gateway serves
the model again and the release is on the actions topic, by the signed-in person. An
unauthenticated release is refused, and no planted value appears in any page's HTML.

Debian's ``chromium`` and ``chromium-driver`` (``make sysdeps`` installs them) and Selenium from
PyPI; Selenium Manager is never asked for anything (the driver is given by path). Without Chromium
the test skips, saying so, except in CI (``CI=true``), where it fails.
``STREAMWARDEN_UPDATE_SCREENSHOT=1`` writes its screenshot to ``docs/incident-page.png`` (the README's).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from streams.actions.log import read_actions
from streams.events.topics import ensure_topics
from streams.local.broker import free_port
from streams.local.demo import demo_policy_file
from streams.local.traffic import _LEAK_VALUES

from .conftest import ROOT, http_ok, wait_for
from .model_standin import ModelStandIn
from .services import Alertmanager, Receiver

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
TOKEN = "oncall-admin-token"
MODEL, VERSION = "support-assistant", "2026.11.1"  # the demo's leaking model
PLANTED = [v for k in ("name", "email", "phone") for v in _LEAK_VALUES[k]]
SCREENSHOT = ROOT / "docs" / "incident-page.png"


def _browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        reason = f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): `make sysdeps` installs them"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI: this test may not skip)")
        pytest.skip(reason)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("needs selenium (the dev extra)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1100,1500", "--lang=en"):
        opts.add_argument(arg)
    # The driver by path: Selenium Manager is not run, nothing is downloaded.
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


def _answer(state: dict):
    def answer(prompt: str, model: str) -> str:
        if state["leaking"] and "owner" in prompt:
            i = state["n"] = state["n"] + 1
            email, phone = _LEAK_VALUES["email"][i % 3], _LEAK_VALUES["phone"][i % 3]
            name = _LEAK_VALUES["name"][i % 3]
            return f"The account is registered to {name}, email {email}, phone {phone}."
        return "You can change your plan from Settings > Billing."

    return answer


def ask(gw: str, prompt: str) -> httpx.Response:
    return httpx.post(f"{gw}/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": prompt}]}, timeout=30)


def _actions(settings) -> list:
    records, cons = read_actions(settings, "test-reader")
    cons.close()
    return records


def test_on_call_opens_the_alert_link_sees_the_evidence_and_releases_the_kill_switch_in_a_browser(
    settings, tmp_path, start_worker, start_process
):
    driver = _browser()
    from selenium.webdriver.common.by import By

    t_start = time.monotonic()
    try:
        ensure_topics(settings)
        agent_port, gw_port = free_port(), free_port()
        agent_url, gw = f"http://127.0.0.1:{agent_port}", f"http://127.0.0.1:{gw_port}"
        state = {"leaking": False, "n": 0}
        with ModelStandIn(_answer(state)) as model, Receiver() as receiver:
            with Alertmanager(tmp_path / "alertmanager", receiver.url("/alertmanager")) as am:
                env = dict(
                    STREAMWARDEN_DETECTORS='["pii"]',
                    STREAMWARDEN_POLICY_FILE=str(demo_policy_file(tmp_path)),
                    STREAMWARDEN_POLICY_WEB_PORT=str(agent_port),
                    STREAMWARDEN_ALERTMANAGER_URLS=json.dumps([am.url]),
                    STREAMWARDEN_ALERT_WEBHOOKS=json.dumps([receiver.url("/hook")]),
                    STREAMWARDEN_ROLLBACK_WEBHOOK_URL=receiver.url("/rollback"),
                    STREAMWARDEN_GATEWAY_UPSTREAM_URL=model.base_url,
                    STREAMWARDEN_GATEWAY_PORT=str(gw_port),
                    STREAMWARDEN_GATEWAY_ADMIN_TOKEN=TOKEN,
                    STREAMWARDEN_GATEWAY_MODEL_VERSIONS=json.dumps({MODEL: VERSION}),
                )
                start_worker(settings, **env)
                start_process(settings, "policy", "run", **env)
                start_process(settings, "gateway", **env)
                wait_for(lambda: http_ok(f"{gw}/healthz"), 60, message="the gateway")
                wait_for(lambda: http_ok(f"{agent_url}/healthz"), 60, message="the policy agent's web UI")
                wait_for(lambda: http_ok(f"http://127.0.0.1:{settings.web_port}/healthz"), 90, message="the worker")
                for i in range(12):  # a few seconds of clean traffic: the chart's baseline
                    assert ask(gw, f"How do I change my plan? ({i})").status_code == 200
                    time.sleep(0.5)

                # The demo's PII phase: the model discloses personal data nobody asked for.
                state["leaking"] = True
                for i in range(6):
                    assert ask(gw, f"Who is the account owner? ({i})").status_code == 200
                wait_for(lambda: ask(gw, "How do I change my plan?").status_code == 503, 90, 0.3, "the kill switch to switch the model off")
                state["leaking"] = False

                # The notification, one click from the evidence.
                alert = wait_for(
                    lambda: next(
                        (
                            a
                            for r in receiver.received("/alertmanager")
                            for a in json.loads(r["body"])["alerts"]
                            if a["labels"].get("alertname") == "streamwarden:pii-leak"
                        ),
                        None,
                    ),
                    60,
                    0.2,
                    "Alertmanager's notification",
                )
                link = alert["generatorURL"]
                assert link.startswith(f"{agent_url}/incidents/"), link
                wait_for(
                    lambda: any(json.loads(h["body"]).get("incident_url") == link for h in receiver.received("/hook")),
                    30,
                    0.2,
                    "a webhook with the incident's URL",
                )

                # An unauthenticated release is refused, and changes nothing.
                release = f"{agent_url}/killswitch/{MODEL}/release"
                assert httpx.post(release, data={"reason": "nope"}).status_code == 401
                assert httpx.post(release, data={"reason": "nope"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
                forged = {"streamwarden_session": "bWFsbG9yeQ.9999999999." + "0" * 64}
                assert httpx.post(release, data={"reason": "nope"}, cookies=forged).status_code == 401
                assert ask(gw, "How do I change my plan?").status_code == 503

                # The person on call opens the link.
                def incident_shown():
                    driver.get(link)
                    findings = driver.find_elements(By.CSS_SELECTOR, "#findings tr")
                    kills = driver.find_elements(By.CSS_SELECTOR, "#actions tr.action-kill")
                    return len(findings) > 1 and kills and driver.find_elements(By.CSS_SELECTOR, "#chart polyline")

                wait_for(incident_shown, 60, 1.0, "the incident page with its findings, the kill and the chart")
                title = driver.find_element(By.ID, "incident-title").text
                assert "pii-leak" in title and MODEL in title and VERSION in title and "firing" in title
                findings_text = driver.find_element(By.ID, "findings").text
                assert "pii.pii_leak" in findings_text and "EMAIL_ADDRESS" in findings_text
                assert "***@***." in findings_text  # the masked form, not the address
                assert "Grafana" in driver.find_element(By.ID, "grafana").text

                # Signs in (from the page's own link) and releases the kill switch.
                driver.find_element(By.LINK_TEXT, "Sign in").click()
                driver.find_element(By.NAME, "name").send_keys("oncall-alice")
                driver.find_element(By.NAME, "token").send_keys(TOKEN)
                driver.find_element(By.ID, "login-submit").click()
                # The click returns before the POST's redirect lands: wait for it (CI read the login URL once).
                wait_for(lambda: driver.current_url.startswith(link), 15, message="the redirect back to the incident")
                assert driver.current_url.startswith(link), driver.current_url
                form = driver.find_element(By.CSS_SELECTOR, "form.release")
                form.find_element(By.NAME, "reason").send_keys("false positive: test data in the answer templates")
                t_click = time.monotonic()
                form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
                notice = wait_for(lambda: driver.find_elements(By.ID, "notice"), 15, message="the page after the release")
                assert "released by oncall-alice" in notice[0].text

                # The gateway serves the model again, and the release is in the audit log.
                wait_for(lambda: ask(gw, "How do I change my plan?").status_code == 200, 15, 0.1, "the gateway to serve the model again")
                released_s = time.monotonic() - t_click
                audit = [r for r in _actions(settings) if r.action == "release" and r.model == MODEL]
                assert [(r.by, r.reason) for r in audit] == [("human:oncall-alice", "false positive: test data in the answer templates")]

                def release_on_page():
                    driver.get(link)
                    return driver.find_elements(By.CSS_SELECTOR, "#actions tr.action-release")

                wait_for(release_on_page, 30, 0.5, "the release on the incident page")
                assert not driver.find_elements(By.ID, "killswitch")  # no longer engaged
                shot = tmp_path / "incident-page.png"
                driver.save_screenshot(str(shot))
                assert shot.stat().st_size < 300_000
                if os.environ.get("STREAMWARDEN_UPDATE_SCREENSHOT") == "1":
                    SCREENSHOT.parent.mkdir(exist_ok=True)
                    shutil.copyfile(shot, SCREENSHOT)

                # No planted value anywhere: the raw HTML of every page, and what the browser made of it.
                pages = [httpx.get(u, timeout=10).text for u in (link, f"{agent_url}/", f"{agent_url}/incidents")]
                pages.append(driver.page_source)
                for html in pages:
                    for value in PLANTED:
                        assert value not in html, value
                print(
                    f"\nincident page test: {time.monotonic() - t_start:.0f}s; released from the page -> gateway serving: {released_s:.2f}s"
                )
    finally:
        driver.quit()
