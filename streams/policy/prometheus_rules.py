"""Prometheus alerting rules generated from the policy file: alerts still fire when the policy
agent is down (defence in depth). Actions (rollback, kill) stay the agent's: Prometheus alerts.

Each rule becomes one alert over the worker's series, grouped by model and model version,
with the labels the agent's own alert carries (``alertname="streamwarden:<rule>"``, severity,
model, model_version, route="*", rule, source), so Alertmanager deduplicates the two and people
are paged once. Routes are summed (the worker's series have no route label).
"""

from __future__ import annotations

import re
from fnmatch import translate
from typing import Any

import yaml

from streams.policy.rules import SEVERITIES, Policy, Rule

GROUP = "model, model_version"


def _regex(glob: str) -> str:
    """A glob as a PromQL regex (anchored by PromQL itself)."""
    if glob == "*":
        return ".*"
    body = translate(glob)  # '(?s:...)\\Z'
    body = re.sub(r"^\(\?s:(.*)\)\\Z$", r"\1", body)
    return body.replace("\\", "\\\\").replace('"', '\\"')


def _matchers(rule: Rule, extra: list[str] | None = None) -> str:
    m = []
    if rule.scope.model != "*":
        m.append(f'model=~"{_regex(rule.scope.model)}"')
    if rule.scope.model_version != "*":
        m.append(f'model_version=~"{_regex(rule.scope.model_version)}"')
    return "{" + ", ".join(m + (extra or [])) + "}"


def _dur(seconds: float) -> str:
    return f"{int(round(seconds))}s"


def _count(metric: str, sel: str, w: str) -> str:
    """What a counter gained over the window. increase() would miss a series' first sample (a
    first PII leak), so: now minus w ago, or all of it for a series born within the window.
    A counter reset (a restarted worker) reads as 0 for that window."""
    return f"(clamp_min({metric}{sel} - {metric}{sel} offset {w}, 0) or {metric}{sel})"


def _events(rule: Rule, w: str) -> str:
    return f"sum by ({GROUP}) ({_count('streamwarden_events_total', _matchers(rule), w)})"


def _judged(rule: Rule, w: str) -> str:
    """The events of a finding_rate: those the rule's one detector judged (every event less the ones it left
    unjudged), or every event when the rule spans detectors."""
    detector = rule.judged_by
    if detector is None:
        return _events(rule, w)
    by_detector = _matchers(rule, [f'detector="{detector}"'])
    unjudged = f"sum by ({GROUP}) ({_count('streamwarden_unjudged_events_total', by_detector, w)})"
    # clamp_min: a worker's restart resets its counters apart, and a count below zero means nothing
    return f"clamp_min({_events(rule, w)} - ({unjudged} or {_events(rule, w)} * 0), 0)"


def _findings(rule: Rule, w: str) -> str:
    severities = "|".join(SEVERITIES[SEVERITIES.index(rule.min_severity) :])
    parts = []
    for pattern in rule.findings:
        detector, _, kind = pattern.partition(".")
        extra = []
        if detector not in ("*", ""):
            extra.append(f'detector=~"{_regex(detector)}"')
        if kind not in ("*", ""):
            extra.append(f'kind=~"{_regex(kind)}"')
        if rule.min_severity != "info":
            extra.append(f'severity=~"{severities}"')
        parts.append(_count("streamwarden_findings_total", _matchers(rule, extra), w))
    return f"sum by ({GROUP}) ({' or '.join(parts)})"


def _gauge(rule: Rule, w: str) -> str:
    m = re.fullmatch(r"([A-Za-z0-9_*?]+)(?:\{(.*)\})?", rule.gauge or "")
    if not m:
        raise ValueError(f"rule {rule.name}: gauge {rule.gauge!r} is not 'name' or 'name{{label=value,...}}'")
    name, labels = m.group(1), m.group(2) or ""
    extra = []
    if any(c in name for c in "*?"):
        extra.append(f'__name__=~"streamwarden_{_regex(name)}"')
        metric = ""
    else:
        metric = f"streamwarden_{name}"
    for pair in filter(None, (p.strip() for p in labels.split(","))):
        k, _, v = pair.partition("=")
        if v != "*":
            extra.append(f'{k}=~"{_regex(v)}"')
    agg = "max" if rule.op in (">", ">=") else "min"
    return f"{agg} by ({GROUP}) ({agg}_over_time({metric}{_matchers(rule, extra)}[{w}]))"


def rule_expr(rule: Rule) -> str:
    w = _dur(rule.window_s)
    m = rule.metric
    if m == "events":
        value = _events(rule, w)
    elif m in ("error_rate", "complaint_rate"):
        counter = "streamwarden_model_errors_total" if m == "error_rate" else "streamwarden_complaints_total"
        value = f"(sum by ({GROUP}) ({_count(counter, _matchers(rule), w)}) / {_events(rule, w)})"
    elif m == "finding_count":
        value = _findings(rule, w)
    elif m == "finding_rate":
        value = f"({_findings(rule, w)} / {_judged(rule, w)})"
    elif m.startswith("latency_"):
        q = {"latency_p50_ms": 0.5, "latency_p95_ms": 0.95, "latency_p99_ms": 0.99}[m]
        value = f"(histogram_quantile({q}, sum by (le, {GROUP}) (rate(streamwarden_model_latency_seconds_bucket{_matchers(rule)}[{w}]))) * 1000)"
    else:
        value = _gauge(rule, w)
    expr = f"{value} {rule.op} {rule.threshold:g}"
    if rule.min_events > 0:
        expr = f"({expr}) and on ({GROUP}) ({_judged(rule, w) if m == 'finding_rate' else _events(rule, w)} >= {rule.min_events})"
    return expr


def prometheus_rules(policy: Policy) -> dict:
    rules = []
    for rule in policy.rules:
        alert: dict[str, Any] = {
            "alert": f"streamwarden:{rule.name}",
            "expr": rule_expr(rule),
            "labels": {"severity": rule.severity, "rule": rule.name, "route": "*", "source": "streamwarden"},
            "annotations": {
                "summary": f"{rule.name} on {{{{ $labels.model }}}} {{{{ $labels.model_version }}}}",
                "description": (rule.description + " " if rule.description else "")
                + f"{rule.metric} {rule.op} {rule.threshold:g} over {rule.window_s:g}s (value {{{{ $value }}}}); "
                + f"the policy agent's actions: {', '.join(rule.actions)}.",
            },
        }
        if rule.for_s:
            alert["for"] = _dur(rule.for_s)
        if policy.dashboard_url:
            alert["annotations"]["dashboard"] = policy.dashboard_url.replace("{model}", "{{ $labels.model }}").replace(
                "{model_version}", "{{ $labels.model_version }}"
            )
        rules.append(alert)
    return {"groups": [{"name": "streamwarden-policy", "interval": "15s", "rules": rules}]}


def render_prometheus_rules(policy: Policy) -> str:
    header = "# Generated from the policy by `streamwarden policy prometheus-rules`; do not edit by hand.\n"
    return header + yaml.safe_dump(prometheus_rules(policy), sort_keys=False, width=1000)
