"""``sluice loadgen``: drive a gateway with a mix of the four families and record the truth.

Every request is built from a deterministic seed; every acknowledged event's message id (its
own, or the id the pipeline derives from org, body digest and index) goes to the truth file, so a
run can be compared with the warehouse afterwards. Duplicates re-send an earlier event with its
id (as an SDK retry would); invalid events are malformed on purpose and must not be counted.

Units (10,000 per run) are drawn as the SDKs send them: a browser SDK's request (Halo, Xaiku,
Traffical) carries one visitor's events; a Solute request is a server-side batch of many users.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from sluice.envelope import body_digest, derived_message_id

FAMILIES = ("halo", "xaiku", "solute", "traffical")
PATHS = {"halo": "/api/sdk/events", "xaiku": "/api/v1/analytics", "solute": "/api/events", "traffical": "/v1/events"}


@dataclass
class Options:
    url: str
    key: str
    org: str
    mix: dict[str, float] = field(default_factory=lambda: dict.fromkeys(FAMILIES, 1.0))
    batch_size: int = 50
    duplicate_rate: float = 0.0
    invalid_rate: float = 0.0
    rate: float = 0.0
    """Target events per second; 0 means as fast as the gateway answers."""
    duration: float = 10.0
    connections: int = 32
    seed: int = 1
    truth: Path | None = None
    progress: bool = True
    identified_users: int = 0
    """Above 0: identified traffic instead of the mix — every request a Solute batch of tracks from
    users among this many, each with ``userId`` and ``anonymousId``, properties and context as in
    the README's example; ``duplicate_rate`` is then the share of requests sent again whole (an
    SDK retrying a batch whose answer it lost)."""


@dataclass
class Result:
    requests: int = 0
    events_acked: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    acked_ids: set[str] = field(default_factory=set)

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "events_acked": self.events_acked,
            "unique_acked": len(self.acked_ids),
            "events_per_second": round(self.events_acked / self.elapsed, 1) if self.elapsed else 0.0,
            "p50_ms": round(self.percentile(0.50) * 1000, 2),
            "p99_ms": round(self.percentile(0.99) * 1000, 2),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "seconds": round(self.elapsed, 2),
        }


class Generator:
    """Request bodies per family, with the message ids the pipeline will give their events."""

    def __init__(self, options: Options) -> None:
        self.o = options
        self.rng = random.Random(options.seed)
        self.counter = itertools.count()
        self.sent: dict[str, list[dict[str, Any]]] = {f: [] for f in FAMILIES}  # earlier events, to resend
        self.last: tuple[str, str, bytes, Callable[[int], list[str]]] | None = None

    def _event(self, family: str, unit: str) -> dict[str, Any]:
        n = next(self.counter)
        if family == "solute":  # a server-side batch: each event its own user
            unit = f"u{self.rng.randrange(10_000)}"
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if family == "halo":
            return {"event_type": "click", "page_url": "/pricing", "metadata": {"n": n}, "element_selector": "#buy"}
        if family == "xaiku":
            variant = "control" if self.rng.random() < 0.5 else "treatment"
            return {"eventName": "impression", "experimentId": "exp_load", "variantId": variant, "sessionId": unit}
        if family == "solute":
            return {"type": "track", "event": "Load Event", "messageId": f"lg-{self.o.seed}-{n}", "userId": unit,
                    "timestamp": now, "properties": {"n": n}, "context": {"sessionId": unit}}  # fmt: skip
        layers = [{"policyId": "policy_load", "allocationName": "treatment", "layerId": "l"}]
        return {"type": "exposure", "id": f"lg-{self.o.seed}-{n}", "unitKey": unit, "timestamp": now,
                "layers": layers}  # fmt: skip

    def _invalid(self, family: str) -> dict[str, Any]:
        return {"solute": {"type": "launch"}, "traffical": {"type": "exposure"}}.get(family, {})

    def identified(self) -> tuple[str, str, bytes, Callable[[int], list[str]]]:
        """A request of identified traffic (``Options.identified_users``), or the last one again."""
        if self.last is not None and self.rng.random() < self.o.duplicate_rate:
            return self.last
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        events = []
        for _ in range(self.o.batch_size):
            n, user = next(self.counter), self.rng.randrange(self.o.identified_users)
            events.append({
                "type": "track", "event": "Button Clicked", "messageId": f"id-{self.o.seed}-{n}",
                "userId": f"user_{user}", "anonymousId": f"anon_{user}", "timestamp": now,
                "properties": {"button_id": "cta-signup", "page": "/homepage", "n": n},
                "context": {"page": {"path": "/homepage", "url": "https://example.com/homepage"},
                            "library": {"name": "@solute-ai/sdk", "version": "0.1.2"}, "sessionId": f"s_{user}"},
            })  # fmt: skip
        ids = [str(event["messageId"]) for event in events]
        raw = msgspec.json.encode({"batch": events, "sentAt": _now()})
        self.last = ("solute", PATHS["solute"], raw, lambda status: ids if status == 200 else [])
        return self.last

    def request(self) -> tuple[str, str, bytes, Callable[[int], list[str]]]:
        """(family, path, body, ids-of-accepted-events given the answer's status)."""
        if self.o.identified_users:
            return self.identified()
        family = self.rng.choices(list(self.o.mix), weights=list(self.o.mix.values()))[0]
        events = []
        has_own_ids = family in ("solute", "traffical")
        visitor = f"u{self.rng.randrange(10_000)}"  # a browser SDK's request: one visitor
        for _ in range(self.o.batch_size):
            roll = self.rng.random()
            if roll < self.o.duplicate_rate and has_own_ids and self.sent[family]:
                events.append(self.rng.choice(self.sent[family]))
            elif roll < self.o.duplicate_rate + self.o.invalid_rate and family in ("solute", "traffical"):
                events.append(self._invalid(family))
            else:
                events.append(self._event(family, visitor))
        body: dict[str, Any] = {"batch": events, "sentAt": _now()} if family == "solute" else {"events": events}
        if family == "halo":
            body["user_id"] = visitor
        raw = msgspec.json.encode(body)
        digest = body_digest(raw)

        def ids(status: int) -> list[str]:
            if status != 200:
                return []
            out = []
            for index, event in enumerate(events):
                if not event or event.get("type") == "launch" or (family == "traffical" and "layers" not in event):
                    continue
                own = event.get("messageId") or event.get("id")
                out.append(own if isinstance(own, str) else derived_message_id(self.o.org, digest, index))
            return out

        pool = self.sent[family]
        pool.extend(e for e in events if e.get("messageId") or e.get("id"))
        del pool[:-2000]
        return family, PATHS[family], raw, ids


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _headers(family: str, key: str) -> dict[str, str]:
    if family == "xaiku":
        return {"X-public-key": key, "Content-Type": "application/json"}
    if family == "solute":
        return {"X-Api-Key": key, "Content-Type": "application/json"}
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


async def run(options: Options, result: Result | None = None) -> Result:
    """Run the load; ``result`` (a new one by default) counts the answers as they come, so that a
    caller may watch it while the load runs."""
    generator = Generator(options)
    result = result if result is not None else Result()
    deadline = time.monotonic() + options.duration
    interval = options.batch_size / options.rate if options.rate > 0 else 0.0
    next_slot = time.monotonic()
    lock = asyncio.Lock()
    connector = aiohttp.TCPConnector(limit=options.connections)
    started = time.monotonic()

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal next_slot
        while time.monotonic() < deadline:
            if interval:
                async with lock:
                    slot = next_slot
                    next_slot = max(next_slot + interval, time.monotonic() - 1.0)
                await asyncio.sleep(max(0.0, slot - time.monotonic()))
            family, path, body, ids = generator.request()
            begun = time.perf_counter()
            try:
                async with http.post(options.url + path, data=body, headers=_headers(family, options.key)) as r:
                    await r.read()
                    status = r.status
            except aiohttp.ClientError:
                status = 0
            result.latencies.append(time.perf_counter() - begun)
            result.requests += 1
            result.statuses[status] += 1
            acked = ids(status)
            result.events_acked += len(acked)
            result.acked_ids.update(acked)

    async def progress() -> None:
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            done = min(1.0, (time.monotonic() - started) / options.duration)
            bar = "#" * int(done * 30)
            rate = result.events_acked / max(1e-9, time.monotonic() - started)
            sys.stderr.write(f"\r[{bar:<30}] {done:4.0%}  {result.events_acked} events acked  {rate:,.0f}/s ")
            sys.stderr.flush()
        sys.stderr.write("\n")

    async with aiohttp.ClientSession(connector=connector) as http:
        tasks = [asyncio.create_task(client(http)) for _ in range(options.connections)]
        if options.progress:
            tasks.append(asyncio.create_task(progress()))
        await asyncio.gather(*tasks)
    result.elapsed = time.monotonic() - started
    if options.truth is not None:
        options.truth.write_text("".join(f"{i}\n" for i in sorted(result.acked_ids)))
    return result


def parse_mix(text: str) -> dict[str, float]:
    """``halo=1,solute=2`` → weights; families left out get none."""
    mix = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        if name not in FAMILIES:
            raise ValueError(f"unknown family {name!r}; choose from {', '.join(FAMILIES)}")
        mix[name] = float(weight or 1)
    return mix
