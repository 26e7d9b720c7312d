"""The policy agent's web pages, rendered on the server: HTML with inline CSS and SVG, no script,
no asset from anywhere else. Every value that reaches a page is escaped; findings carry masked
values only (rule 6), and the pages show nothing of an event but its id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from typing import Any
from urllib.parse import quote

from streams.actions.incidents import FindingView, Incident, Snapshot

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.6em 1.2em;display:flex;gap:1.4em;align-items:center}
header a{color:#cfe0ff;text-decoration:none}header .me{margin-left:auto;color:#aab}
main{padding:1em 1.4em;max-width:1100px}h1{font-size:1.35em;margin:.2em 0 .6em}h2{font-size:1.1em;margin:1.3em 0 .4em}
table{border-collapse:collapse;width:100%;background:#fff}th,td{border-bottom:1px solid #e3e6eb;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}code{font:12px ui-monospace,Menlo,monospace;background:#eef1f5;padding:0 .2em}
.pill{display:inline-block;padding:0 .55em;border-radius:1em;font-size:.85em;font-weight:600;color:#fff;background:#7a8394}
.firing,.critical,.engaged{background:#c62828}.pending,.high,.warning{background:#e08a00}.resolved,.ok,.released{background:#2e7d32}
.medium{background:#b26a00}.low,.info{background:#52708f}
.card{background:#fff;border:1px solid #e3e6eb;border-radius:6px;padding:.8em 1em;margin:.6em 0}
.timeline{display:flex;gap:1em;flex-wrap:wrap}.timeline div{background:#fff;border:1px solid #e3e6eb;border-radius:6px;padding:.4em .8em}
.notice{background:#e8f4ea;border:1px solid #9ccaa3;padding:.5em 1em;border-radius:6px}.error{background:#fdecea;border-color:#e6a19a}
form.inline{display:inline}input[type=text],input[type=password]{padding:.25em .4em;border:1px solid #b9c0cc;border-radius:4px}
button{padding:.25em .8em;border:1px solid #1d2330;background:#1d2330;color:#fff;border-radius:4px;cursor:pointer}
.muted{color:#6b7385}svg text{font:11px system-ui,sans-serif;fill:#4a5263}
"""


@dataclass
class Viewer:
    """Who is looking: the signed-in person (None: nobody) and the CSRF token of their forms."""

    user: str | None = None
    csrf: str = ""
    admin_enabled: bool = True


def ts(t: float | None) -> str:
    if t is None:
        return "—"
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _pill(word: str, cls: str | None = None) -> str:
    return f'<span class="pill {escape(cls or word)}">{escape(word)}</span>'


def page(title: str, body: str, viewer: Viewer, notice: str | None = None, error: bool = False) -> str:
    if viewer.user:
        me = (
            f'<span class="me">signed in as {escape(viewer.user)} '
            f'<form class="inline" method="post" action="/logout"><input type="hidden" name="csrf" value="{escape(viewer.csrf)}">'
            '<button type="submit" id="sign-out">sign out</button></form></span>'
        )
    elif viewer.admin_enabled:
        me = '<a class="me" href="/login" id="sign-in">sign in</a>'
    else:
        me = '<span class="me">read-only (no admin token set)</span>'
    note = f'<p class="notice{" error" if error else ""}" id="notice">{escape(notice)}</p>' if notice else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} · streamwarden</title><style>{CSS}</style></head><body>"
        f'<header><strong>streamwarden</strong><a href="/">Now</a><a href="/incidents">Incidents</a>{me}</header>'
        f"<main>{note}{body}</main></body></html>"
    )


# -- the chart ---------------------------------------------------------------------------


