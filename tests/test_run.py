"""``sluice kafka`` and ``sluice run`` (``make run``) as a user runs them, Ctrl-C included."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from commands.localkafka import free_port
from sluice.settings import Settings
from tests.builders import solute_body
from tests.processes import sluice

pytestmark = pytest.mark.kafka


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def start(settings: Settings, command: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "commands.cli", command],
        env={**os.environ, **settings.to_env()}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip


def read_until(process: subprocess.Popen[str], marker: str, timeout: float = 90) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"never printed {marker!r}:\n{''.join(lines)}")


def test_sluice_kafka_serves_and_stops_cleanly_on_sigterm(settings: Settings) -> None:
    port = free_port()
    mine = Settings.from_env(settings.to_env(), kafka_bootstrap=f"127.0.0.1:{port}")
    process = start(mine, "kafka")
    try:
        read_until(process, "kafka ready", timeout=60)
        assert listening(port)
        assert (Path(mine.home) / "kafka" / "logs" / "server.log").exists()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(30) == 0
        assert process.stdout is not None
        process.stdout.close()
    assert not listening(port)


def test_sluice_run_starts_everything_and_ctrl_c_stops_everything(settings: Settings) -> None:
    kafka_port = free_port()
    mine = Settings.from_env(settings.to_env(), kafka_bootstrap=f"127.0.0.1:{kafka_port}")
    process = start(mine, "run")
    try:
        banner = "".join(read_until(process, "Press Ctrl-C"))
        publishable = next(w for line in banner.splitlines() if "publishable" in line for w in line.split()
                           if w.startswith("pk_"))  # fmt: skip
        request = urllib.request.Request(
            f"http://127.0.0.1:{mine.gateway_port}/api/events", data=solute_body(),
            headers={"X-Api-Key": publishable, "Content-Type": "application/json"},
        )  # fmt: skip
        deadline = time.monotonic() + 2
        while True:  # the gateway learns the dev keys within 2 s of their creation
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    assert json.loads(response.read()) == {"success": True, "processed": 1, "failed": 0}
                    break
            except urllib.error.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        deadline = time.monotonic() + 60
        while True:
            done = sluice(mine, "query", "SELECT count() FROM events FINAL")
            if done.stdout.strip().splitlines()[-1:] == ["1"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert done.stdout.splitlines() == ["1"]  # piped: TabSeparated without a header
    finally:
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does to the foreground group
        assert process.wait(60) == 0
        assert process.stdout is not None
        process.stdout.close()
    for port in (kafka_port, mine.gateway_port, mine.worker_port):
        assert not listening(port), f"port {port} still served after Ctrl-C"
