"""The Kubernetes overlays: built with kustomize, every object validated, the numbers agree."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
KUSTOMIZE = REPO / ".sluice" / "bin" / "kustomize"
OVERLAYS = ["dev", "prod"]
K8S_VERSION = "1.33.0"

# The fields Sluice sets on custom resources, checked against a subset of each CRD's schema
# (the operators' full CRDs are not available offline).
_STRING = {"type": "string"}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ScaledObject": {
        "type": "object",
        "required": ["spec"],
        "properties": {"spec": {
            "type": "object", "required": ["scaleTargetRef", "triggers", "maxReplicaCount"],
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"]},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["type", "metadata"],
                    "properties": {"type": {"const": "kafka"}, "metadata": {
                        "type": "object", "required": ["bootstrapServers", "consumerGroup", "topic", "lagThreshold"],
                        "additionalProperties": _STRING}},
                }},
            },
        }},
    },
    "KafkaTopic": {
        "type": "object",
        "required": ["spec", "metadata"],
        "properties": {
            "metadata": {"type": "object", "required": ["labels"]},
            "spec": {"type": "object", "required": ["partitions", "replicas"],
                     "properties": {"partitions": {"type": "integer", "minimum": 1},
                                    "replicas": {"type": "integer", "minimum": 1}}},
        },
    },
    "Kafka": {"type": "object", "required": ["spec"],
              "properties": {"spec": {"type": "object", "required": ["kafka"]}}},
    "KafkaNodePool": {"type": "object", "required": ["spec"],
                      "properties": {"spec": {"type": "object", "required": ["replicas", "roles", "storage"]}}},
    "ClickHouseInstallation": {
        "type": "object", "required": ["spec"],
        "properties": {"spec": {"type": "object", "required": ["configuration"],
                                "properties": {"configuration": {"type": "object", "required": ["clusters"]}}}},
    },
}  # fmt: skip


@cache
def build(overlay: str) -> list[dict[str, Any]]:
    if not KUSTOMIZE.exists():
        pytest.fail(f"{KUSTOMIZE} is missing: `make test` installs it (needs Go)")
    out = subprocess.run(
        [str(KUSTOMIZE), "build", str(REPO / "deploy" / "k8s" / "overlays" / overlay)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def objects(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [o for o in build(overlay) if o["kind"] == kind]


def one(overlay: str, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects(overlay, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates(overlay: str) -> None:
    for obj in build(overlay):
        if obj["kind"] in CRD_SCHEMAS:
            jsonschema.validate(obj, CRD_SCHEMAS[obj["kind"]])
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_partitions_keda_and_hpa_agree(overlay: str) -> None:
    config = one(overlay, "ConfigMap", "sluice-config")["data"]
    partitions = int(config["SLUICE_RAW_PARTITIONS"])
    scaled = one(overlay, "ScaledObject")["spec"]
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= partitions
    trigger = scaled["triggers"][0]["metadata"]
    assert trigger["bootstrapServers"] == config["SLUICE_KAFKA_BOOTSTRAP"]
    assert trigger["consumerGroup"] == config["SLUICE_WORKER_GROUP"]
    assert trigger["topic"] == config["SLUICE_TOPIC_PREFIX"] + "raw"
    for topic in objects(overlay, "KafkaTopic"):
        if topic["metadata"]["name"] in (
            f"{config['SLUICE_TOPIC_PREFIX']}raw",
            f"{config['SLUICE_TOPIC_PREFIX']}keyed",
            f"{config['SLUICE_TOPIC_PREFIX']}state.{config['SLUICE_WORKER_GROUP']}",
        ):
            assert topic["spec"]["partitions"] == partitions
    hpa = one(overlay, "HorizontalPodAutoscaler")["spec"]
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    pdb = one(overlay, "PodDisruptionBudget", "sluice-gateway")["spec"]
    assert pdb["minAvailable"] < hpa["minReplicas"] or (hpa["minReplicas"] == 1 and pdb["minAvailable"] == 0)


def test_prod_declares_every_topic_sluice_uses() -> None:
    from sluice.settings import Settings
    from sluice.topics import topic_specs

    config = one("prod", "ConfigMap", "sluice-config")["data"]
    settings = Settings.from_env(config)
    names = {t["metadata"]["name"] for t in objects("prod", "KafkaTopic")}
    assert names == {spec.name for spec in topic_specs(settings)}
    assert (
        config["SLUICE_CLICKHOUSE_CLUSTER"]
        == one("prod", "ClickHouseInstallation")["spec"]["configuration"]["clusters"][0]["name"]
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_probed_limited_and_drain_before_they_are_killed(overlay: str) -> None:
    for kind in ("Deployment", "StatefulSet"):
        for workload in objects(overlay, kind):
            pod = workload["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            [container] = pod["containers"]
            assert container["readinessProbe"]["httpGet"]["path"] in ("/readyz", "/healthz")
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            assert {"cpu", "memory"} <= set(container["resources"]["limits"])
            pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
            drain = 10  # aiohttp's shutdown_timeout and the worker's session timeout, seconds
            assert pod["terminationGracePeriodSeconds"] > pre_stop + drain
