"""Every Prometheus metric Sluice emits, named once.

``MetricName`` is the list the dashboards and alert rules are checked against; a metric made
under any other name is a type error (mypy) and a test failure.
"""

from __future__ import annotations

from typing import Literal, get_args

MetricName = Literal[
    # gateway
    "sluice_gateway_requests_total",
    "sluice_gateway_events_total",
    "sluice_gateway_produce_seconds",
    "sluice_gateway_body_bytes",
    "sluice_gateway_tenant_mismatch_total",
    "sluice_gateway_inflight_bytes",
    "sluice_gateway_inflight_refusals_total",
    "sluice_gateway_inflight_requests",
    "sluice_registry_records_skipped_total",
    "sluice_registry_lag",
    "sluice_registry_healthy",
    "sluice_registry_plaintext_secrets_total",
    # worker
    "sluice_worker_events_total",
    "sluice_worker_sink_rows",
    "sluice_worker_sink_seconds",
    "sluice_worker_freshness_seconds",
    "sluice_worker_consumer_lag",
    "sluice_worker_dedupe_pruned_total",
    "sluice_worker_dead_letters_total",
    "sluice_worker_state_capped_total",
    "sluice_worker_stage_restarts_total",
    "sluice_worker_fenced_total",
    "sluice_worker_stage_progress_timestamp_seconds",
]

METRIC_NAMES: frozenset[str] = frozenset(get_args(MetricName))


def base_name(name: MetricName) -> str:
    """The name prometheus-client wants (it appends ``_total`` to counters itself)."""
    return name.removesuffix("_total")
