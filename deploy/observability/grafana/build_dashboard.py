#!/usr/bin/env python3
"""Writes dashboards/ikit.json, the infisical-kit Grafana dashboard, from the panel list below.

The JSON is generated (and checked in) so panels stay uniform; deploy/checks/metrics.py verifies
that every metric it queries is exported by the code. Run: python3 build_dashboard.py
"""
import json
import pathlib

PANELS = [
    # (row title, [(panel title, unit, [(expr, legend)])])
    ("Infisical client", [
        ("Fetches by source", "reqps", [('sum by (source) (rate(infisical_fetch_total[5m]))', "{{source}}")]),
        ("Fetch errors by kind", "reqps", [('sum by (error) (rate(infisical_fetch_errors_total[5m]))', "{{error}}")]),
        ("Fetch latency p50 / p99", "s", [
            ('histogram_quantile(0.5, sum by (le) (rate(infisical_fetch_duration_seconds_bucket[5m])))', "p50"),
            ('histogram_quantile(0.99, sum by (le) (rate(infisical_fetch_duration_seconds_bucket[5m])))', "p99"),
        ]),
        ("Token lifetime at last login/renewal", "s", [('min by (instance) (infisical_token_expires_in_seconds)', "{{instance}}")]),
        ("Rate-limit waits p99", "s", [('histogram_quantile(0.99, sum by (le) (rate(infisical_rate_limit_wait_seconds_bucket[5m])))', "p99")]),
    ]),
    ("Cache", [
        ("Hit ratio", "percentunit", [(
            'sum(rate(infisical_cache_hit_total[5m])) / clamp_min(sum(rate(infisical_cache_hit_total[5m])) + sum(rate(infisical_cache_miss_total[5m])), 1e-9)',
            "hit ratio")]),
        ("Stale serves", "ops", [('sum by (instance) (rate(infisical_cache_stale_total[5m]))', "{{instance}}")]),
        ("Redis L2 up", "bool", [('min by (instance) (infisical_cache_l2_up)', "{{instance}}")]),
    ]),
    ("Webhook", [
        ("Deliveries by status", "reqps", [('sum by (status) (rate(infisical_webhook_events_total[5m]))', "{{status}}")]),
        ("Queue depth", "short", [('max by (instance) (ikit_webhook_queue_depth)', "{{instance}}")]),
        ("Oldest queued change", "s", [('max by (instance) (ikit_webhook_queue_oldest_age_seconds)', "{{instance}}")]),
        ("Processing latency p99", "s", [('histogram_quantile(0.99, sum by (le) (rate(ikit_webhook_processing_latency_seconds_bucket[5m])))', "p99")]),
        ("Change events by kind", "ops", [('sum by (kind) (rate(ikit_webhook_change_events_total[5m]))', "{{kind}}")]),
        ("Folder refetches", "ops", [('sum(rate(ikit_webhook_refetch_total[5m]))', "refetches")]),
    ]),
    ("Keys, health, audit", [
        ("Health by part (0 ok, 1 degraded, 2 unhealthy)", "short", [('max by (part) (ikit_health_status)', "{{part}}")]),
        ("JWT rotations", "short", [('sum by (method) (increase(jwt_key_rotation_total[1d]))', "{{method}}")]),
        ("AES rotations", "short", [('sum by (method) (increase(aes_key_rotation_total[1d]))', "{{method}}")]),
        ("Audit spool depth", "short", [('max by (instance) (audit_spool_depth)', "{{instance}}")]),
        ("Audit events by outcome", "ops", [('sum by (outcome) (rate(audit_events_total[5m]))', "{{outcome}}")]),
    ]),
]


def build():
    panels, y, next_id = [], 0, 1
    for row_title, row_panels in PANELS:
        panels.append({"id": next_id, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        next_id += 1
        y += 1
        for i, (title, unit, targets) in enumerate(row_panels):
            panels.append({
                "id": next_id,
                "type": "timeseries",
                "title": title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 8, "x": (i % 3) * 8, "y": y + (i // 3) * 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [
                    {"refId": chr(ord("A") + n), "expr": expr, "legendFormat": legend,
                     "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                    for n, (expr, legend) in enumerate(targets)
                ],
            })
            next_id += 1
        y += ((len(row_panels) + 2) // 3) * 8
    return {
        "uid": "infisical-kit",
        "title": "infisical-kit",
        "tags": ["infisical", "infisical-kit"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{
            "name": "datasource", "type": "datasource", "query": "prometheus",
            "current": {"text": "Prometheus", "value": "prometheus"}, "hide": 0,
        }]},
        "annotations": {"list": []},
        "panels": panels,
    }


if __name__ == "__main__":
    out = pathlib.Path(__file__).resolve().parent / "dashboards" / "ikit.json"
    out.write_text(json.dumps(build(), indent=2) + "\n")
    print(out)
