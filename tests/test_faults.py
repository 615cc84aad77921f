"""Faults under load: nothing the gateway acknowledged is lost."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import msgspec
import pytest

from commands.loadgen import Options, Result, run
from sluice.settings import Settings
from tests.builders import solute_body, solute_event
from tests.processes import gateway_url, raw_message_ids, running, sluice
from tests.waiting import wait_until

pytestmark = pytest.mark.kafka


async def test_gateway_sigterm_under_load_drains_and_loses_nothing_acknowledged(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    key = sluice(kafka_settings, "keys", "create", "--org", "acme", "--kind", "secret", "--scope", "sdk:write").stdout
    with running(kafka_settings, "gateway", f"{gateway_url(kafka_settings)}/readyz", tmp_path / "gw.log") as gateway:
        options = Options(
            url=gateway_url(kafka_settings), key=key.strip(), org="acme", mix={"solute": 1, "traffical": 1},
            batch_size=20, rate=3000, duration=6, connections=16, progress=False,
        )  # fmt: skip
        result = Result()
        load = asyncio.create_task(run(options, result))
        await wait_until(lambda: result.statuses[200] >= 20, 4, "the gateway serving the load")
        os.killpg(gateway.pid, signal.SIGTERM)  # mid-load
        await load
        assert await asyncio.to_thread(gateway.wait, 30) == 0
    assert result.statuses[200] > 0  # it was serving when told to stop
    assert result.statuses[0] > 0  # and refused connections once it had stopped
    in_kafka = set(await raw_message_ids(kafka_settings))
    assert result.acked_ids <= in_kafka, f"{len(result.acked_ids - in_kafka)} acknowledged events are not in Kafka"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def test_slow_loris_gets_cut_off_while_others_are_served(kafka_settings: Settings, tmp_path: Path) -> None:
    settings = Settings.from_env(kafka_settings.to_env(), client_timeout=2.0)
    key = sluice(settings, "keys", "create", "--org", "acme", "--kind", "publishable").stdout.strip()
    url = gateway_url(settings)
    with running(settings, "gateway", f"{url}/readyz", tmp_path / "gw.log") as gateway:
        before = rss_bytes(gateway.pid)
        holding = 0
        """Slow clients connected and sending."""
        cut = asyncio.Event()
        """Set when the first slow client is cut off or answered."""

        async def slow_headers() -> bytes:
            """Headers one line at a time, never ending: the gateway closes the connection."""
            nonlocal holding
            reader, writer = await asyncio.open_connection(settings.gateway_host, settings.gateway_port)
            writer.write(b"POST /api/events HTTP/1.1\r\nHost: x\r\n")
            holding += 1
            try:
                for n in range(40):
                    await asyncio.sleep(0.25)
                    writer.write(f"X-Slow-{n}: {'a' * 100}\r\n".encode())
                    await writer.drain()
                return await asyncio.wait_for(reader.read(), 5)
            except ConnectionError:
                return b""  # closed on us mid-write: cut off, as it should be
            finally:
                cut.set()
                writer.close()

        async def slow_body() -> bytes:
            """Whole headers, then a large body a few bytes at a time: 408 in the family's shape."""
            nonlocal holding
            reader, writer = await asyncio.open_connection(settings.gateway_host, settings.gateway_port)
            writer.write(
                b"POST /api/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                + f"X-Api-Key: {key}\r\nContent-Length: 500000\r\n\r\n".encode()
            )
            holding += 1
            try:
                for _ in range(40):
                    writer.write(b"[" * 10)
                    await writer.drain()
                    await asyncio.sleep(0.25)
                    if reader.at_eof() or reader._buffer:  # type: ignore[attr-defined]  # answered already
                        break
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                return head + await reader.readexactly(length)
            except ConnectionError:
                return b""
            finally:
                cut.set()
                writer.close()

        async def honest() -> list[bool]:
            """Ordinary requests all along, once slow clients hold connections: each answered 200;
            for each, whether it was answered while no slow client had been cut off yet."""
            await wait_until(lambda: holding >= 20, 30, "slow clients holding connections")
            served_while_held = []
            async with aiohttp.ClientSession() as http:
                for n in range(30):
                    body = solute_body(solute_event(messageId=f"honest-{n}"))
                    async with http.post(f"{url}/api/events", data=body,
                                         headers={"X-Api-Key": key}) as response:  # fmt: skip
                        assert response.status == 200
                    served_while_held.append(not cut.is_set())
                    await asyncio.sleep(0.1)
            return served_while_held

        attack = [asyncio.create_task(slow()) for slow in [slow_headers] * 100 + [slow_body] * 100]
        served_while_held = await honest()
        answers = await asyncio.gather(*attack)
        headers_answers, body_answers = answers[:100], answers[100:]
        after = rss_bytes(gateway.pid)

    assert all(answer == b"" for answer in headers_answers), "a never-ending header block was not cut off"
    for answer in body_answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        if head.startswith(b"HTTP/1.1 503"):  # over the in-flight byte budget: refused before its body
            assert b"Retry-After:" in head, head[:200]
            continue
        assert head.startswith(b"HTTP/1.1 408"), head[:100]
        assert msgspec.json.decode(body) == {"error": "Request body not received within 2s"}
    # not queued behind the slow clients: served before the gateway cut any of them off
    assert served_while_held[0], "an honest request waited until the slow clients were cut off"
    assert after - before < 64 * 2**20, f"RSS grew by {(after - before) / 2**20:.0f} MB"
