"""One typed settings object, read from ``SLUICE_*`` environment variables.

Every process (gateway, worker, CLI, tests) builds its settings with :func:`Settings.from_env`
and passes the object down; nothing reads the environment anywhere else, but for one switch
read before any settings exist: ``SLUICE_NATIVE=0`` (``pipeline/native.py``) runs the worker's
per-event modules from their source instead of their compiled form.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Runtime configuration. Field ``foo_bar`` is read from ``SLUICE_FOO_BAR``."""

    home: str = ".sluice"
    """Local state: Kafka jars and data, the embedded warehouse, logs."""
    kafka_bootstrap: str = "127.0.0.1:9092"
    """Kafka bootstrap servers, comma-separated host:port."""
    kafka_security_protocol: str = "PLAINTEXT"
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (production: SASL_SSL)."""
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_username: str = ""
    kafka_password: str = ""
    """This component's Kafka user (one per component, each with only the ACLs it needs)."""
    kafka_ca_file: str = ""
    """CA certificate (PEM) that signed the brokers' TLS certificates; empty: the system's."""
    kafka_compression: str = ""
    """Compression of the gateway's records: lz4, zstd, gzip, or empty for none. Worth it when the
    network to Kafka is the limit; on a small machine it costs the gateway CPU (measured: slower)."""
    topic_prefix: str = "sluice."
    """Prefix of every topic Sluice owns: ``{prefix}raw``, ``{prefix}keyed``, ``{prefix}state.{group}``,
    ``{prefix}registry``, ``{prefix}dlq``."""
    raw_partitions: int = 6
    """Partitions of the raw and keyed topics when Sluice creates them; the ceiling on worker
    processes. The gateway puts each event in its unit's partition."""
    clickhouse_url: str = ""
    """``http://user:pass@host:8123/db`` for a ClickHouse server; empty means embedded chDB."""
    clickhouse_cluster: str = ""
    """A ClickHouse cluster name: tables become replicated, behind Distributed tables."""
    clickhouse_database: str = "sluice"
    """Database of the embedded warehouse (a server URL names its own)."""
    warehouse_host: str = "127.0.0.1"
    warehouse_port: int = 8123
    """Where ``sluice warehouse`` serves the embedded engine over ClickHouse's HTTP interface."""
    warehouse_user: str = "sluice"
    warehouse_password: str = ""
    """The credential ``sluice warehouse`` requires (it refuses to start without a password);
    clients put it in ``SLUICE_CLICKHOUSE_URL`` as ``http://user:password@host:port/db``."""
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    gateway_processes: int = 1
    """Gateway processes sharing the port (SO_REUSEPORT) in one ``sluice gateway``; the rate limit
    is divided among them. On Kubernetes prefer one per pod and more replicas."""
    worker_processes: int = 1
    """Worker processes in one ``sluice worker`` (each a member of the group, port
    ``worker_port + n``); more than one needs ``clickhouse_url``."""
    produce_timeout: float = 5.0
    """Seconds the gateway waits for Kafka's acknowledgement before answering 503."""
    max_body_bytes: int = 1_048_576
    """Largest request body the gateway reads; larger ones get 413 before they are read."""
    client_timeout: float = 30.0
    """Seconds a client may take to send a request's headers, and again its body (slow-loris):
    a body still unread then gets 408; a connection whose headers never end is closed."""
    max_inflight_bytes: int = 64 * 1_048_576
    """Request bytes one gateway process holds at once, all requests together; a request that
    would go over gets 503 with Retry-After. Bodies over ``max_body_bytes // 8`` may use only half
    of it, so that many slow large uploads cannot crowd out ordinary SDK batches."""
    max_user_token_seconds: float = 7 * 86400.0
    """Longest lifetime a ``user_token`` may claim: one whose ``exp`` is further out is refused."""
    metrics_port: int = 0
    """Where the gateway serves ``/metrics`` and ``/openapi.json`` apart from SDK traffic; 0 keeps
    them on the gateway's own port (local runs)."""
    rate_limit: float = 1000.0
    """Requests per second per API key, per gateway replica; 0 turns limiting off."""
    rate_burst: float = 2000.0
    """Requests a key may send at once before the rate applies."""
    registry_key: str = ""
    """Master key(s) sealing the orgs' identity secrets in the registry topic: base64 of 32 random
    bytes (``sluice orgs new-registry-key`` prints one), comma-separated for rotation (the first
    seals, any opens). Empty: secrets are stored in plaintext (local runs)."""
    worker_host: str = "127.0.0.1"
    worker_port: int = 6066
    """The worker's HTTP port: health, metrics and (embedded warehouse) queries."""
    worker_url: str = "http://127.0.0.1:6066"
    """Where ``sluice query`` finds the worker that owns the embedded warehouse."""
    query_token: str = ""
    """The worker's ``POST /query`` token (``Authorization: Bearer``); empty: the worker makes
    one in ``{home}/query-token`` (0600) and ``sluice query`` reads it from there."""
    query_time_limit: float = 10.0
    """Seconds an analyst's statement may run on the embedded warehouse (``max_execution_time``,
    which the statement cannot lift): the worker's inserts wait behind at most one such query."""
    worker_group: str = "sluice-worker"
    """Kafka consumer group of the workers; also the prefix of their transactional ids."""
    dedupe_window_days: float = 7.0
    """How long a message id is remembered: a copy arriving later counts as new."""
    value_property: str = "order_total"
    """The property summed as a track's value when the event has no numeric ``value``."""
    sink_batch_rows: int = 10_000
    """Records one worker step takes at most."""
    sink_batch_seconds: float = 0.5
    """Under a live load, one worker step per this many seconds (a backlog is taken at once)."""
    log_level: str = "info"
    """debug, info, warning or error; logs are JSON lines on stderr."""

    @property
    def raw_topic(self) -> str:
        return f"{self.topic_prefix}raw"

    @property
    def registry_topic(self) -> str:
        return f"{self.topic_prefix}registry"

    @property
    def keyed_topic(self) -> str:
        """Items a worker forwards to the partition that owns their state (users, companies),
        keyed ``org␀unit:…`` (internal to the worker)."""
        return f"{self.topic_prefix}keyed"

    @property
    def state_topic(self) -> str:
        """The keyed stage's state changelog (compacted, one per worker group; internal)."""
        return f"{self.topic_prefix}state.{self.worker_group}"

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic_prefix}dlq"

    @property
    def warehouse_path(self) -> Path:
        return Path(self.home) / "warehouse"

    @property
    def worker_data_dir(self) -> Path:
        """The worker's local state (RocksDB), rebuilt from the state changelog when lost."""
        return Path(self.home) / "worker" / self.worker_group

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``SLUICE_*`` variables; ``overrides`` win over the environment."""
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        for name in cls.__struct_fields__:
            value = env.get(f"SLUICE_{name.upper()}")
            if value is not None:
                raw[name] = value
        raw.update(overrides)
        return msgspec.convert(raw, cls, strict=False)

    def to_env(self) -> dict[str, str]:
        """The ``SLUICE_*`` variables that recreate these settings in a child process."""
        return {f"SLUICE_{k.upper()}": str(v) for k, v in msgspec.structs.asdict(self).items()}
