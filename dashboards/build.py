"""The Grafana dashboards, built with grafana-foundation-sdk. Regenerate the committed JSON with

    python -m dashboards.build          (a test fails when json/ is not what this builds)

Every panel queries the Prometheus datasource provisioned as ``streamwarden-prometheus``.
Panels whose series exist only after something happened (errors, actions) end in
``or vector(0)``, so they read 0 rather than "No data" on a quiet day.
"""

from __future__ import annotations

import json
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, text, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DashboardLinkType, DataSourceRef, VariableRefresh

JSON_DIR = Path(__file__).with_name("json")
DS = DataSourceRef(type_val="prometheus", uid="streamwarden-prometheus")
M = 'model=~"$model", model_version=~"$model_version"'
RI = "$__rate_interval"


def q(expr: str, legend: str = "", ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DS)


def ts(title: str, *queries: prometheus.Dataquery, unit: str = "short", w: int = 12, h: int = 8, desc: str = "") -> timeseries.Panel:
    p = timeseries.Panel().title(title).datasource(DS).unit(unit).span(w).height(h)
    if desc:
        p = p.description(desc)
    for query in queries:
        p = p.with_target(query)
    return p


def st(title: str, query: prometheus.Dataquery, unit: str = "short", w: int = 6, h: int = 4, desc: str = "") -> stat.Panel:
    p = stat.Panel().title(title).datasource(DS).unit(unit).span(w).height(h).with_target(query)
    return p.description(desc) if desc else p


def variables(d: db.Dashboard) -> db.Dashboard:
    model = (
        db.QueryVariable("model")
        .label("model")
        .datasource(DS)
        .query("label_values(streamwarden_events_total, model)")
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
    )
    version = (
        db.QueryVariable("model_version")
        .label("version")
        .datasource(DS)
        .query('label_values(streamwarden_events_total{model=~"$model"}, model_version)')
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
    )
    reports = db.TextBoxVariable("reports_url").label("worker reports").default_value("http://localhost:6066/reports/")
    return d.with_variable(model).with_variable(version).with_variable(reports)


def base(uid: str, title: str, description: str) -> db.Dashboard:
    d = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["streamwarden"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .readonly()
    )
    d = variables(d)
    d = d.annotation(
        db.AnnotationQuery()
        .name("actions")
        .datasource(DS)
        .enable(True)
        .icon_color("red")
        # A series' first sample counts too (changes() would miss the first action of a rule).
        .expr(
            "sum by (action, rule, model, model_version) (clamp_min(streamwarden_actions_total - streamwarden_actions_total offset 1m, 0)"
            " or (streamwarden_actions_total unless streamwarden_actions_total offset 1m)) > 0"
        )
    )
    for other_uid, other in DASHBOARDS_INDEX:
        if other_uid != uid:
            d = d.link(db.DashboardLink(other).type(DashboardLinkType.LINK).url(f"/d/{other_uid}/{other_uid}").keep_time(True))
    return d.link(db.DashboardLink("drift reports (worker)").type(DashboardLinkType.LINK).url("${reports_url}").target_blank(True))


DASHBOARDS_INDEX = [
    ("streamwarden-overview", "streamwarden: overview"),
    ("streamwarden-pipeline", "streamwarden: pipeline health"),
    ("streamwarden-pii", "streamwarden: PII leaks"),
    ("streamwarden-bias", "streamwarden: bias"),
    ("streamwarden-consistency", "streamwarden: hallucination (self-consistency and grounding)"),
    ("streamwarden-drift", "streamwarden: drift"),
    ("streamwarden-attacks", "streamwarden: attacks and harm"),
]


