"""The gateway's Prometheus metrics, in a registry of their own (one per app, so tests can read it)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sluice.metrics import base_name

if TYPE_CHECKING:
    from services.gateway.budget import ByteBudget
    from sluice.registry_topic import RegistryFollower


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
        self.state = StateCollector()
        self.registry.register(self.state)

    def accepted(self, family: str, count: int) -> None:
        if count:
            self.events.labels(family, "accepted", "").inc(count)

    def rejected(self, family: str, reason: str, count: int = 1) -> None:
        if count:
            self.events.labels(family, "rejected", reason).inc(count)

    def mismatched(self, family: str, counts: Mapping[str, int]) -> None:
        for name, count in counts.items():
            self.tenant_mismatch.labels(family, name).inc(count)


class StateCollector(Collector):
    """Gauges and counters read at scrape time from the objects that keep them: the in-flight
    byte budget and the registry follower (records skipped, lag, health)."""

    def __init__(self) -> None:
        self.budget: ByteBudget | None = None
        self.follower: RegistryFollower | None = None

    def collect(self) -> Iterator[Metric]:
        budget, follower = self.budget, self.follower
        yield GaugeMetricFamily(
            base_name("sluice_gateway_inflight_bytes"), "Request bytes held now", value=budget.used if budget else 0
        )
        yield GaugeMetricFamily(
            base_name("sluice_gateway_inflight_requests"),
            "Requests being read or answered now (an idle upload holds no bytes, but counts here)",
            value=budget.requests if budget else 0,
        )  # fmt: skip
        yield CounterMetricFamily(
            base_name("sluice_gateway_inflight_refusals_total"),
            "Requests refused (503) over the in-flight byte budget", value=budget.refusals if budget else 0,
        )  # fmt: skip
        yield CounterMetricFamily(
            base_name("sluice_registry_records_skipped_total"),
            "Registry records that did not decode and were skipped", value=follower.skipped if follower else 0,
        )  # fmt: skip
        yield GaugeMetricFamily(
            base_name("sluice_registry_lag"), "Registry records not yet read", value=follower.lag if follower else 0
        )
        yield CounterMetricFamily(
            base_name("sluice_registry_plaintext_secrets_total"),
            "Org records read with a plaintext identity secret although a registry key is set (rotate it)",
            value=follower.registry.plaintext_secrets if follower else 0,
        )  # fmt: skip
        yield GaugeMetricFamily(
            base_name("sluice_registry_healthy"), "1 while the registry follower keeps up (1 without a follower)",
            value=int(follower.healthy()) if follower else 1,
        )  # fmt: skip
