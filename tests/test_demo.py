"""``streamwarden demo --seconds 20``: exits 0 and its summary adds up."""

import gc
import json
import os
import subprocess
import sys
import tempfile
import warnings

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_for_20_seconds_and_its_summary_is_consistent(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli", "demo", "--seconds", "20", "--no-live", "--worker-log", str(tmp_path / "w.log")],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + (tmp_path / "w.log").read_text()[-3000:]
    s = json.loads(proc.stdout)
    assert s["broker"] == "embedded tansu"
    assert s["drained"] is True
    # The lag (sent, not yet processed) is reported; it cannot exceed what was sent.
    assert 0 <= s["lag_at_end_of_sending"] <= s["events_sent"] and 0 <= s["lag_max_after_ready"] <= s["events_sent"]
    # Everything the tap accepted was delivered, and the worker accounted for every record.
    assert s["tap"]["dropped"] == 0 and s["tap"]["failed"] == 0
    assert s["tap"]["sent"] == s["events_sent"] + s["malformed_sent"]
    assert s["events_processed"] == s["events_sent"] > 1000
    assert s["dead_letters"] == s["malformed_sent"] > 0
    assert sum(s["dead_letter_reasons"].values()) == s["dead_letters"]
    assert sum(s["events_by_phase"].values()) == s["events_sent"]
    # Findings: per detector adds up, none duplicated, and they come from the injected incident.
    assert sum(s["findings"].values()) == s["findings_total"] == sum(s["findings_by_kind"].values())
    assert s["findings_duplicated"] == 0
    by_phase = s["findings_by_phase"]
    # Each injected incident is flagged in its own phase...
    assert by_phase["refusal_burst"].get("descriptors.refusal", 0) > 0.5 * 0.5 * s["events_by_phase"]["refusal_burst"]
    assert by_phase["pii_leak"].get("pii.pii_leak", 0) > 0.5 * 0.25 * s["events_by_phase"]["pii_leak"]
    assert by_phase["biased"].get("bias.bias_disparity", 0) >= 1
    assert by_phase["hallucination"].get("consistency.inconsistent_response", 0) > 0.3 * 0.5 * s["events_by_phase"]["hallucination"]
    assert by_phase["topic_shift"].get("drift.prompt_drift", 0) >= 1
    # Ungrounded: half the events are the support assistant's, a quarter of those carry context
    # (RAG_SHARE) and 80% of those answers contradict or ignore it (UNGROUNDED_SHARE): ~10% of the
    # phase's events. At least a third of that (the lexical fallback alone flags ~70% of those answers).
    assert by_phase["ungrounded"].get("grounding.ungrounded_response", 0) > 0.5 * 0.25 * 0.8 / 3 * s["events_by_phase"]["ungrounded"]
    # Attack: 40% of the users try a jailbreak or an injection (ATTACK_SHARE), and half the RAG
    # questions' documents carry instructions (INDIRECT_SHARE): most are flagged, by kind.
    attack = by_phase["attack"]
    attempts = attack.get("injection.prompt_injection", 0) + attack.get("injection.jailbreak", 0)
    assert attempts > 0.4 * 0.7 * s["events_by_phase"]["attack"], attack
    assert attack.get("injection.indirect_injection", 0) >= 1, attack
    # Toxic canary: half the events are the code helper's, 30% of its answers insult a clean question
    # (TOXIC_SHARE). At least half of those are flagged, as toxic_response (the prompt was clean).
    toxic = by_phase["toxic_canary"]
    assert toxic.get("toxicity.toxic_response", 0) > 0.5 * 0.3 * 0.5 * s["events_by_phase"]["toxic_canary"], toxic
    # ...and the clean phases raise none of them: echoes of what users typed are not leaks.
    incident_kinds = {
        "descriptors.refusal",
        "pii.pii_leak",
        "bias.bias_disparity",
        "consistency.inconsistent_response",
        "drift.prompt_drift",
        "drift.response_drift",
        "grounding.ungrounded_response",
        "injection.prompt_injection",
        "injection.jailbreak",
        "injection.indirect_injection",
        "injection.multi_turn_injection",
        "toxicity.toxic_response",
        "toxicity.toxic_response_prompted",
    }
    assert not incident_kinds & set(by_phase.get("clean", {})), by_phase.get("clean")
    assert by_phase.get("clean", {}).get("pii.pii_echo", 0) > 0
    for phase, kinds in by_phase.items():
        if phase not in ("clean", "refusal_burst", "biased", "attack"):  # a biased model refuses, and so does an attacked one
            assert "descriptors.refusal" not in kinds, phase
        if phase != "pii_leak":
            assert "pii.pii_leak" not in kinds, phase
        if phase != "toxic_canary":
            assert "toxicity.toxic_response" not in kinds, phase
    assert s["metrics_records"] > 0
    # Unjudged, from the metrics topic: grounding's events without context documents (all but the RAG questions, an
    # eighth of the events), consistency's events without samples (all the code helper's, most of the support
    # assistant's), and whatever toxicity's ration left while the worker was behind; no detector failed.
    assert set(s["events_unjudged"]) <= {"grounding", "toxicity", "consistency"}
    assert 0.5 * s["events_processed"] < s["events_unjudged"]["grounding"] < s["events_processed"]
    assert 0.5 * s["events_processed"] < s["events_unjudged"]["consistency"] < s["events_processed"]
    # The policy agent tripped the kill switch and a rollback for the leaking model, once each, rolled
    # the toxic canary back, and the stand-in deployment controller got each rollback with the version
    # to return to.
    assert s["actions_by_kind"].get("kill:pii-leak") == 1
    assert s["actions_by_kind"].get("rollback:safety-incident") == 1
    assert s["actions_by_kind"].get("rollback:toxic-rate") == 1
    assert s["killswitch_engaged"] == ["support-assistant"]
    kills = [a for a in s["action_log"] if a["action"] == "kill"]
    assert {a["model"] for a in kills} == {"support-assistant"}
    assert sorted((r["model"], r["from_version"], r["to_version"]) for r in s["rollbacks_received_by_controller"]) == [
        ("code-helper", "1.8.0", "1.7.2"),
        ("support-assistant", "2026.11.1", "2026.10.4"),
    ]
    assert all(s["action_outcomes"][a["action_id"]] for a in kills), s["action_outcomes"]
    assert all(s["action_outcomes"].values()), s["action_outcomes"]  # every action's outcome says what happened
    assert s["pii_leak_first_event_to_action_s"]["kill"] > 0
    # The summary gives the page of the incident that tripped the kill switch (the agent serves it while the demo runs).
    kill = s["incident_urls"]["pii-leak support-assistant 2026.11.1"]
    assert kill.startswith(s["incident_page"] + "incidents/")


def _open_files() -> dict[int, str]:
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the descriptor listdir itself used
            pass
    return out


def test_the_demo_closes_every_file_and_removes_every_temporary_file(tmp_path, monkeypatch):
    from streams.local.demo import DemoOptions, run_demo
    from streams.settings import Settings

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    gc.collect()  # what earlier tests left to the garbage collector is collected now, not counted below
    before = _open_files()
    settings = Settings(profile="embedded", detectors=["descriptors"], metrics_window_s=1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        summary = run_demo(settings, DemoOptions(seconds=2, rate=20, live=False, drain_stall_s=1))
        gc.collect()  # a file left to the garbage collector is closed here, with a ResourceWarning
    assert summary["events_sent"] > 0 and summary["worker_log"] is None  # no log was asked for: none is kept
    assert sorted(p.name for p in temp.iterdir()) == []
    assert {fd: f for fd, f in _open_files().items() if before.get(fd) != f} == {}
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
