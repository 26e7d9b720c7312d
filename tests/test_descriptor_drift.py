import random

from detectors.descriptor_drift import DescriptorDriftDetector

from .conftest import make_event

ANSWERS = ["Paris is the capital of France.", "You can cancel from Settings. Your access stays active.", "Yes, that works worldwide."]


def _run(det, events, batch=25):
    out = []
    for i in range(0, len(events), batch):
        out.extend(det.score_batch(events[i : i + batch]))
    return out


def test_a_refusal_wave_drifts_the_descriptors_once_and_writes_the_report(tmp_path):
    rng = random.Random(0)
    det = DescriptorDriftDetector(reference_size=100, window_size=100, test_every=50, reports_dir=str(tmp_path))
    normal = [make_event(response=rng.choice(ANSWERS), latency_ms=rng.uniform(200, 800)) for _ in range(250)]
    refusing = [make_event(response="I'm sorry, but I can't help with that.", latency_ms=rng.uniform(200, 800)) for _ in range(150)]
    assert _run(det, normal) == []  # same distribution: no drift
    findings = _run(det, refusing)
    assert len(findings) == 1
    f = findings[0]
    assert "refusal" in f.details["drifted"] and f.details["tests"]["refusal"]["drifted"]
    assert f.event_id in {e.event_id for e in refusing}
    report = tmp_path / f"descriptor-drift-{f.finding_id}.html"
    assert f.details["report"] == str(report) and report.stat().st_size > 10_000
    assert "<html" in report.read_text(errors="ignore")[:5000].lower()


def test_pii_rate_is_a_descriptor():
    det = DescriptorDriftDetector(reference_size=60, window_size=60, test_every=30)
    clean = [make_event(response="Your order ships tomorrow.") for _ in range(120)]
    leaky = [make_event(response="Your order ships tomorrow to dana@example.com, card 4111 1111 1111 1111.") for _ in range(60)]
    findings = _run(det, clean + leaky, batch=20)
    assert len(findings) == 1 and "pii_entities" in findings[0].details["drifted"]
    assert "dana@example.com" not in findings[0].model_dump_json()
