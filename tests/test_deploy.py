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
    "KafkaUser": {
        "type": "object", "required": ["spec", "metadata"],
        "properties": {
            "metadata": {"type": "object", "required": ["labels"]},
            "spec": {"type": "object", "required": ["authentication", "authorization"], "properties": {
                "authentication": {"type": "object", "properties": {"type": {"enum": ["scram-sha-512", "tls"]}}},
                "authorization": {"type": "object", "required": ["type", "acls"], "properties": {"acls": {
                    "type": "array", "minItems": 1, "items": {
                        "type": "object", "required": ["resource", "operations"],
                        "properties": {
                            "resource": {"type": "object", "required": ["type"], "properties": {
                                "type": {"enum": ["topic", "group", "cluster", "transactionalId"]},
                                "patternType": {"enum": ["literal", "prefix"]}}},
                            "operations": {"type": "array", "minItems": 1, "items": {"enum": [
                                "Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction",
                                "AlterConfigs", "DescribeConfigs", "IdempotentWrite", "All"]}},
                        },
                    }}}},
            }},
        },
    },
    "TriggerAuthentication": {
        "type": "object", "required": ["spec"],
        "properties": {"spec": {"type": "object", "additionalProperties": False, "properties": {
            ref: {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["parameter", "name", "key"], "additionalProperties": False,
                "properties": {"parameter": _STRING, "name": _STRING, "key": _STRING}}}
            for ref in ("secretTargetRef", "configMapTargetRef")
        }}},
    },
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
    processes = int(config["SLUICE_WORKER_PROCESSES"])
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    assert scaled["maxReplicaCount"] * processes <= partitions  # a process per partition at most
    [worker_pod] = [one(overlay, "StatefulSet", "sluice-worker")["spec"]["template"]["spec"]]
    ports = [p["containerPort"] for p in worker_pod["containers"][0]["ports"]]
    assert ports[:processes] == [int(config["SLUICE_WORKER_PORT"]) + n for n in range(processes)]
    trigger = scaled["triggers"][0]["metadata"]
    [worker] = one(overlay, "StatefulSet", "sluice-worker")["spec"]["template"]["spec"]["containers"]
    worker_env = {e["name"]: e.get("value") for e in worker.get("env", [])}
    worker_bootstrap = worker_env.get("SLUICE_KAFKA_BOOTSTRAP", config["SLUICE_KAFKA_BOOTSTRAP"])
    # the same brokers (in prod KEDA reads lag on its own listener, the workers use TLS + SCRAM)
    assert trigger["bootstrapServers"].rsplit(":", 1)[0] == worker_bootstrap.rsplit(":", 1)[0]
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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_credential_ships_and_pods_get_only_the_ones_they_use(overlay: str) -> None:
    assert objects(overlay, "Secret") == []  # the operator creates them (deploy/k8s/base/README.md)
    assert "change-me" not in yaml.safe_dump_all(build(overlay))
    [gateway] = one(overlay, "Deployment", "sluice-gateway")["spec"]["template"]["spec"]["containers"]
    assert [e for e in gateway["envFrom"] if "secretRef" in e] == []
    secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in gateway.get("env", []) if "valueFrom" in e}
    assert secrets <= {"sluice-gateway", "sluice-registry-key"}  # its Kafka user, the registry key
    [worker] = one(overlay, "StatefulSet", "sluice-worker")["spec"]["template"]["spec"]["containers"]
    [secret] = [e["secretRef"] for e in worker["envFrom"] if "secretRef" in e]
    assert secret == {"name": "sluice-warehouse", "optional": overlay == "dev"}  # dev: embedded chDB