def chart(inc: Incident, width: int = 720, height: int = 190) -> str:
    """The rule's value around the breach: the line, the threshold (dashed), pending/firing/resolved marks."""
    pts = inc.series
    if len(pts) < 2:
        return '<p class="muted" id="chart">Not enough values to draw (the agent re-reads the metrics of its look-back only).</p>'
    pad_l, pad_r, pad_t, pad_b = 56, 10, 10, 28
    t0 = min(pts[0][0], inc.start)
    t1 = max(pts[-1][0], inc.resolved_at or pts[-1][0])
    values = [v for _, v in pts] + ([float(inc.threshold)] if inc.threshold is not None else [])
    lo, hi = min(values + [0.0]), max(values)
    if hi <= lo:
        hi = lo + 1.0
    hi += (hi - lo) * 0.08
    w, h = width - pad_l - pad_r, height - pad_t - pad_b

    def x(t: float) -> float:
        return pad_l + (t - t0) / max(t1 - t0, 1e-9) * w

    def y(v: float) -> float:
        return pad_t + h - (v - lo) / (hi - lo) * h

    line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
    parts = [
        f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(inc.metric)} around the breach">',
        f'<rect x="{pad_l}" y="{pad_t}" width="{w}" height="{h}" fill="#fff" stroke="#d5d9e0"/>',
    ]
    for label, t, colour, row in (
        ("pending", inc.pending_at, "#e08a00", 0),
        ("firing", inc.firing_at, "#c62828", 1),  # a line below: pending and firing are often the same moment
        ("resolved", inc.resolved_at, "#2e7d32", 0),
    ):
        if t is not None and t0 <= t <= t1:
            parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{pad_t}" y2="{pad_t + h}" stroke="{colour}" stroke-width="1"/>')
            parts.append(f'<text x="{x(t) + 3:.1f}" y="{pad_t + 12 + 13 * row}" style="fill:{colour}">{label}</text>')
    if inc.threshold is not None:
        ty = y(float(inc.threshold))
        parts.append(f'<line x1="{pad_l}" x2="{pad_l + w}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#c62828" stroke-dasharray="5,4"/>')
        parts.append(f'<text x="{pad_l + w - 4}" y="{ty - 4:.1f}" text-anchor="end">threshold {escape(_fmt(inc.threshold))}</text>')
    parts.append(f'<polyline fill="none" stroke="#1f5fbf" stroke-width="2" points="{line}"/>')
    parts.append(f'<text x="{pad_l - 4}" y="{pad_t + 10}" text-anchor="end">{escape(_fmt(hi))}</text>')
    parts.append(f'<text x="{pad_l - 4}" y="{pad_t + h}" text-anchor="end">{escape(_fmt(lo))}</text>')
    for t, anchor in ((t0, "start"), (t1, "end")):
        parts.append(
            f'<text x="{x(t):.1f}" y="{height - 8}" text-anchor="{anchor}">{datetime.fromtimestamp(t, tz=timezone.utc):%H:%M:%S}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


# -- pages -------------------------------------------------------------------------------


def grafana_link(link: str | None, start: float, end: float | None) -> str | None:
    """The dashboard link of the alert, with the time range of the incident (Grafana's from/to, in ms)."""
    if not link:
        return None
    frm = int((start - 300) * 1000)
    to = "now" if end is None else str(int((end + 300) * 1000))
    return f"{link}{'&' if '?' in link else '?'}from={frm}&to={to}"


def _outcome(results: dict[str, str] | None) -> str:
    if not results:
        return '<span class="muted">no outcome yet</span>'
    return "<br>".join(
        f"{escape(k)}: {_pill(v.split(':')[0], 'ok' if v == 'ok' else ('warning' if v.startswith('skipped') else 'critical'))} {escape(v if v != 'ok' else '')}"
        for k, v in sorted(results.items())
    )


def _finding_row(f: FindingView) -> str:
    if f.html is None:
        f.html = _render_finding_row(f)
    return f.html


def _render_finding_row(f: FindingView) -> str:
    masked = ", ".join(f"{escape(kind)} <code>{escape(form)}</code>" for kind, form in f.entities)
    other = f.details.get("other")
    extra = masked or (f"<code>{escape(other)}</code>" if other else "")
    return (
        f"<tr><td>{escape(ts(f.at))}</td><td>{_pill(f.severity)}</td><td><code>{escape(f.key)}</code></td>"
        f"<td>{escape(f'{f.score:.2f}')}</td><td>{escape(f.summary)}</td><td>{extra}</td><td><code>{escape(f.event_id or '')}</code></td></tr>"
    )


def _drift_report(inc: Incident) -> str:
    drift = [f for f in inc.findings if f.is_drift]
    if not drift:
        return ""
    rows = []
    for f in drift[:20]:
        d = f.details
        if "p_value" in d:
            what = (
                f"{escape(str(d.get('field', '')))}: MMD² {escape(_fmt(d.get('statistic')))}, p {escape(_fmt(d.get('p_value')))} "
                f"&lt; α {escape(_fmt(d.get('alpha')))}; reference {escape(_fmt(d.get('n_reference')))} events "
                f"({escape(str(d.get('reference', '')))}), current {escape(_fmt(d.get('n_current')))}"
            )
        else:
            raw = d.get("tests")
            tests: dict = raw if isinstance(raw, dict) else {}
            cols = []
            for col in d.get("drifted") or []:
                cell = tests.get(col)
                t: dict = cell if isinstance(cell, dict) else {}
                cols.append(f"{escape(str(col))} ({escape(', '.join(f'{k} {_fmt(v)}' for k, v in sorted(t.items()) if k != 'drifted'))})")
            what = f"drifted: {'; '.join(cols) or 'n/a'}; reference {escape(_fmt(d.get('n_reference')))}, current {escape(_fmt(d.get('n_current')))}"
            if d.get("report"):
                what += f"; the worker's report: <code>/reports/{escape(str(d['report']).rsplit('/', 1)[-1])}</code>"
        rows.append(f"<tr><td>{escape(ts(f.at))}</td><td><code>{escape(f.key)}</code></td><td>{what}</td></tr>")
    return '<h2 id="drift">Drift report</h2><table><tr><th>at</th><th>detector.kind</th><th>the test</th></tr>' + "".join(rows) + "</table>"


def incident_page(inc: Incident, viewer: Viewer, switch_engaged: bool, notice: str | None = None) -> str:
    g_link = grafana_link(inc.link, inc.start, inc.resolved_at)
    route = "" if inc.route == "*" else f" route {inc.route}"
    head = (
        f'<h1 id="incident-title">{escape(inc.rule)} on {escape(inc.model)} {escape(inc.model_version)}{escape(route)} '
        f"{_pill(inc.state)} {_pill(inc.severity)}</h1>"
        f'<div class="card"><strong>Rule</strong> <code>{escape(inc.rule)}</code>: {escape(inc.metric)} {escape(inc.op)} '
        f"{escape(_fmt(inc.threshold))} over {escape(_fmt(inc.window_s))} s; the value at firing: <strong>{escape(_fmt(inc.value_at_firing))}</strong>"
        f'<br><span class="muted">{escape(inc.reason)}</span>'
        + (f'<br><a id="grafana" href="{escape(g_link)}">Grafana, this incident\'s time range</a>' if g_link else "")
        + "</div>"
    )
    timeline = (
        '<div class="timeline" id="timeline">'
        f"<div>{_pill('pending')} {escape(ts(inc.pending_at))}</div>"
        f"<div>{_pill('firing')} {escape(ts(inc.firing_at))}</div>"
        f"<div>{_pill('resolved')} {escape(ts(inc.resolved_at)) if inc.resolved_at else 'not yet'}</div></div>"
    )
    acts = []
    for a in inc.actions:
        what = (
            a.action
            + (f" → {a.to_version}" if a.to_version else "")
            + (f" (fallback {a.fallback or 'none: 503'})" if a.action == "kill" else "")
        )
        acts.append(
            f'<tr class="action-{escape(a.action)}"><td>{escape(ts(a.decided_at.timestamp()))}</td><td>{_pill(a.action, "critical" if a.action in ("kill", "rollback", "should_rollback") else "info")}</td>'
            f"<td>{escape(what)}</td><td>{escape(a.by)}</td><td>{escape(a.reason)}</td><td>{_outcome(inc.outcomes.get(a.action_id)) if a.by == 'policy' else 'applied (control topic)'}</td></tr>"
        )
    actions = (
        '<h2>Actions</h2><table id="actions"><tr><th>at</th><th>action</th><th>what</th><th>by</th><th>why</th><th>outcome</th></tr>'
        + "".join(acts)
        + "</table>"
    )
    release = ""
    if switch_engaged:
        release = (
            f'<div class="card" id="killswitch"><strong>The kill switch of {escape(inc.model)} is engaged</strong>: the gateway is not serving it. '
            + _release_form(inc.model, viewer, f"/incidents/{inc.id}")
            + "</div>"
        )
    evidence = "".join(
        f"<tr><th>{escape(str(k))}</th><td><code>{escape(json.dumps(v, default=str, sort_keys=True))}</code></td></tr>"
        for k, v in sorted(inc.evidence.items())
    )
    findings = ""
    if inc.findings or inc.findings_dropped:
        more = (
            f' <span class="muted">and {inc.findings_dropped} more (the page keeps the first {len(inc.findings)})</span>'
            if inc.findings_dropped
            else ""
        )
        findings = (
            f"<h2>Findings that drove the metric ({len(inc.findings) + inc.findings_dropped}){more}</h2>"
            '<p class="muted">Masked at the source: entity types and masked forms only, never the values.</p>'
            '<table id="findings"><tr><th>detected</th><th>severity</th><th>detector.kind</th><th>score</th><th>summary</th><th>masked</th><th>event</th></tr>'
            + "".join(_finding_row(f) for f in inc.findings)
            + "</table>"
        )
    return page(
        f"{inc.rule} on {inc.model}",
        head
        + release
        + timeline
        + f'<h2>{escape(inc.metric)} around the breach</h2><div class="card">{chart(inc)}</div>'
        + actions
        + f'<h2>Evidence (at firing)</h2><table id="evidence">{evidence}</table>'
        + _drift_report(inc)
        + findings,
        viewer,
        notice,
    )


def _release_form(model: str, viewer: Viewer, back: str) -> str:
    if not viewer.user:
        return (
            '<a href="/login?next=' + quote(back) + '">Sign in</a> to release it.'
            if viewer.admin_enabled
            else "Set an admin token to release it here."
        )
    return (
        f'<form method="post" action="/killswitch/{quote(model, safe="")}/release" class="inline release">'
        f'<input type="hidden" name="csrf" value="{escape(viewer.csrf)}"><input type="hidden" name="next" value="{escape(back)}">'
        '<input type="text" name="reason" placeholder="why (recorded)" required size="36"> '
        f'<button type="submit" id="release-{escape(model)}">Release the kill switch</button></form>'
    )


def now_page(snap: Snapshot, incidents: list[Incident], viewer: Viewer, notice: str | None = None, error: bool = False) -> str:
    engaged = sorted((m, s) for m, s in snap.switches.items() if s.engaged)
    rows = "".join(
        f"<tr><td>{escape(m)}</td><td>{escape(ts(s.at.timestamp()))}</td><td>{escape(s.by)}</td><td>{escape(s.fallback or '503')}</td>"
        f"<td>{escape(s.reason)}</td><td>{_release_form(m, viewer, '/')}</td></tr>"
        for m, s in engaged
    )
    switches = (
        '<h2>Kill switches engaged</h2><table id="switches"><tr><th>model</th><th>since</th><th>by</th><th>fallback</th><th>why</th><th></th></tr>'
        + rows
        + "</table>"
        if engaged
        else '<h2>Kill switches engaged</h2><p id="switches">None.</p>'
    )
    ro_rows = []
    for ro in sorted(snap.rollouts, key=lambda r: (r["model"], r["version"])):
        nxt = ro.get("next_stage")
        if nxt and viewer.user:
            action = (
                f'<form method="post" action="/rollouts/{quote(ro["model"], safe="")}/{quote(ro["version"], safe="")}/promote" class="inline">'
                f'<input type="hidden" name="csrf" value="{escape(viewer.csrf)}"><input type="hidden" name="stage" value="{escape(nxt)}">'
                f'<button type="submit">Promote to {escape(nxt)}</button></form>'
            )
        else:
            action = "" if not nxt else f'<span class="muted">next: {escape(nxt)}</span>'
        ro_rows.append(
            f"<tr><td>{escape(ro['model'])}</td><td>{escape(ro['version'])}</td><td>{_pill(ro['stage'], 'info')}</td>"
            f"<td>{escape(' → '.join(ro.get('stages') or []))}</td><td>{escape(ro.get('previous_version') or '')}</td><td>{action}</td></tr>"
        )
    rollouts = (
        '<h2>Rollouts by stage</h2><table id="rollouts"><tr><th>model</th><th>version</th><th>stage</th><th>stages</th><th>rolls back to</th><th></th></tr>'
        + "".join(ro_rows)
        + "</table>"
        if ro_rows
        else "<h2>Rollouts by stage</h2><p>None declared.</p>"
    )
    r_rows = []
    for r in snap.rules:
        model, version, route = r["group"]
        link = f'<a href="/incidents/{escape(r["episode"])}">incident</a>' if r["episode"] else ""
        r_rows.append(
            f"<tr><td>{escape(r['rule'])}</td><td>{escape(model)} {escape(version)}{'' if route == '*' else ' ' + escape(route)}</td>"
            f"<td>{_pill(r['state'])}</td><td>{escape(_fmt(r['value']))}</td><td>{escape(ts(r['since']))}</td><td>{link}</td></tr>"
        )
    rules = (
        '<h2>Rules pending or firing</h2><table id="rules"><tr><th>rule</th><th>scope</th><th>state</th><th>value</th><th>since</th><th></th></tr>'
        + "".join(r_rows)
        + "</table>"
        if r_rows
        else '<h2>Rules pending or firing</h2><p id="rules">None.</p>'
    )
    return page(
        "Now",
        f'<h1>Now <span class="muted">as of {escape(ts(snap.at))}</span></h1>'
        + switches
        + rollouts
        + rules
        + _incident_table(incidents[:20]),
        viewer,
        notice,
        error,
    )


def _incident_table(incidents: list[Incident]) -> str:
    if not incidents:
        return "<h2>Incidents</h2><p>None kept.</p>"
    rows = "".join(
        f'<tr><td><a href="/incidents/{escape(i.id)}">{escape(ts(i.firing_at))}</a></td><td>{escape(i.rule)}</td>'
        f"<td>{escape(i.model)} {escape(i.model_version)}</td><td>{_pill(i.state)}</td><td>{escape(', '.join(dict.fromkeys(a.action for a in i.actions)))}</td>"
        f"<td>{len(i.findings) + i.findings_dropped}</td></tr>"
        for i in incidents
    )
    return (
        '<h2>Incidents</h2><table id="incidents"><tr><th>fired</th><th>rule</th><th>model</th><th>state</th><th>actions</th><th>findings</th></tr>'
        + rows
        + "</table>"
    )


def incidents_page(incidents: list[Incident], kept: int, viewer: Viewer) -> str:
    return page(
        "Incidents",
        f'<h1>Incidents <span class="muted">(the last {kept} are kept)</span></h1>' + _incident_table(incidents),
        viewer,
    )


def login_page(viewer: Viewer, next_url: str, error: str | None = None) -> str:
    if not viewer.admin_enabled:
        return page("Sign in", "<h1>Sign in</h1><p>Changes from this page are off: set <code>gateway_admin_token</code>.</p>", viewer)
    return page(
        "Sign in",
        "<h1>Sign in</h1><p>With the admin token (the gateway's <code>gateway_admin_token</code>, the same as the admin endpoints); "
        "your name goes into the audit log with every change.</p>"
        '<form method="post" action="/login" class="card" id="login">'
        f'<input type="hidden" name="next" value="{escape(next_url)}">'
        '<p><label>Your name <input type="text" name="name" required maxlength="64" autocomplete="username"></label></p>'
        '<p><label>Admin token <input type="password" name="token" required autocomplete="current-password"></label></p>'
        '<p><button type="submit" id="login-submit">Sign in</button></p></form>',
        viewer,
        error,
        error=bool(error),
    )


def message_page(title: str, text: str, viewer: Viewer) -> str:
    return page(title, f"<h1>{escape(title)}</h1><p>{escape(text)}</p>", viewer)
