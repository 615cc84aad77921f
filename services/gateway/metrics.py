"""The gateway's Prometheus metrics, in a registry of their own (one per app, so tests can read it)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram

from sluice.metrics import base_name


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            base_name("sluice_gateway_requests_total"), "HTTP requests by route and status",
            ["route", "status"], registry=self.registry,
        )  # fmt: skip
        self.events = Counter(
            base_name("sluice_gateway_events_total"),
            "Events by family and outcome (accepted, or rejected with a reason)",
            ["family", "outcome", "reason"], registry=self.registry,
        )  # fmt: skip
        self.tenant_mismatch = Counter(
            base_name("sluice_gateway_tenant_mismatch_total"),
            "Accepted events whose body orgId, projectId or env differs from the key's (the key wins)",
            ["family", "field"], registry=self.registry,
        )  # fmt: skip
        self.produce_seconds = Histogram(
            "sluice_gateway_produce_seconds", "Time from produce to Kafka acknowledgement",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )  # fmt: skip
        self.body_bytes = Histogram(
            "sluice_gateway_body_bytes", "Request body sizes", ["family"], registry=self.registry,
            buckets=(256, 1024, 4096, 16384, 65536, 262144, 1048576),
        )  # fmt: skip

    def accepted(self, family: str, count: int) -> None:
        if count:
            self.events.labels(family, "accepted", "").inc(count)

    def rejected(self, family: str, reason: str, count: int = 1) -> None:
        if count:
            self.events.labels(family, "rejected", reason).inc(count)

    def mismatched(self, family: str, counts: Mapping[str, int]) -> None:
        for name, count in counts.items():
            self.tenant_mismatch.labels(family, name).inc(count)
