"""The policy file: rules that turn the metrics topic into alerts, rollbacks and kill switches.

A rule names a metric of a scope (model, model version, route: globs), a threshold and a
direction, the window the metric is computed over, the least number of events that makes
the value meaningful, how long the breach must hold (``for_s``), a cool-down between two
firings, a resolve threshold (hysteresis) and its own hold, and the actions.

Metrics (computed from the windowed ``MetricsRecord``s of every worker, summed):

=================  ========================================================================
error_rate         events with ``error_type`` / events
complaint_rate     events with feedback ``complaint`` / events
finding_rate       findings of ``findings`` (globs over 'detector.kind', at ``min_severity``) / events; when
                   every pattern names one detector, / the events that detector judged (``min_events`` too)
finding_count      those findings, counted
latency_p50_ms     latency quantiles of the window (upper bound of the histogram bucket)
latency_p95_ms
latency_p99_ms
events             events in the window (e.g. traffic stopped)
gauge              the worst value of a detector gauge (``gauge``: glob over 'name{label=value}')
=================  ========================================================================
"""

from __future__ import annotations

import json
import re
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streams.errors import ConfigurationError

DEFAULT_POLICY = Path(__file__).with_name("default.yaml")
POLICY_SCHEMA_FILE = Path(__file__).with_name("policy.schema.json")

Metric = Literal[
    "error_rate",
    "complaint_rate",
    "finding_rate",
    "finding_count",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "events",
    "gauge",
]
Action = Literal["alert", "rollback", "kill"]
SEVERITIES = ("info", "low", "medium", "high", "critical")
DEFAULT_STAGES = ["internal", "1%", "10%", "100%"]

_OPS = {">": lambda v, t: v > t, ">=": lambda v, t: v >= t, "<": lambda v, t: v < t, "<=": lambda v, t: v <= t}


class Scope(BaseModel):
    """Which traffic a rule watches: globs over model, model version and route."""

    model_config = ConfigDict(extra="forbid")

    model: str = "*"
    model_version: str = "*"
    route: str = "*"
    per_route: bool = Field(default=False, description="One state per route; otherwise routes of a model version are summed.")

    def matches(self, model: str, version: str, route: str) -> bool:
        return fnmatchcase(model, self.model) and fnmatchcase(version, self.model_version) and fnmatchcase(route or "", self.route)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$", description="Unique; used in action ids and alert names.")
    description: str = ""
    metric: Metric
    findings: list[str] = Field(default_factory=list, description="finding_rate/finding_count: globs over 'detector.kind'.")
    min_severity: Literal["info", "low", "medium", "high", "critical"] = "info"
    gauge: str | None = Field(default=None, description="metric gauge: glob over 'name{label=value,...}'.")
    scope: Scope = Field(default_factory=Scope)
    op: Literal[">", ">=", "<", "<="] = Field(description="The direction of a breach: value OP threshold.")
    threshold: float
    resolve_threshold: float | None = Field(
        default=None, description="Hysteresis: firing resolves only once the value is back past this (default: threshold)."
    )
    window_s: float = Field(default=60.0, gt=0, le=7 * 86400)
    min_events: int = Field(default=0, ge=0, description="Fewer events in the window: no verdict (nothing starts, nothing resolves).")
    for_s: float = Field(default=0.0, ge=0, description="The breach must hold this long before the rule fires.")
    resolve_for_s: float = Field(default=60.0, ge=0, description="The value must stay back this long before firing resolves.")
    cooldown_s: float = Field(default=600.0, ge=0, description="Least time between two firings of this rule for one scope.")
    severity: Literal["info", "warning", "critical"] = "warning"
    actions: list[Action] = Field(min_length=1)
    fallback: str | None = Field(
        default=None, description="kill: what the gateway serves instead: 'model:NAME' (another model) or none (a 503)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.metric in ("finding_rate", "finding_count") and not self.findings:
            raise ValueError(f"metric {self.metric} needs 'findings' (globs over 'detector.kind')")
        if self.metric == "gauge" and not self.gauge:
            raise ValueError("metric gauge needs 'gauge' (a glob over the gauge names)")
        if self.fallback is not None and not (self.fallback == "none" or re.fullmatch(r"model:\S+", self.fallback)):
            raise ValueError("fallback is 'model:NAME' or 'none'")
        if self.resolve_threshold is not None:
            wrong_side = self.resolve_threshold > self.threshold if self.op in (">", ">=") else self.resolve_threshold < self.threshold
            if wrong_side:
                raise ValueError("resolve_threshold must lie on the safe side of threshold (hysteresis)")
        return self

    def breached(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)

    def recovered(self, value: float) -> bool:
        """Back on the safe side of the resolve threshold (strictly, so a value at it still holds)."""
        limit = self.threshold if self.resolve_threshold is None else self.resolve_threshold
        return value < limit if self.op in (">", ">=") else value > limit

    def matches_finding(self, key: str) -> bool:
        return any(fnmatchcase(key, pattern) for pattern in self.findings)

    @property
    def judged_by(self) -> str | None:
        """The detector a finding_rate rule is about, where every pattern names the same one (no glob in the
        detector's part): its rate divides by the events that detector judged, not by every event (a ration
        under load, or a failed batch, leaves some unjudged: MetricsRecord.unjudged). None: by every event."""
        if self.metric != "finding_rate":
            return None
        names = {pattern.partition(".")[0] for pattern in self.findings}
        if len(names) != 1:
            return None
        (name,) = names
        return name if name and not any(c in name for c in "*?[") else None

    @property
    def worst(self):
        """The aggregate of a gauge over a window: the worst value in the rule's direction."""
        return max if self.op in (">", ">=") else min


class Rollout(BaseModel):
    """A model version being rolled out in stages; the version to return to on rollback."""

    model_config = ConfigDict(extra="forbid")

    model: str
    version: str
    stage: str
    previous_version: str | None = Field(default=None, description="The stable version a rollback returns to.")
    stages: list[str] = Field(default_factory=lambda: list(DEFAULT_STAGES))
    advance_min_events: int = Field(default=200, ge=0, description="Events at this stage before should_advance.")
    advance_after_s: float = Field(
        default=300.0, ge=0, description="Time at this stage, with no rule pending or firing, before should_advance."
    )

    @model_validator(mode="after")
    def _known_stage(self) -> Rollout:
        if self.stage not in self.stages:
            raise ValueError(f"stage {self.stage!r} is not one of {self.stages}")
        return self

    @property
    def next_stage(self) -> str | None:
        i = self.stages.index(self.stage)
        return self.stages[i + 1] if i + 1 < len(self.stages) else None


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", title="streamwarden policy")

    version: Literal[1] = 1
    dashboard_url: str | None = Field(
        default=None, description="Link put in alerts, e.g. a Grafana dashboard; {model} and {model_version} are filled in."
    )
    rules: list[Rule] = Field(default_factory=list)
    rollouts: list[Rollout] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> Policy:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"two rules are named {rule.name!r}")
            seen.add(rule.name)
        return self

    def rollout_of(self, model: str, version: str) -> Rollout | None:
        return next((r for r in self.rollouts if r.model == model and r.version == version), None)

    def link(self, model: str, version: str) -> str | None:
        if not self.dashboard_url:
            return None
        return self.dashboard_url.replace("{model}", model).replace("{model_version}", version)


