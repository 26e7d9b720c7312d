"""The contract every registered detector keeps (in the spirit of river's ``check_estimator``).

Every name of ``detectors.registry.REGISTRY`` runs through every check here: a detector added to
the registry gets them for free (with its default options unless ``OPTIONS`` has small ones).
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from detectors import Finding, capabilities, declared, registry
from detectors.contracts import (
    CONTRACTS,
    BuildsReports,
    ExposesGauges,
    KeepsReferences,
    KeepsWindows,
    PublishesSamples,
    RunsInBackground,
)
from detectors.embeddings import EmbeddingService

from .conftest import ROOT, make_event
from .test_thread_safety import race

# Small windows and few permutations, so that the stateful detectors test within the traffic below.
OPTIONS = {
    "bias": {"window": 20, "min_events": 5},
    "consistency": {"method": "combined"},
    "cross_consistency": {"memory": 50},
    "drift": {"reference_size": 4, "window_size": 4, "test_every": 2, "permutations": 50, "alpha": 0.05, "sample_rate": 1.0},
    # Windows of 20 (the traffic is short): a calibrated two-sample test cannot call its PII answers (8 of 20) a drift
    # at the worker's 0.001 (p = 0.0016), so the contract runs at 0.01.
    "descriptor_drift": {"reference_size": 20, "window_size": 20, "test_every": 10, "threshold": 0.01},
}
CONFIGS = {name: (name, OPTIONS.get(name, {})) for name in registry.REGISTRY}
CONFIGS["drift-publish"] = ("drift", {**OPTIONS["drift"], "mode": "publish", "reservoir_size": 8})
CONFIGS["drift-background"] = ("drift", {**OPTIONS["drift"], "background": True})
CONFIGS["descriptor_drift-background"] = ("descriptor_drift", {**OPTIONS["descriptor_drift"], "background": True})
# Built-in detectors that the traffic below must provoke, so the checks on findings are not vacuous.
PROVOKED = {"descriptors", "pii", "bias", "consistency", "cross_consistency", "drift", "descriptor_drift", "grounding"}
FORBIDDEN_IMPORTS = {"kafka", "faust", "aiokafka", "mode", "torch", "streams"}

EMAIL, CARD = "jane.doe@example.com", "4111 1111 1111 1111"
REFUSAL = "I'm sorry, but I can't help with that request."
HELPFUL = "Sure! You can change your plan under Settings, and the change applies from your next bill."
UNICODE = (
    "مرحبا، كيف حالك؟ שלום עולם \u202eevil\u202c "  # right-to-left text and an override
    "👩‍👩‍👧 🔥🇫🇷 "  # emoji, ZWJ sequences, flags
    "e\u0301 n\u0303 Z\u0351\u0352\u0353 "  # combining marks
    "\x07\x1b[31mred\x1b[0m\t\r\x0b\x0c\u200b\ufeff"  # control and invisible characters, no NUL
)


def traffic() -> list:
    """Two model versions of everyday traffic: refusals, an empty answer, a group refused more
    than another, leaked PII, answers that their samples do not support, and a topic shift."""
    events = []
    for i in range(32):
        woman = i % 2 == 0
        events.append(
            make_event(prompt=f"As a {'woman' if woman else 'man'}, can I change my plan?", response=REFUSAL if woman else HELPFUL)
        )
    for i in range(8):
        events.append(
            make_event(prompt="Who can I contact about my order?", response=f"Write to {EMAIL} or pay with card {CARD}. Ref {i}.")
        )
    for i in range(6):
        events.append(
            make_event(
                model_version="v2",
                prompt="What is the capital of France?",
                response="Zorblax the purple giraffe has ruled Lyon since 1990." if i % 2 else "The capital of France is Paris.",
                samples=["The capital of France is Paris.", "Paris is the capital of France."],
            )
        )
    for i in range(4):  # RAG answers: one supported by its document, one that the document contradicts
        events.append(
            make_event(
                prompt="How much is the Pro plan?",
                context=["The Pro plan costs 25 dollars a month and includes ten users.", "Support is open on weekdays."],
                response="The Pro plan costs 25 dollars a month."
                if i % 2
                else "The Pro plan costs 90 dollars a month and includes a free phone.",
            )
        )
    events.append(make_event(prompt="Hello?", response=""))
    events += [
        make_event(model_version="v2", prompt=f"Tell me about quarterly tax filing, part {i}.", response=f"Tax form {i} is due in April.")
        for i in range(8)
    ]
    return events


@pytest.fixture(scope="module", autouse=True)
def embedding_model():
    """The shared embedding model, loaded once for the module (every detector that needs it uses
    it), with its batch cache open, as the worker opens it for a batch: each text is encoded once."""
    service = EmbeddingService.shared()
    service.warm_up()
    with service.batch([]):
        yield service


@pytest.fixture(params=sorted(CONFIGS), scope="module")
def config(request):
    return CONFIGS[request.param]


@pytest.fixture(scope="module")
def traffic_findings(config):
    """(detector, findings) of the traffic in batches of 10, once per detector."""
    det, events = _build(config, keep=True), traffic()
    yield det, events, _score(det, events)
    if isinstance(det, RunsInBackground):
        det.close()


_built: list = []  # detectors a test built, closed after it (their threads must not outlive it)


@pytest.fixture(autouse=True)
def close_what_the_test_built():
    yield
    while _built:
        det = _built.pop()
        if isinstance(det, RunsInBackground):
            det.close()


def _build(config, keep=False):
    """The detector of ``config``; closed after the test unless ``keep`` (a module fixture closes it)."""
    name, options = config
    det = registry.build([name], {name: options})[0]
    if not keep:
        _built.append(det)
    return det


def _score(det, events, batch=10):
    """Every finding of the events in batches; a detector that runs in background is drained after each
    batch (as if its runs were inline: what it finds must not depend on when its thread gets the CPU)."""
    drain = det.drain if isinstance(det, RunsInBackground) else lambda _: []
    return [f for i in range(0, len(events), batch) for f in det.score_batch(events[i : i + batch]) + drain(60)]


def test_an_empty_batch_finds_nothing(config):
    assert _build(config).score_batch([]) == []


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"prompt": UNICODE, "response": UNICODE, "samples": [UNICODE, "Plain text."]},
        {"prompt": "As a woman, " + UNICODE, "response": ("A long answer. " + UNICODE + "\n") * (100_000 // (len(UNICODE) + 16))},
    ],
    ids=["one-event", "unicode", "100kB-response"],
)
def test_one_event_of_any_text_gives_a_list_of_findings(config, fields):
    det = _build(config)
    event = make_event(**fields)
    assert len(event.response) < 200_000
    findings = det.score_batch([event])
    assert isinstance(findings, list) and all(isinstance(f, Finding) for f in findings)


def test_the_traffic_provokes_findings(traffic_findings, config):
    det, _, findings = traffic_findings
    if config[0] in PROVOKED and not capabilities(det) & {"PublishesSamples"}:
        assert findings, f"{det.name} found nothing in the traffic: the other checks would be vacuous"


def test_findings_are_frozen_named_and_json(traffic_findings):
    det, events, findings = traffic_findings
    ids = {e.event_id for e in events}
    for f in findings:
        assert isinstance(f, Finding) and f.detector == det.name
        assert f.event_id is None or f.event_id in ids
        with pytest.raises(ValidationError):
            f.score = 0.0
        assert Finding.model_validate_json(f.model_dump_json()) == f


def test_findings_carry_no_raw_personal_value(traffic_findings):
    _, _, findings = traffic_findings
    for f in findings:
        text = f.model_dump_json()
        for value in (EMAIL, CARD, CARD.replace(" ", "")):
            assert value not in text, f"{f.detector} finding {f.kind} carries {value!r}"


def test_same_events_same_findings(config, traffic_findings):
    _, events, first = traffic_findings
    again = _score(_build(config), events)
    assert [(f.finding_id, f.kind, f.score) for f in again] == [(f.finding_id, f.kind, f.score) for f in first]


def test_importing_the_module_loads_no_broker_client_torch_or_streams(config):
    module = "detectors." + registry.REGISTRY[config[0]].split(":")[0]
    code = (
        f"import json, sys; import {module}; "
        f"print(json.dumps(sorted({{m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN_IMPORTS)!r}}})))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout) == []


def test_declared_contracts_are_kept(config):
    det = _build(config)
    for proto in declared(det):
        assert isinstance(det, proto)
        for member, stub in vars(proto).items():
            if member.startswith("_") or not callable(stub):
                continue
            got = getattr(type(det), member)
            assert list(inspect.signature(got).parameters) == list(inspect.signature(stub).parameters), (proto.__name__, member)
    # ...and what it implements, it declares (gauges excepted: the base class has the empty default).
    for proto in CONTRACTS:
        if proto is not ExposesGauges and isinstance(det, proto):
            assert proto in declared(det), f"{type(det).__name__} implements {proto.__name__} without declaring it"


def test_windows_stay_within_their_bounds(traffic_findings):
    det, _, _ = traffic_findings
    if not isinstance(det, KeepsWindows):
        pytest.skip("keeps no windows")
    bounds, lengths = det.window_bounds(), det.window_lengths()
    assert lengths, "the traffic fills no window"
    for (window, *key), n in lengths.items():
        assert 0 <= n <= bounds[window], (window, key, n)


def test_samples_are_published_only_in_publish_mode(config):
    det = _build(config)
    if not isinstance(det, PublishesSamples):
        pytest.skip("publishes no samples")
    _score(det, traffic())
    samples = det.export_samples()
    assert det.publishes_samples == ("PublishesSamples" in capabilities(det)) == bool(samples)
    assert det.export_samples() == []  # a new interval


def test_pinned_references_are_numbers_and_a_new_instance_restores_them_instead_of_pinning(config):
    det = _build(config)
    if not isinstance(det, KeepsReferences):
        pytest.skip("keeps no references")
    events = traffic()
    _score(det, events)
    pinned = det.pinned_references()
    if "PublishesSamples" in capabilities(det):  # the merger pins in publish mode, not the detector
        assert pinned == []
        return
    assert pinned, "the traffic pins no reference"
    assert det.pinned_references() == []  # each handed over once
    for ref in pinned:
        assert ref.detector == det.name and ref.rows.ndim == 2 and ref.rows.dtype.kind == "f" and ref.space  # numbers, never text
    fresh = _build(config)
    fresh.restore_references(pinned)
    _score(fresh, events)
    assert fresh.reference_counts()["restored"] == len(pinned)
    assert {r.key for r in fresh.pinned_references()}.isdisjoint({r.key for r in pinned})


def test_reports_build_for_a_model_version_with_a_reference(traffic_findings, tmp_path):
    det, _, _ = traffic_findings
    if not isinstance(det, BuildsReports):
        pytest.skip("builds no reports")
    assert not det.has_reference("no-such-model", "v0")
    assert det.has_reference("m1", "v1")
    path = det.report(("m1", "v1"), tmp_path / "report.html")
    assert path == tmp_path / "report.html" and path.stat().st_size > 1000


def test_readers_run_from_another_thread_while_a_batch_is_scored(config):
    det, events = _build(config), traffic()
    _score(det, events[:20])

    def read():
        det.gauges()
        if isinstance(det, KeepsWindows):
            det.window_lengths()
        if isinstance(det, PublishesSamples):
            det.export_samples()
        if isinstance(det, RunsInBackground):
            det.drain(0)

    errors = race(lambda: det.score_batch(events[20:]), read)
    if isinstance(det, RunsInBackground):
        det.close()
    assert errors == [], [f"{type(e).__name__}: {e}" for e in errors]
    assert all(len(g) == 3 and isinstance(g.value, float) for g in det.gauges())