def overview() -> db.Dashboard:
    d = base("streamwarden-overview", "streamwarden: overview", "Traffic, findings, actions and kill switches per model.")
    return (
        d.with_panel(st("events/s", q(f"sum(rate(streamwarden_events_total{{{M}}}[{RI}]))"), "reqps"))
        .with_panel(st("findings/s", q(f"sum(rate(streamwarden_findings_total{{{M}}}[{RI}]))")))
        .with_panel(
            st(
                "kill switches engaged",
                q("sum(max by (model) (streamwarden_killswitch_engaged)) or vector(0)"),
                desc="Models whose kill switch is engaged; the gateway serves their fallback.",
            )
        )
        .with_panel(
            st(
                "actions (1h)",
                q("sum(increase(streamwarden_actions_total[1h])) or vector(0)"),
                desc="Decisions the policy agent wrote to the actions topic.",
            )
        )
        .with_panel(
            ts(
                "events/s by model version",
                q(f"sum by (model, model_version) (rate(streamwarden_events_total{{{M}}}[{RI}]))", "{{model}} {{model_version}}"),
                unit="reqps",
            )
        )
        .with_panel(
            ts(
                "findings/s by detector and kind",
                q(f"sum by (detector, kind) (rate(streamwarden_findings_total{{{M}}}[{RI}]))", "{{detector}}.{{kind}}"),
            )
        )
        .with_panel(
            ts(
                "error and complaint rate",
                q(
                    f"(sum by (model) (rate(streamwarden_model_errors_total{{{M}}}[{RI}])) / sum by (model) (rate(streamwarden_events_total{{{M}}}[{RI}]))) or vector(0)",
                    "errors {{model}}",
                ),
                q(
                    f"(sum by (model) (rate(streamwarden_complaints_total{{{M}}}[{RI}])) / sum by (model) (rate(streamwarden_events_total{{{M}}}[{RI}]))) or vector(0)",
                    "complaints {{model}}",
                    "B",
                ),
                unit="percentunit",
            )
        )
        .with_panel(
            ts(
                "model latency p50 / p99",
                q(
                    f"histogram_quantile(0.5, sum by (le, model) (rate(streamwarden_model_latency_seconds_bucket{{{M}}}[{RI}])))",
                    "p50 {{model}}",
                ),
                q(
                    f"histogram_quantile(0.99, sum by (le, model) (rate(streamwarden_model_latency_seconds_bucket{{{M}}}[{RI}])))",
                    "p99 {{model}}",
                    "B",
                ),
                unit="s",
            )
        )
        .with_panel(
            ts(
                "policy rule state (0 ok, 1 pending, 2 firing)",
                q(f"max by (rule, model, model_version) (streamwarden_policy_rule_state{{{M}}})", "{{rule}} {{model}} {{model_version}}"),
                desc="Per rule and model version, from the policy agent.",
            )
        )
        .with_panel(
            ts(
                "actions by kind and rule",
                q("sum by (action, rule) (increase(streamwarden_actions_total[5m])) or vector(0)", "{{action}} {{rule}}"),
            )
        )
        .with_panel(ts("kill switch by model", q("max by (model) (streamwarden_killswitch_engaged) or vector(0)", "{{model}}"), w=24, h=6))
    )


def pipeline() -> db.Dashboard:
    d = base("streamwarden-pipeline", "streamwarden: pipeline health", "Lag, throughput, latency and errors of the workers.")
    return (
        d.with_panel(
            ts(
                "consumer lag (records)",
                q("sum by (partition) (streamwarden_consumer_lag_records)", "partition {{partition}}"),
                desc="Per partition of the inference topic: what the workers have not processed yet.",
            )
        )
        .with_panel(
            ts(
                "throughput",
                q(f"sum(rate(streamwarden_events_total[{RI}]))", "events/s"),
                q(f"sum(rate(streamwarden_batch_size_events_count[{RI}]))", "batches/s", "B"),
                unit="ops",
            )
        )
        .with_panel(
            ts(
                "batch duration p50 / p99",
                q(f"histogram_quantile(0.5, sum by (le) (rate(streamwarden_batch_duration_seconds_bucket[{RI}])))", "p50"),
                q(f"histogram_quantile(0.99, sum by (le) (rate(streamwarden_batch_duration_seconds_bucket[{RI}])))", "p99", "B"),
                unit="s",
            )
        )
        .with_panel(
            ts(
                "time per detector (p95 per batch)",
                q(
                    f"histogram_quantile(0.95, sum by (le, detector) (rate(streamwarden_detector_duration_seconds_bucket[{RI}])))",
                    "{{detector}}",
                ),
                unit="s",
            )
        )
        .with_panel(
            ts("dead letters by reason", q("sum by (reason) (increase(streamwarden_dead_letters_total[5m])) or vector(0)", "{{reason}}"))
        )
        .with_panel(
            ts(
                "detector errors and duplicates",
                q("sum by (detector) (increase(streamwarden_detector_errors_total[5m])) or vector(0)", "{{detector}} errors"),
                q("sum(increase(streamwarden_duplicate_events_total[5m])) or vector(0)", "duplicates", "B"),
            )
        )
        .with_panel(
            ts(
                "events left unjudged, by detector",
                q(
                    f"(sum by (detector) (rate(streamwarden_unjudged_events_total[{RI}])) / "
                    f"scalar(sum(rate(streamwarden_events_total[{RI}])))) or vector(0)",
                    "{{detector}}",
                ),
                unit="percentunit",
                desc="The share of events a detector did not judge: its ration under load (toxicity's embedding head: "
                "streamwarden_toxicity_head_events), nothing to judge them on (grounding: the events without context "
                "documents, most of them), or its failure on their batch. Its rate rules divide by the rest.",
            )
        )
        .with_panel(ts("batches in flight", q("sum(streamwarden_batches_in_flight)", "in flight"), w=12, h=8))
    )


