"""Serving metrics: names, labels, exposition, multiprocess merging, and the Grafana
dashboard and Prometheus alert rules that query them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from bi_platform.serving.metrics import METRIC_NAMES, ServingMetrics, query_label

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "bi_serving_dashboard.json"
ALERTS = REPO / "deploy" / "prometheus" / "bi_serving_alerts.yml"


def _samples(payload: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(payload.decode())
        for s in family.samples
    }


def _exercised() -> ServingMetrics:
    metrics = ServingMetrics()
    metrics.observe_request("dashboard_totals", 200, 0.004)
    metrics.observe_request("dashboard_totals", 503, 2.5)
    metrics.record_cache("dashboard_totals", hit=True)
    metrics.record_cache("dashboard_totals", hit=False)
    metrics.observe_pool_wait(0.002)
    metrics.set_data_version("run-1")
    with metrics.track_in_flight():
        pass
    return metrics


def test_requests_latency_cache_and_pool_are_exposed() -> None:
    metrics = _exercised()
    payload, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    samples = _samples(payload)
    q = ("query", "dashboard_totals")
    assert samples[("bi_serving_requests_total", (q, ("status", "200")))] == 1
    assert samples[("bi_serving_requests_total", (q, ("status", "503")))] == 1
    assert samples[("bi_serving_request_duration_seconds_count", (q,))] == 2
    assert samples[("bi_serving_request_duration_seconds_bucket", (("le", "0.005"), q))] == 1
    assert samples[("bi_serving_request_duration_seconds_bucket", (("le", "2.0"), q))] == 1
    assert samples[("bi_serving_request_duration_seconds_bucket", (("le", "5.0"), q))] == 2
    assert samples[("bi_serving_cache_hits_total", (q,))] == 1
    assert samples[("bi_serving_cache_misses_total", (q,))] == 1
    assert samples[("bi_serving_pool_wait_seconds_count", ())] == 1
    assert samples[("bi_serving_in_flight_requests", ())] == 0
    assert samples[("bi_serving_warehouse_data_version", (("data_version", "run-1"),))] == 1


def test_in_flight_and_data_version_follow_the_state() -> None:
    metrics = ServingMetrics()
    with metrics.track_in_flight(), metrics.track_in_flight():
        assert _samples(metrics.render()[0])[("bi_serving_in_flight_requests", ())] == 2
    assert _samples(metrics.render()[0])[("bi_serving_in_flight_requests", ())] == 0
    metrics.set_data_version("run-1")
    metrics.set_data_version("run-2")
    versions = {
        dict(labels)["data_version"]: value
        for (name, labels), value in _samples(metrics.render()[0]).items()
        if name == "bi_serving_warehouse_data_version"
    }
    assert versions == {"run-2": 1}


def test_client_supplied_query_names_never_become_labels() -> None:
    metrics = ServingMetrics()
    metrics.observe_request("x' OR 1=1; --", 404, 0.001)
    metrics.observe_request(None, 200, 0.001)
    metrics.record_cache("../../etc/passwd", hit=False)
    text = metrics.render()[0].decode()
    assert "OR 1=1" not in text and "passwd" not in text
    assert 'query="unknown"' in text and 'query="none"' in text
    assert query_label("sales_by_une") == "sales_by_une"


def test_each_instance_has_its_own_registry() -> None:
    first, second = ServingMetrics(), ServingMetrics(CollectorRegistry())
    first.observe_request("sales_by_une", 200, 0.01)
    assert b"bi_serving_requests_total{" in first.render()[0]
    assert b"bi_serving_requests_total{" not in second.render()[0]


CHILD = """
import sys
from bi_platform.serving.metrics import ServingMetrics
m = ServingMetrics()
m.observe_request("sales_by_une", 200, 0.01)
m.record_cache("sales_by_une", hit=True)
m.set_data_version("run-7")
if sys.argv[1] == "render":
    sys.stdout.write(m.render()[0].decode())
