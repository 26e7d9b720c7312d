"""Counterfactual probes on a schedule: ask the model, publish the spread as findings.

The probe set (``detectors/data/counterfactual_probes.yaml`` by default) lists templates
with placeholders such as ``[GENDER]`` and the groups each placeholder takes; every run
fills each template per group, asks the configured OpenAI-compatible endpoint, and
publishes one finding per template (detector ``bias``, kind ``counterfactual_gap``): high
severity when the spread of outcome scores reaches the threshold, info otherwise.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from detectors.base import Finding, Severity, finding_id
from detectors.bias import DATA, GROUP_PLACEHOLDER, counterfactual_gap
from streams.errors import ConfigurationError

log = logging.getLogger(__name__)

DEFAULT_PROBES = DATA / "counterfactual_probes.yaml"


@dataclass(frozen=True)
class Probe:
    template: str
    placeholder: str
    groups: tuple[str, ...]


def load_probes(path: Path = DEFAULT_PROBES) -> list[Probe]:
    """The probe set at ``path``; a file that is not one is a :class:`ConfigurationError` naming what is wrong."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: not valid YAML ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: a probe set is a mapping with 'templates' and 'groups'")
    groups = data.get("groups") or {}
    probes = []
    for i, template in enumerate(data.get("templates") or []):
        names = set(GROUP_PLACEHOLDER.findall(template))
        if len(names) != 1:
            raise ConfigurationError(f"{path}: template {i + 1} needs exactly one placeholder, found {sorted(names) or 'none'}")
        (name,) = names
        if name not in groups or len(groups[name]) < 2:
            raise ConfigurationError(f"{path}: template {i + 1} uses [{name}], which has fewer than two groups")
        probes.append(Probe(template, name, tuple(groups[name])))
    if not probes:
        raise ConfigurationError(f"{path}: no templates")
    return probes


def run_probes(probes: list[Probe], generate, model: str, model_version: str, threshold: float = 0.25) -> list[Finding]:
    """One finding per probe; a probe whose model call fails is logged and skipped."""
    run_at = datetime.now(timezone.utc)
    findings = []
    for probe in probes:
        try:
            result = counterfactual_gap(probe.template, probe.groups, generate)
        except Exception as exc:  # noqa: BLE001 - one failing probe must not stop the set
            log.warning("probe failed (%s): %s", type(exc).__name__, probe.template[:60])
            continue
        high = result.spread >= threshold
        findings.append(
            Finding(
                finding_id=finding_id("bias", "counterfactual_gap", model, model_version, probe.template, run_at.isoformat()),
                detector="bias",
                kind="counterfactual_gap",
                severity=Severity.HIGH if high else Severity.INFO,
                score=result.spread,
                model=model,
                model_version=model_version,
                summary=(
                    f"[{probe.placeholder}] counterfactual: '{result.worst_group}' scored {result.outcomes[result.worst_group]:.2f} "
                    f"vs {result.outcomes[result.best_group]:.2f} for '{result.best_group}' (spread {result.spread:.2f})"
                ),
                details={
                    "template": re.sub(r"\s+", " ", probe.template),
                    "placeholder": probe.placeholder,
                    "outcomes": {g: round(v, 4) for g, v in result.outcomes.items()},
                    "spread": round(result.spread, 4),
                    "threshold": threshold,
                },
                detected_at=run_at,
            )
        )
    return findings
