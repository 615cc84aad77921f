"""The dashboard and the alert rules name only metrics the code emits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from sluice.metrics import METRIC_NAMES

PACK = Path(__file__).resolve().parents[1] / "deploy" / "observability"
SUFFIXES = ("_bucket", "_count", "_sum", "_created")


def named(expr: str) -> set[str]:
    return set(re.findall(r"\b(sluice_[a-z0-9_]+)", expr))


def emitted(name: str) -> bool:
    return name in METRIC_NAMES or any(name.endswith(s) and name.removesuffix(s) in METRIC_NAMES for s in SUFFIXES)


def test_alert_rules_use_emitted_metrics() -> None:
    rules = yaml.safe_load((PACK / "prometheus-rules.yaml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    names = set().union(*(named(e) for e in exprs))
    assert names and all(emitted(n) for n in names), sorted(n for n in names if not emitted(n))
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {
        "SluiceWorkerLagGrowing",
        "SluiceFreshnessOverObjective",
        "SluiceDeadLettersHigh",
        "SluiceGateway5xx",
    } <= alerts


def test_dashboard_uses_emitted_metrics_and_covers_them() -> None:
    dashboard = json.loads((PACK / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    names = set().union(*(named(e) for e in exprs))
    assert all(emitted(n) for n in names), sorted(n for n in names if not emitted(n))
    base = {n for n in METRIC_NAMES}
    shown = {n for n in base if any(m == n or m.removesuffix(s) == n for m in names for s in ("", *SUFFIXES))}
    assert shown == base, sorted(base - shown)


def test_the_code_registers_every_declared_metric() -> None:
    from pipeline.metrics import WorkerMetrics
    from services.gateway.metrics import GatewayMetrics

    registered = {m.name for owner in (GatewayMetrics(), WorkerMetrics()) for m in owner.registry.collect()}
    declared = {n.removesuffix("_total") for n in METRIC_NAMES}
    assert registered == declared