def pii() -> db.Dashboard:
    d = base(
        "streamwarden-pii", "streamwarden: PII leaks", "Personal data and secrets in responses: leaks (not given by the user) and echoes."
    )
    return (
        d.with_panel(
            st("leaks (1h)", q(f'sum(increase(streamwarden_findings_total{{{M}, detector="pii", kind="pii_leak"}}[1h])) or vector(0)'))
        )
        .with_panel(
            st("echoes (1h)", q(f'sum(increase(streamwarden_findings_total{{{M}, detector="pii", kind="pii_echo"}}[1h])) or vector(0)'))
        )
        .with_panel(
            st(
                "leak rate",
                q(
                    f'(sum(rate(streamwarden_findings_total{{{M}, detector="pii", kind="pii_leak"}}[{RI}])) / sum(rate(streamwarden_events_total{{{M}}}[{RI}]))) or vector(0)'
                ),
                "percentunit",
                w=12,
            )
        )
        .with_panel(
            ts(
                "entities/s by type and origin",
                q(f"sum by (entity_type, origin) (rate(streamwarden_pii_entities_total{{{M}}}[{RI}]))", "{{entity_type}} {{origin}}"),
                w=24,
            )
        )
        .with_panel(
            ts(
                "PII findings by severity",
                q(f'sum by (kind, severity) (rate(streamwarden_findings_total{{{M}, detector="pii"}}[{RI}]))', "{{kind}} {{severity}}"),
            )
        )
        .with_panel(
            ts(
                "PII finding score p50",
                q(
                    f'histogram_quantile(0.5, sum by (le, kind) (rate(streamwarden_finding_score_bucket{{detector="pii"}}[{RI}])))',
                    "{{kind}}",
                ),
            )
        )
    )


def bias() -> db.Dashboard:
    d = base("streamwarden-bias", "streamwarden: bias", "Outcome disparities across demographic groups, on live traffic.")
    return (
        d.with_panel(
            ts(
                "disparity ratio (four-fifths rule: below 0.8 is adverse)",
                q(f"streamwarden_bias_disparity_ratio{{{M}}}", "{{model}} {{category}} {{outcome}}"),
                w=12,
            )
        )
        .with_panel(
            ts("disparity gap", q(f"streamwarden_bias_disparity_gap{{{M}}}", "{{model}} {{category}} {{outcome}}"), unit="percentunit")
        )
        .with_panel(
            ts(
                "bias findings",
                q(
                    f'sum by (model, kind) (increase(streamwarden_findings_total{{{M}, detector="bias"}}[15m])) or vector(0)',
                    "{{model}} {{kind}}",
                ),
                w=24,
            )
        )
    )


def judged_share(detector: str, by: str = "model, model_version") -> str:
    """PromQL: ``detector``'s findings over the events it judged (every event less those it left unjudged), per
    ``by``: the share its finding_rate rule reads (streams/policy/prometheus_rules.py)."""
    events = f"sum by ({by}) (rate(streamwarden_events_total{{{M}}}[{RI}]))"
    unjudged = f'sum by ({by}) (rate(streamwarden_unjudged_events_total{{{M}, detector="{detector}"}}[{RI}]))'
    judged = f"(({events} - ({unjudged} or {events} * 0)) > 0)"
    # Where it judged events but found nothing, 0; where it judged none, no value (not NaN, nor a 0 that reads
    # as "all clean").
    return f'(sum by ({by}) (rate(streamwarden_findings_total{{{M}, detector="{detector}"}}[{RI}])) / {judged}) or on ({by}) ({judged} * 0)'