def test_clickhouse_users_come_from_secrets_and_the_cluster_network_and_analysts_only_read() -> None:
    configuration = one("prod", "ClickHouseInstallation")["spec"]["configuration"]
    users, profiles = configuration["users"], configuration["profiles"]
    assert {name.split("/")[0] for name in users} == {"sluice", "analysts"}
    for name, value in users.items():
        assert not name.endswith(("/password", "/password_sha256_hex", "/password_double_sha1_hex")), name
        if name.endswith("/networks/ip"):
            assert value and not {"::/0", "0.0.0.0/0", "::", "0.0.0.0"} & set(value), name
    assert users["analysts/profile"] == "analysts" and profiles["analysts/readonly"] == 1
    assert users["analysts/grants/query"] == ["GRANT SELECT ON sluice.*"]
    policy = one("prod", "NetworkPolicy", "clickhouse")["spec"]
    selectors = [peer for rule in policy["ingress"] for peer in rule["from"]]
    assert {"podSelector": {}} not in selectors and all(peer for peer in selectors)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metrics_have_their_own_port_which_only_monitoring_reaches(overlay: str) -> None:
    config = one(overlay, "ConfigMap", "sluice-config")["data"]
    metrics, public = int(config["SLUICE_METRICS_PORT"]), int(config["SLUICE_GATEWAY_PORT"])
    assert metrics != public
    template = one(overlay, "Deployment", "sluice-gateway")["spec"]["template"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(metrics)
    assert {p["containerPort"] for p in template["spec"]["containers"][0]["ports"]} == {public, metrics}
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    for name, port in (("sluice-gateway", metrics), ("sluice-worker", int(config["SLUICE_WORKER_PORT"]))):
        rules = one(overlay, "NetworkPolicy", name)["spec"]["ingress"]
        reaching = [rule for rule in rules if port in {p["port"] for p in rule["ports"]}]
        assert reaching and all(rule.get("from") == [monitoring] for rule in reaching), name


def test_compose_ships_no_password_and_publishes_to_loopback_only() -> None:
    services = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())["services"]
    assert services["clickhouse"]["environment"]["CLICKHOUSE_PASSWORD"].startswith("${SLUICE_CLICKHOUSE_PASSWORD:?")
    assert "SLUICE_CLICKHOUSE_URL" not in services["gateway"]["environment"]
    assert all(port.startswith("127.0.0.1:") for service in services.values() for port in service.get("ports", []))


def test_prod_kafka_authenticates_and_each_component_has_least_privilege() -> None:
    kafka = one("prod", "Kafka")["spec"]["kafka"]
    assert kafka["authorization"]["type"] == "simple"
    for listener in kafka["listeners"]:
        assert listener["tls"] is True and listener["authentication"]["type"] == "scram-sha-512", listener
    assert "superUsers" not in kafka["authorization"]
    [worker] = one("prod", "StatefulSet", "sluice-worker")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in worker["env"]}
    assert env["SLUICE_KAFKA_USERNAME"]["value"] == "sluice-worker"
    assert env["SLUICE_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "sluice-worker"
    assert "SLUICE_KAFKA_BOOTSTRAP" not in env  # the TLS + SCRAM listener of the ConfigMap
    acls = {
        user["metadata"]["name"]: {
            (acl["resource"]["type"], acl["resource"].get("name"), operation)
            for acl in user["spec"]["authorization"]["acls"] for operation in acl["operations"]
        }
        for user in objects("prod", "KafkaUser")
    }  # fmt: skip
    assert acls["sluice-gateway"] == {
        ("topic", "sluice.raw", "Write"), ("topic", "sluice.raw", "Describe"),
        ("topic", "sluice.dlq", "Write"), ("topic", "sluice.dlq", "Describe"),
        ("topic", "sluice.registry", "Read"), ("topic", "sluice.registry", "Describe"),
    }  # fmt: skip
    writers = {
        name for name, rules in acls.items() if {("topic", "sluice.registry", o) for o in ("Write", "All")} & rules
    }
    assert writers == {"sluice-admin"}
    assert acls["sluice-keda"] == {("topic", "sluice.raw", "Describe"), ("group", "sluice-worker", "Describe")}
    config = one("prod", "ConfigMap", "sluice-config")["data"]
    assert (
        config["SLUICE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        and config["SLUICE_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    )
    assert config["SLUICE_KAFKA_BOOTSTRAP"].endswith(":9093")


def test_keda_reads_the_lag_over_tls_as_its_read_only_user() -> None:
    [trigger] = one("prod", "ScaledObject")["spec"]["triggers"]
    [listener] = one("prod", "Kafka")["spec"]["kafka"]["listeners"]
    assert trigger["metadata"]["bootstrapServers"].endswith(f":{listener['port']}")
    auth = one("prod", "TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]
    secrets = {ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["secretTargetRef"]}
    assert secrets == {
        "password": ("sluice-keda", "password"),  # Strimzi writes the KafkaUser's password there
        "ca": ("sluice-kafka-cluster-ca-cert", "ca.crt"),
    }
    plain = {ref["parameter"]: one("prod", "ConfigMap", ref["name"])["data"][ref["key"]]
             for ref in auth["configMapTargetRef"]}  # fmt: skip
    assert plain == {"username": "sluice-keda", "sasl": "scram_sha512", "tls": "enable"}
    one("prod", "KafkaUser", "sluice-keda")
