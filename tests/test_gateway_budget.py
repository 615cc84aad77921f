"""The in-flight byte budget: hundreds of stalled uploads hold a bounded amount of memory, and
honest clients are still served."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from services.gateway.budget import ByteBudget, OverBudget
from sluice.localkafka import free_port
from tests.builders import XAIKU_CURL_EVENTS, solute_body
from tests.gateway_harness import harness
from tests.processes import wait_http

MiB = 1 << 20


def test_reservations_fit_the_budget_and_large_bodies_share_half_of_it() -> None:
    budget = ByteBudget(limit=10 * MiB, large=MiB)
    big = [budget.reservation() for _ in range(5)]
    for reservation in big[:4]:
        reservation.grow(MiB + 1)
    with pytest.raises(OverBudget):  # large bodies: at most half
        big[4].grow(MiB + 1)
    small = [budget.reservation() for _ in range(6)]
    for reservation in small[:5]:
        reservation.grow(MiB)  # small bodies still fit, up to the whole budget
    with pytest.raises(OverBudget):
        small[5].grow(MiB)
    assert budget.refusals == 2
    grown = small[0]
    with pytest.raises(OverBudget):  # a small body that grows large counts whole against the half
        grown.grow(2 * MiB)
    assert grown.held == MiB
    for reservation in big + small:
        reservation.release()
    assert (budget.used, budget.used_large) == (0, 0)


async def test_over_the_budget_is_503_with_retry_after_in_the_familys_shape() -> None:
    async with harness(max_inflight_bytes=1000) as h:
        key = h.key(org="org_acme", scopes=("sdk:write",))
        big = solute_body(*[{"type": "track", "event": "x" * 900, "userId": "u", "timestamp": "2025-01-15T10:30:00Z"}])
        response = await h.post("/api/events", big, **{"X-Api-Key": key})
        assert response.status == 503 and response.headers["Retry-After"] == "1"
        assert await response.json() == {"error": "Too many requests in flight; retry later"}
        small = await h.post("/api/v1/analytics", {"events": XAIKU_CURL_EVENTS[:1]}, **{"X-public-key": key})
        assert small.status == 200
        assert h.gateway.budget.used == 0  # every reservation given back


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[tuple[str, str, int]]:
    """A gateway process (in-memory sink) with a 32 MiB budget: (url, key, pid)."""
    port = free_port()
    env = {**os.environ, "SLUICE_GATEWAY_PORT": str(port), "SLUICE_MAX_INFLIGHT_BYTES": str(32 * MiB),
           "SLUICE_RATE_LIMIT": "0", "SLUICE_CLIENT_TIMEOUT": "60"}  # fmt: skip
    with open(tmp_path / "gateway.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.memory_gateway"], env=env, stdout=subprocess.PIPE, stderr=log
        )
    try:
        assert process.stdout is not None
        key = process.stdout.readline().decode().strip()
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", 30, process)
        yield url, key, process.pid
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


STALLED = 300
SENT = 900_000


async def stall(port: int, path: str, headers: str, chunked: bool) -> asyncio.StreamWriter:
    """A connection that sends most of a ~1 MB body and then nothing more."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framing = "Transfer-Encoding: chunked" if chunked else "Content-Length: 1000000"
    writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}{framing}\r\n\r\n".encode())
    body = b"x" * SENT
    writer.write(b"%x\r\n%s\r\n" % (len(body), body) if chunked else body)
    with contextlib.suppress(TimeoutError, ConnectionError):
        await asyncio.wait_for(writer.drain(), 5)
    return writer


async def honest_post(http: aiohttp.ClientSession, url: str, key: str) -> int:
    async with http.post(f"{url}/api/events", data=solute_body(), headers={"X-Api-Key": key}) as response:
        return response.status


async def test_hundreds_of_stalled_uploads_hold_bounded_memory_and_honest_clients_are_served(
    gateway_process: tuple[str, str, int],
) -> None:
    url, key, pid = gateway_process
    port = int(url.rsplit(":", 1)[1])
    before = rss(pid)
    keyed = f"X-public-key: {key}\r\n"
    writers = await asyncio.gather(*[
        stall(port, "/api/v1/analytics", keyed if n % 2 else "Content-Type: text/plain\r\n", chunked=n % 3 == 0)
        for n in range(STALLED)
    ])  # fmt: skip
    await asyncio.sleep(1.0)
    try:
        held = rss(pid) - before
        async with aiohttp.ClientSession() as http:
            started = time.monotonic()
            honest = await asyncio.gather(*[honest_post(http, url, key) for _ in range(20)])
            elapsed = time.monotonic() - started
            metrics = await (await http.get(f"{url}/metrics")).text()
        held = max(held, rss(pid) - before)
    finally:
        for writer in writers:
            writer.transport.abort()  # drop what is still unsent
    print(f"{STALLED} stalled uploads of {SENT} B: gateway RSS +{held / MiB:.1f} MiB; 20 honest in {elapsed:.2f}s")
    assert honest == [200] * 20
    # the 32 MiB budget, plus aiohttp's read buffers (up to 128 KiB a connection) and allocator
    # slack; without the budget it was about STALLED × SENT ≈ 257 MiB
    assert held < 80 * MiB
    refused = next(line for line in metrics.splitlines() if line.startswith("sluice_gateway_inflight_refusals_total"))
    assert float(refused.split()[-1]) > STALLED / 2


async def test_compressed_bodies_inflate_within_the_body_limit() -> None:
    import gzip

    async with harness() as h:
        key = h.key()
        ok = await h.post("/api/events", gzip.compress(solute_body()), **{"X-Api-Key": key, "Content-Encoding": "gzip"})
        bomb = gzip.compress(b"[" + b" " * (64 * MiB) + b"]")  # 64 KiB on the wire
        big = await h.post("/api/events", bomb, **{"X-Api-Key": key, "Content-Encoding": "gzip"})
        assert (ok.status, big.status) == (200, 413)
        assert await big.json() == {"error": "Request body too large (max 1048576 bytes)"}