def consistency() -> db.Dashboard:
    d = base(
        "streamwarden-consistency",
        "streamwarden: hallucination (self-consistency and grounding)",
        "Responses that disagree with other samples of the same prompt, and responses that their context documents do not support (RAG).",
    )
    return (
        d.with_panel(
            ts(
                "inconsistent responses / events judged",
                q(judged_share("consistency"), "{{model}} {{model_version}}"),
                unit="percentunit",
                desc="Over the events consistency judged: those that carried samples (or were re-sampled), as the "
                "hallucination-rate rule counts; the pipeline dashboard shows how many it left unjudged.",
            )
        )
        .with_panel(
            ts(
                "consistency score p50 / p90 (of flagged responses)",
                q(f'histogram_quantile(0.5, sum by (le) (rate(streamwarden_finding_score_bucket{{detector="consistency"}}[{RI}])))', "p50"),
                q(
                    f'histogram_quantile(0.9, sum by (le) (rate(streamwarden_finding_score_bucket{{detector="consistency"}}[{RI}])))',
                    "p90",
                    "B",
                ),
            )
        )
        .with_panel(
            ts(
                "re-sampling of the model",
                q("sum by (outcome) (rate(streamwarden_sampler_requests_total[5m])) or vector(0)", "{{outcome}}"),
                w=24,
                desc="Samples the worker asked the model for (budgeted: sampled, failed, skipped).",
            )
        )
        .with_panel(
            ts(
                "ungrounded responses / RAG answers judged",
                q(judged_share("grounding"), "{{model}} {{model_version}}"),
                unit="percentunit",
                desc="Responses with a sentence that no context document supports, over the events grounding judged "
                "(those with context documents), as the grounding-rate rule counts.",
            )
        )
        .with_panel(
            ts(
                "grounding score p50 / p90 (of flagged responses)",
                q(f'histogram_quantile(0.5, sum by (le) (rate(streamwarden_finding_score_bucket{{detector="grounding"}}[{RI}])))', "p50"),
                q(
                    f'histogram_quantile(0.9, sum by (le) (rate(streamwarden_finding_score_bucket{{detector="grounding"}}[{RI}])))',
                    "p90",
                    "B",
                ),
                desc="The probability that no document supports the worst sentence (NLI) or the share of its content words that "
                "the closest document lacks (lexical).",
            )
        )
        .with_panel(
            ts(
                "grounding stage time p50 / p95 (per batch)",
                q(
                    f'histogram_quantile(0.5, sum by (le) (rate(streamwarden_detector_duration_seconds_bucket{{detector="grounding"}}[{RI}])))',
                    "p50",
                ),
                q(
                    f'histogram_quantile(0.95, sum by (le) (rate(streamwarden_detector_duration_seconds_bucket{{detector="grounding"}}[{RI}])))',
                    "p95",
                    "B",
                ),
                unit="s",
                w=24,
                desc="Time the grounding detector spent on one micro-batch (NLI over every sentence and document chunk).",
            )
        )
    )


def attacks() -> db.Dashboard:
    d = base(
        "streamwarden-attacks",
        "streamwarden: attacks and harm",
        "Jailbreak and prompt-injection attempts in users' turns, instructions hidden in context documents (indirect "
        "injection), and toxic responses.",
    )
    return (
        d.with_panel(
            ts(
                "attempts / events, by kind",
                q(
                    f'(sum by (model, kind) (rate(streamwarden_findings_total{{{M}, detector="injection"}}[{RI}])) / ignoring (kind) group_left '
                    f"sum by (model) (rate(streamwarden_events_total{{{M}}}[{RI}]))) or vector(0)",
                    "{{model}} {{kind}}",
                ),
                unit="percentunit",
                desc="Events whose user turns (jailbreak, prompt_injection, multi_turn_injection) or context documents "
                "(indirect_injection) the injection detector flagged, over all events.",
            )
        )
        .with_panel(
            ts(
                "attempts/s by attack family",
                q(
                    f'sum by (category) (rate(streamwarden_finding_categories_total{{{M}, detector="injection"}}[{RI}])) or vector(0)',
                    "{{category}}",
                ),
                desc="The rule family that explains each flag (instruction_override, role_play, prompt_extraction, "
                "exfiltration, ai_directive, encoded_payload), or 'classifier' when only the model saw it.",
            )
        )
        .with_panel(
            ts(
                "toxic responses / events judged",
                q(judged_share("toxicity"), "{{model}} {{model_version}}"),
                unit="percentunit",
                desc="Per model version, so that a canary's jump shows beside the stable version; over the events toxicity "
                "judged (under load its ration leaves some unjudged: the pipeline dashboard shows how many), as the toxic-rate rule counts.",
            )
        )
        .with_panel(
            ts(
                "injection stage time p50 / p95 (per batch)",
                q(
                    f'histogram_quantile(0.5, sum by (le) (rate(streamwarden_detector_duration_seconds_bucket{{detector="injection"}}[{RI}])))',
                    "p50",
                ),
                q(
                    f'histogram_quantile(0.95, sum by (le) (rate(streamwarden_detector_duration_seconds_bucket{{detector="injection"}}[{RI}])))',
                    "p95",
                    "B",
                ),
                unit="s",
            )
        )
    )