class PolicyError(ConfigurationError):
    """A policy file that does not load; the message names the file, line and field."""


def policy_json_schema() -> dict[str, Any]:
    schema = Policy.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def render_policy_schema() -> str:
    return json.dumps(policy_json_schema(), indent=2, sort_keys=True) + "\n"


def load_policy(path: Path | str | None = None) -> Policy:
    path = Path(path) if path is not None else DEFAULT_POLICY
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file ({exc.strerror})") from None
    return parse_policy(text, str(path))


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise PolicyError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"{source}:1: the policy must be a mapping (version, rules, rollouts)")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = _line_of(node, loc)
            where = f"{source}:{line}" if line else source
            field = ".".join(str(p) for p in loc) or "(top)"
            lines.append(f"{where}: {field}: {err['msg']}")
        raise PolicyError("\n".join(lines)) from None


def _line_of(node, loc: tuple) -> int | None:
    """The 1-based line of the YAML node at ``loc`` (or of its nearest parent that exists)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
        else:
            nxt = None
        if nxt is None:
            break
        node = nxt
        line = node.start_mark.line + 1
    return line


def check_rollout_stage(policy: Policy, model: str, version: str, stage: str) -> None:
    """Refuse a stage the rollout does not have (call it before :func:`publish_rollout`).

    The stages are those the policy's ``rollouts:`` entry for the model version declares, or the
    default ones (internal, 1%, 10%, 100%) when it declares none: what the policy agent accepts.
    Raises :class:`ConfigurationError` (a ValueError) naming the allowed stages.
    """
    declared = policy.rollout_of(model, version)
    stages = declared.stages if declared is not None else DEFAULT_STAGES
    if stage not in stages:
        source = "as the policy declares" if declared is not None else "the default: the policy declares no rollout for it"
        raise ConfigurationError(
            f"{stage!r} is not a stage of the rollout of {model} {version}; its stages ({source}): {', '.join(stages)}"
        )
