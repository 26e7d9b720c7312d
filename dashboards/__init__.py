"""Grafana dashboards as code (``build.py``, grafana-foundation-sdk), the generated JSON
(``json/``), Grafana's provisioning files (``provisioning/``), the Prometheus and
Alertmanager configuration of the compose stack, and ``push.py`` (Grafana's HTTP API)."""