def drift() -> db.Dashboard:
    d = base(
        "streamwarden-drift",
        "streamwarden: drift",
        "The live window of prompts and responses against the reference. Reports: see the link above.",
    )
    return (
        d.with_panel(
            ts(
                "embedding drift p-value (MMD permutation test)",
                q(f"min by (model, field) (streamwarden_drift_p_value{{{M}}})", "{{model}} {{field}}"),
            )
        )
        .with_panel(
            ts(
                "embedding drift statistic (MMD²)",
                q(f"max by (model, field) (streamwarden_drift_mmd_statistic{{{M}}})", "{{model}} {{field}}"),
            )
        )
        .with_panel(
            ts(
                "descriptor drift score",
                q(f"max by (model, descriptor) (streamwarden_descriptor_drift_score{{{M}}})", "{{model}} {{descriptor}}"),
            )
        )
        .with_panel(
            ts(
                "drift findings",
                q(
                    f'sum by (model, detector, kind) (increase(streamwarden_findings_total{{{M}, detector=~"drift|descriptor_drift"}}[15m])) or vector(0)',
                    "{{model}} {{kind}}",
                ),
            )
        )
        .with_panel(
            ts(
                "drift references (pinned, persisted, restored, refused, reset)",
                q(
                    "sum by (detector, outcome) (increase(streamwarden_references_total[1h])) or vector(0)",
                    "{{detector}} {{outcome}}",
                ),
                desc="The reference windows the drift detectors pinned from traffic and kept on the references topic; "
                "'restored' after a restart means the worker tests against the reference pinned before it; "
                "'persist_failed' without 'persisted' means a restart would re-pin from live traffic (a health alert).",
            )
        )
        .with_panel(
            text.Panel()
            .title("drift reports")
            .span(24)
            .height(4)
            .content(
                "Evidently HTML reports of every drift finding are served by the worker: [open the list](${reports_url}). "
                "Set the `reports_url` variable to your worker's address."
            )
        )
    )


BUILDERS = {
    "overview": overview,
    "pipeline": pipeline,
    "pii": pii,
    "bias": bias,
    "consistency": consistency,
    "drift": drift,
    "attacks": attacks,
}


def render_all() -> dict[str, str]:
    """File name -> dashboard JSON, as committed under json/."""
    out = {}
    for name, build in BUILDERS.items():
        model = build().build()
        data = json.loads(json.dumps(model, cls=JSONEncoder))
        for i, panel in enumerate(data.get("panels", []), start=1):
            panel["id"] = i
        out[f"{name}.json"] = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return out


def panel_queries(dashboard: dict) -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, PromQL) of every target of every panel, and the annotations."""
    out = []
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            out.append((dashboard["uid"], panel.get("title", ""), target["expr"]))
    for ann in dashboard.get("annotations", {}).get("list", []):
        if ann.get("expr"):
            out.append((dashboard["uid"], f"annotation {ann['name']}", ann["expr"]))
    return out


def main() -> None:
    JSON_DIR.mkdir(exist_ok=True)
    for name, text_ in render_all().items():
        (JSON_DIR / name).write_text(text_, encoding="utf-8")
        print(JSON_DIR / name)


if __name__ == "__main__":
    main()
