"""Sluice's parts as real processes, for end-to-end tests."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer

from commands.devrun import terminate
from commands.localkafka import LocalKafka, ensure_jars, free_port
from sluice.settings import Settings


def sluice(settings: Settings, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run one ``sluice`` CLI command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "commands.cli", *args],
        env={**os.environ, **settings.to_env()}, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def wait_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def spawn(settings: Settings, command: str, log: Path) -> subprocess.Popen[bytes]:
    """``sluice COMMAND`` in the background, in its own process group, output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "commands.cli", command], env={**os.environ, **settings.to_env()},
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def query_rows(settings: Settings, sql: str) -> list[dict[str, Any]]:
    """``sluice query --format json SQL`` as rows; [] while the warehouse cannot answer."""
    done = sluice(settings, "query", "--format", "json", sql)
    return [json.loads(line) for line in done.stdout.splitlines() if line] if done.returncode == 0 else []


@contextmanager
def running(settings: Settings, command: str, ready_url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``sluice COMMAND`` in the background until the block ends (then SIGTERM, then SIGKILL)."""
    process = spawn(settings, command, log)
    try:
        wait_http(ready_url, 60, process)
        yield process
    except BaseException:
        sys.stderr.write(log.read_text(errors="replace")[-4000:])
        raise
    finally:
        terminate(process)


async def raw_records(settings: Settings, topic: str | None = None) -> list[bytes]:
    """Every record in the raw topic (or ``topic``), read from the beginning to the end offsets of now."""
    consumer = AIOKafkaConsumer(
        topic or settings.raw_topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = consumer.assignment() or set()
        while not partitions:  # the subscription's assignment arrives with the first fetch
            await consumer.getmany(timeout_ms=200)
            partitions = consumer.assignment()
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(list(partitions))
        values: list[bytes] = []
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            batches = await consumer.getmany(timeout_ms=1000)
            values += [m.value for messages in batches.values() for m in messages if m.value is not None]
        return values
    finally:
        await consumer.stop()


async def registry_values(settings: Settings) -> list[bytes]:
    """Every record value in the registry topic, as stored."""
    return await raw_records(settings, settings.registry_topic)


async def raw_message_ids(settings: Settings) -> list[str]:
    """The message id of every event in the raw topic (``messageId``, or Traffical's ``id``), in order."""
    from sluice.envelope import raw_batch_decoder

    ids = []
    for value in await raw_records(settings):
        for event in raw_batch_decoder.decode(value).events:
            fields = msgspec.json.decode(event)
            ids.append(str(fields.get("messageId") or fields.get("id")))
    return ids


@contextmanager
def local_broker(
    data_dir: Path, scram_users: dict[str, str] | None = None, tls: tuple[Path, Path] | None = None
) -> Iterator[LocalKafka]:
    """A broker of a test's own (one it stops, restarts, or secures), on free ports."""
    broker = LocalKafka(data_dir, ensure_jars(), port=free_port(), scram_users=scram_users, tls=tls)
    broker.start(heap="256m")
    try:
        broker.wait_ready()
        yield broker
    finally:
        broker.stop()


def gateway_url(settings: Settings) -> str:
    return f"http://{settings.gateway_host}:{settings.gateway_port}"


def warehouse_settings(home: Path, port: int | None = None) -> tuple[Settings, str]:
    """Settings for ``sluice warehouse`` on ``port`` (a free one by default) with a fresh
    password, and the URL its clients use, credential included."""
    password = secrets.token_urlsafe(16)
    settings = Settings.from_env({}, home=str(home), warehouse_port=port or free_port(), warehouse_password=password)
    return settings, f"http://{settings.warehouse_user}:{password}@127.0.0.1:{settings.warehouse_port}"


@contextmanager
def warehouse_server(home: Path) -> Iterator[str]:
    """``sluice warehouse`` on a free port with its files under ``home``; yields its URL, which
    carries the credential."""
    settings, url = warehouse_settings(home)
    with running(settings, "warehouse", f"http://127.0.0.1:{settings.warehouse_port}/ping", home / "warehouse.log"):
        yield url