"""


def test_multiprocess_mode_merges_every_worker(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", CHILD, "record"], env=env, check=True, timeout=60)
    rendered = subprocess.run(
        [sys.executable, "-c", CHILD, "render"],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    samples = _samples(rendered.stdout.encode())
    q = ("query", "sales_by_une")
    assert samples[("bi_serving_requests_total", (q, ("status", "200")))] == 2
    assert samples[("bi_serving_cache_hits_total", (q,))] == 2
    assert samples[("bi_serving_request_duration_seconds_count", (q,))] == 2


# -- dashboard and alerts ----------------------------------------------------------------
_METRIC_RE = re.compile(r"\bbi_serving_[a-z0-9_]+")


def _exposed_names() -> set[str]:
    payload = _exercised().render()[0]
    return {name for name, _ in _samples(payload)}


def _dashboard_exprs() -> dict[str, list[str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return {
        panel["title"]: [target["expr"] for target in panel["targets"]]
        for panel in dashboard["panels"]
    }


def test_dashboard_panels_query_existing_metrics() -> None:
    panels = _dashboard_exprs()
    titles = {title.lower() for title in panels}
    for wanted in ("p95 latency", "requests per second", "cache hit rate", "error rate (5xx)"):
        assert wanted in titles
    exposed = _exposed_names()
    used = {name for exprs in panels.values() for e in exprs for name in _METRIC_RE.findall(e)}
    assert used and used <= exposed, used - exposed
    families = {METRIC_NAMES[k] for k in ("requests", "latency", "cache_hits", "cache_misses")}
    assert {re.sub(r"_(total|bucket)$", "", name) for name in used} >= families
    p95 = " ".join(panels["p95 latency"])
    assert "histogram_quantile(0.95" in p95 and "request_duration_seconds_bucket" in p95


def test_alert_rules_cover_latency_and_errors_on_existing_metrics() -> None:
    document = yaml.safe_load(ALERTS.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    records = {rule["record"]: rule["expr"] for rule in rules if "record" in rule}
    alerts = {rule["alert"]: rule for rule in rules if "alert" in rule}
    exposed = _exposed_names()
    for rule in rules:
        assert set(_METRIC_RE.findall(rule["expr"])) <= exposed, rule["expr"]

    def expand(expr: str) -> str:
        for name, body in records.items():
            expr = expr.replace(name, f"({body})")
        return " ".join(expr.split())

    latency = expand(alerts["BiServingHighP95Latency"]["expr"])
    assert "histogram_quantile(0.95" in latency and latency.endswith("> 2")
    assert "bi_serving_request_duration_seconds_bucket" in latency
    errors = expand(alerts["BiServingHighErrorRate"]["expr"])
    assert 'status=~"5.."' in errors and errors.endswith("> 0.05")
    for alert in alerts.values():
        assert alert["for"] and alert["labels"]["severity"] and alert["annotations"]["summary"]


def test_status_classes_are_exported_from_zero_and_counted() -> None:
    metrics = ServingMetrics()
    samples = _samples(metrics.render()[0])
    for cls in ("2xx", "3xx", "4xx", "5xx"):
        assert samples[("bi_serving_responses_total", (("status", cls),))] == 0
    assert samples[("bi_serving_redis_breaker_open", ())] == 0
    metrics.observe_request("sales_by_une", 503, 0.01)
    metrics.record_response("healthz", 200, 0.001)
    metrics.set_redis_breaker("open")
    samples = _samples(metrics.render()[0])
    assert samples[("bi_serving_responses_total", (("status", "5xx"),))] == 1
    assert samples[("bi_serving_responses_total", (("status", "2xx"),))] == 1
    assert samples[("bi_serving_redis_breaker_open", ())] == 1


def test_the_error_ratio_has_data_before_the_first_error() -> None:
    """The alert's error ratio reads a series that exists before any 5xx."""
    document = yaml.safe_load(ALERTS.read_text())
    rules = {r.get("record"): r["expr"] for g in document["groups"] for r in g["rules"]}
    ratio = rules["bi_serving:error_ratio_5m"]
    assert "bi_serving_responses_total" in ratio
    exposed = _samples(ServingMetrics().render()[0])
    assert ("bi_serving_responses_total", (("status", "5xx"),)) in exposed
