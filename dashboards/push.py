"""``streamwarden dashboards push``: upload the generated dashboards through Grafana's HTTP API.

It uses grafana-client (the maintained successor of grafana-api, same interface) rather than
raw HTTP: it knows Grafana's endpoints, auth (token or user/password) and error types. The
dashboards go into one folder (created if missing), each with ``overwrite``, so pushing
twice is the same as pushing once. With ``prometheus_url`` it also creates or updates the
datasource the panels query (uid ``streamwarden-prometheus``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .build import JSON_DIR

DATASOURCE_UID = "streamwarden-prometheus"


@dataclass
class PushResult:
    folder_uid: str
    dashboards: list[dict] = field(default_factory=list)
    datasource: str | None = None


def push(
    grafana_url: str,
    credential,
    folder: str = "streamwarden",
    folder_uid: str = "streamwarden",
    prometheus_url: str | None = None,
    timeout: float = 10.0,
) -> PushResult:
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaClientError

    api = GrafanaApi.from_url(grafana_url, credential=credential, timeout=timeout)
    api.health.check()
    try:
        api.folder.get_folder(folder_uid)
    except GrafanaClientError as exc:
        if getattr(exc, "status_code", None) != 404:
            raise
        api.folder.create_folder(folder, uid=folder_uid)
    result = PushResult(folder_uid)
    if prometheus_url:
        ds = {"name": "Prometheus (streamwarden)", "uid": DATASOURCE_UID, "type": "prometheus", "access": "proxy", "url": prometheus_url}
        try:
            api.datasource.get_datasource_by_uid(DATASOURCE_UID)
            api.datasource.update_datasource_by_uid(DATASOURCE_UID, ds)
            result.datasource = "updated"
        except GrafanaClientError as exc:
            if getattr(exc, "status_code", None) != 404:
                raise
            api.datasource.create_datasource(ds)
            result.datasource = "created"
    for path in sorted(JSON_DIR.glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        dashboard.pop("id", None)
        answer = api.dashboard.update_dashboard(
            {"dashboard": dashboard, "folderUid": folder_uid, "overwrite": True, "message": "streamwarden dashboards push"}
        )
        result.dashboards.append(
            {"uid": dashboard["uid"], "title": dashboard["title"], "url": answer.get("url") if isinstance(answer, dict) else None}
        )
    return result
