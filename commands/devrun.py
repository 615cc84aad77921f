"""``sluice run`` (``make run``): Kafka, the gateway and one worker on this machine.

Each part is its own process (as in production); this one supervises them. On the first start it
creates a dev org with one key of each kind and prints them (they are stored hashed: this is the
only time they are shown). The publishable key works with every family's browser SDK: it has the
``pk_`` prefix Xaiku's SDK insists on and the ``sdk:write`` scope Traffical's needs, and the
example bundle's project and env, which Traffical's SDK sends with its events. Beside the
keys it loads example configuration for the SDKs to fetch — the sdk-spec's example Traffical
bundle (project ``proj_test``, env ``production``) and a Xaiku experiment (``exp_hero``) — so a
page with either SDK assigns variants from the first start. Ctrl-C or
SIGTERM stops the gateway first (it drains), then the worker (it commits), then Kafka, and leaves
no process behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from importlib import resources
from pathlib import Path

from commands.localkafka import LocalKafka, ensure_jars
from pipeline.warehouse.readonly import token_path
from sluice.configs import (
    TrafficalBundle,
    XaikuExperiment,
    as_record,
    bundle_record,
    experiment_record,
    load_bundle,
    load_experiments,
)
from sluice.registry import key_record, new_key
from sluice.registry_topic import read_registry, write_records
from sluice.settings import Settings
from sluice.topics import ensure_topics

DEV_ORG = "dev"
DEV_PROJECT, DEV_ENV = "proj_test", "production"


async def bootstrap_dev_org(settings: Settings) -> list[tuple[str, str]]:
    """Create the dev org's keys unless it has some; returns (description, key) to print once."""
    await ensure_topics(settings)
    registry = await read_registry(settings.kafka_bootstrap, settings.registry_topic)
    if any(k.org_id == DEV_ORG for k in registry.keys.values()):
        return []
    # The keys' project and env are the example bundle's: the Traffical SDK sends its projectId
    # and env with every event, and a key for project "default" would count each as a mismatch.
    publishable, pub_record = new_key(
        DEV_ORG, "publishable", prefix="pk_", scopes=["sdk:write"], project_id=DEV_PROJECT, env=DEV_ENV
    )
    secret, sec_record = new_key(
        DEV_ORG, "secret", prefix="sk_", scopes=["sdk:write"], project_id=DEV_PROJECT, env=DEV_ENV
    )
    await write_records(
        settings.kafka_bootstrap, settings.registry_topic,
        [key_record(pub_record), key_record(sec_record), *example_config()],
    )  # fmt: skip
    return [("publishable (scope sdk:write)", publishable), ("secret (scope sdk:write)", secret)]


def example_config() -> list[tuple[bytes, bytes]]:
    """The dev org's example bundle and experiment, as ``config put``/``experiments put`` load them."""
    examples = resources.files("sluice.schemas")
    bundle = load_bundle(examples.joinpath("traffical/bundle_basic.json").read_bytes(), DEV_PROJECT, DEV_ENV)
    loaded = load_experiments(examples.joinpath("xaiku/experiments.example.json").read_bytes())
    records: list[TrafficalBundle | XaikuExperiment | None] = [
        bundle_record(DEV_ORG, DEV_PROJECT, DEV_ENV, bundle, None),
        *(experiment_record(DEV_ORG, name, variants, None) for name, variants in loaded.items()),
    ]
    return [as_record(r) for r in records if r is not None]


def _spawn(command: str, settings: Settings, log_dir: Path) -> subprocess.Popen[bytes]:
    log = open(log_dir / f"{command}.log", "ab")  # noqa: SIM115 - the child owns it
    process = subprocess.Popen(
        [sys.executable, "-m", "commands.cli", command],
        env={**os.environ, **settings.to_env()},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    return process


def _wait_http(url: str, timeout: float, alive: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def terminate(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM the process group; SIGKILL it if it has not exited within ``timeout``."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run_all(settings: Settings) -> int:
    started = time.monotonic()
    home = Path(settings.home)
    log_dir = home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    stopping: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))

    port = int(settings.kafka_bootstrap.rsplit(":", 1)[1])
    broker = LocalKafka(home / "kafka", ensure_jars(), port=port)
    children: list[subprocess.Popen[bytes]] = []
    try:
        print(f"starting Kafka on {broker.bootstrap} …", flush=True)
        broker.start()
        broker.wait_ready()
        asyncio.run(ensure_topics(settings))
        worker = _spawn("worker", settings, log_dir)
        gateway = _spawn("gateway", settings, log_dir)
        children = [gateway, worker]
        gateway_url = f"http://{settings.gateway_host}:{settings.gateway_port}"
        if not _wait_http(f"{gateway_url}/readyz", 60, gateway):
            print(f"gateway did not become ready; see {log_dir / 'gateway.log'}", file=sys.stderr)
            return 1
        if not _wait_http(f"{settings.worker_url}/healthz", 60, worker):
            print(f"worker did not become ready; see {log_dir / 'worker.log'}", file=sys.stderr)
            return 1
        # Keys are made only once everything is up, so a failed first start does not create
        # keys that were never shown.
        keys = asyncio.run(bootstrap_dev_org(settings))
        results = (f"  {settings.worker_url}/results?org={DEV_ORG}  (a browser asks for a password: the query "
                   f"token in {token_path(settings.home)}; any user name)")  # fmt: skip
        _banner(gateway_url, keys, time.monotonic() - started, log_dir, results)
        while not stopping and all(c.poll() is None for c in children):
            time.sleep(0.2)
        for child, name in ((gateway, "gateway"), (worker, "worker")):
            if child.poll() is not None and not stopping:
                print(f"{name} exited ({child.returncode}); see {log_dir / (name + '.log')}", file=sys.stderr)
        return 0 if stopping else 1
    finally:
        print("stopping …", flush=True)
        for child in children:
            terminate(child)
        broker.stop()
        print("stopped.", flush=True)


def _banner(gateway_url: str, keys: list[tuple[str, str]], took: float, log_dir: Path, results: str = "") -> None:
    print(f"\nSluice is up ({took:.1f}s). Gateway {gateway_url}; logs in {log_dir}/")
    if keys:
        print("\nDev org 'dev' created. Its keys (shown only now; they are stored hashed):")
        for kind, key in keys:
            print(f"  {kind:<26} {key}")
    else:
        print("\nDev org 'dev' exists; make a new key for browser SDKs with:\n"
              f"  .venv/bin/sluice keys create --org {DEV_ORG} --project {DEV_PROJECT} --env {DEV_ENV} "
              "--kind publishable --scope sdk:write")  # fmt: skip
    print(f"\nBrowser SDKs take the publishable key and this gateway as their base URL:\n"
          f"  Traffical js-client  baseUrl: '{gateway_url}',\n"
          f"                       orgId: '{DEV_ORG}', projectId: '{DEV_PROJECT}', env: '{DEV_ENV}'\n"
          f"  Xaiku browser        proxyApiUrl: '{gateway_url}/api/v1', experimentIds: ['exp_hero']\n"
          f"  Halo                 {gateway_url}/api/sdk    Solute  {gateway_url}/api/events")  # fmt: skip
    if results:
        print(f"\nExperiment results (also `sluice experiments results`):\n{results}")
    print("\nPress Ctrl-C to stop everything.\n", flush=True)
