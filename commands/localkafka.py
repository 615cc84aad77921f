"""A real Apache Kafka broker on this machine: single node, KRaft, combined broker + controller.

The broker's jars come from Maven Central through ``deploy/kafka/pom.xml`` into a git-ignored
cache; nothing is downloaded by hand. ``sluice kafka``, ``make run`` and the test suite's broker
fixture all go through :class:`LocalKafka`.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
LOG4J_CONFIG = REPO_ROOT / "deploy" / "kafka" / "log4j2.properties"


class KafkaStartError(RuntimeError):
    """The broker did not come up; the message names its log file."""


def kafka_version() -> str:
    """The Kafka release the pom pins (``<kafka.version>``)."""
    text = POM.read_text()
    start = text.index("<kafka.version>") + len("<kafka.version>")
    return text[start : text.index("</kafka.version>", start)]


def ensure_jars(cache: Path = REPO_ROOT / ".sluice") -> Path:
    """Fetch the pinned broker's jars into ``cache/kafka-libs-VERSION`` once; return the folder.

    The cache sits beside the pom (in the checkout), whatever ``SLUICE_HOME`` says, so every
    broker this checkout starts — dev, tests, bench — shares one download."""
    libs = cache.resolve() / f"kafka-libs-{kafka_version()}"
    done = libs / ".complete"
    if done.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaStartError("Maven (mvn) is needed to fetch Kafka's jars; install Maven 3")
    subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
         f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
        check=True,
    )  # fmt: skip
    done.touch()
    return libs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class LocalKafka:
    """One broker process with its data, config and log under ``data_dir``.

    ``start()`` formats the storage on first use (a fresh cluster id), then launches the JVM;
    ``stop()`` sends SIGTERM (Kafka's controlled shutdown) and kills it if it lingers.

    With ``scram_users`` (name → password; the first is the super user) clients must log in with
    SASL/SCRAM-SHA-512 and Kafka's StandardAuthorizer checks ACLs (:meth:`add_acls`), as a
    secured production cluster does — for tests of Sluice's Kafka settings and ACLs; with ``tls``
    too (PEM files: the broker's key and certificate chain, and the CA), over TLS (SASL_SSL).
    """

    def __init__(
        self, data_dir: Path, libs: Path, port: int = 9092, controller_port: int | None = None,
        proxied: tuple[int, int] | None = None, scram_users: dict[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:  # fmt: skip
        """``proxied=(inner, outer)`` adds a listener on ``inner`` that tells clients to connect to
        ``outer``: a TCP proxy there (tests) can then cut one client off the broker."""
        self.data_dir = data_dir.resolve()
        self.libs = libs
        self.port = port
        self.controller_port = controller_port or free_port()
        self.proxied = proxied
        self.scram_users = scram_users or {}
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "logs" / "server.log"

    def _write_config(self) -> Path:
        config = self.data_dir / "server.properties"
        lines = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir / "data"),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "num.partitions": "6",
        }
        if self.proxied:
            inner, outer = self.proxied
            lines["listeners"] += f",PROXIED://127.0.0.1:{inner}"
            lines["advertised.listeners"] += f",PROXIED://127.0.0.1:{outer}"
            lines["listener.security.protocol.map"] += ",PROXIED:PLAINTEXT"
        if self.scram_users:  # (not combined with a proxied listener)
            lines.update(self._sasl_config())
        config.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
        return config

    @property
    def protocol(self) -> str:
        return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"

    def _ssl_config(self) -> dict[str, str]:
        if not self.tls:
            return {}
        keystore, ca = self.tls
        return {
            "ssl.truststore.type": "PEM", "ssl.truststore.location": str(ca),
            "ssl.keystore.type": "PEM", "ssl.keystore.location": str(keystore),
        }  # fmt: skip

    def _sasl_config(self) -> dict[str, str]:
        admin, password = next(iter(self.scram_users.items()))
        protocol = self.protocol
        return {
            "listeners": f"{protocol}://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"{protocol}://127.0.0.1:{self.port}",
            "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{protocol}:{protocol}",
            "inter.broker.listener.name": protocol,
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            f"listener.name.{protocol.lower()}.scram-sha-512.sasl.jaas.config": self._jaas(admin, password),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            # ANONYMOUS: the controller listener (loopback, broker and controller in one process)
            "super.users": f"User:{admin};User:ANONYMOUS",
            **self._ssl_config(),
        }

    @staticmethod
    def _jaas(user: str, password: str) -> str:
        return (
            f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{user}" password="{password}";'
        )

    def add_acls(self, *args: str) -> None:
        """``kafka-acls --add ARGS`` as the super user, e.g. ``--allow-principal User:x --operation
        Write --topic t``."""
        admin, password = next(iter(self.scram_users.items()))
        client = self.data_dir / "admin.properties"
        client_config = {
            "security.protocol": self.protocol, "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.jaas.config": self._jaas(admin, password),
        } | {k: v for k, v in self._ssl_config().items() if k.startswith("ssl.truststore")}  # fmt: skip
        client.write_text("".join(f"{k}={v}\n" for k, v in client_config.items()))
        subprocess.run(
            self._java("org.apache.kafka.tools.AclCommand", "--bootstrap-server", self.bootstrap,
                       "--command-config", str(client), "--add", *args),
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def _java(self, main: str, *args: str, heap: str = "256m") -> list[str]:
        java = shutil.which("java") or "java"
        return [
            java, f"-Xmx{heap}", f"-Xms{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.data_dir / 'logs'}",
            "-cp", f"{self.libs}/*", main, *args,
        ]  # fmt: skip

    def format(self) -> None:
        """Format KRaft storage unless it already holds a cluster (then the data is kept)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if (self.data_dir / "data" / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        scram = [f"--add-scram=SCRAM-SHA-512=[name={u},password={p}]" for u, p in self.scram_users.items()]
        subprocess.run(
            # "=" form: a cluster id may start with "-", which would read as an option
            self._java(
                "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "--config", str(config), *scram
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def start(self, heap: str = "512m") -> None:
        self.format()
        (self.data_dir / "logs").mkdir(exist_ok=True)
        out = open(self.data_dir / "logs" / "stdout.log", "ab")  # noqa: SIM115 - owned by child
        self.process = subprocess.Popen(
            self._java("kafka.Kafka", str(self.data_dir / "server.properties"), heap=heap),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the broker accepts connections and says it started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise KafkaStartError(f"Kafka exited with {self.process.returncode}; see {self.log_file}")
            if _port_open(self.port) and self._says_started():
                return
            time.sleep(0.1)
        raise KafkaStartError(f"Kafka not ready after {timeout:.0f}s; see {self.log_file}")

    def _says_started(self) -> bool:
        try:
            return "Kafka Server started" in self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return False

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def kill(self) -> None:
        """Stop the broker abruptly (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
