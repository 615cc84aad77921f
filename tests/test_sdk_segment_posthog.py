"""Issue 26's proof: Segment's and PostHog's own SDKs, unmodified from PyPI and npm, pointed at
the gateway by their host option alone. What they send lands in the warehouse (real Kafka, a
real worker, the embedded warehouse) with the key's org, the right user, properties, traits,
companies, aliases, experiment and variant; and the batch each SDK sends again after losing the
gateway's answer (``tests/sdk_proxy.py``) is not counted twice.

The requests each SDK made and their statuses are printed (``pytest -s`` shows them)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import pytest

from commands.localkafka import free_port
from sluice.settings import Settings
from sluice.topics import delete_topics, ensure_topics
from tests.processes import gateway_url, query_rows, running, sluice
from tests.sdk_proxy import SdkProxy, Seen, sdk_proxy

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

ROOT = Path(__file__).resolve().parents[1]
NODE_MODULES = ROOT / ".sluice" / "sdks" / "node" / "node_modules"
CLIENTS = ROOT / "tests" / "clients" / "sdks"


@dataclass
class System:
    settings: Settings
    url: str


@pytest.fixture(scope="module")
def system(_kafka_session: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """One gateway and one worker for the module's SDKs (each test has an org of its own)."""
    home = tmp_path_factory.mktemp("sdks")
    tag = uuid.uuid4().hex[:10]
    worker_port = free_port()
    settings = Settings.from_env(
        {}, home=str(home / "home"), topic_prefix=f"test.{tag}.", worker_group=f"test-worker-{tag}",
        clickhouse_database=f"test_{tag}", raw_partitions=2, gateway_port=free_port(), worker_port=worker_port,
        worker_url=f"http://127.0.0.1:{worker_port}", sink_batch_seconds=0.2, kafka_bootstrap=_kafka_session,
    )  # fmt: skip
    asyncio.run(ensure_topics(settings))
    url = gateway_url(settings)
    try:
        with (
            running(settings, "worker", f"{settings.worker_url}/healthz", home / "worker.log"),
            running(settings, "gateway", f"{url}/readyz", home / "gateway.log"),
        ):
            yield System(settings, url)
    finally:
        asyncio.run(delete_topics(settings))


def new_key(system: System, org: str, sdk: str) -> str:
    """``sluice keys create --sdk SDK``, once the gateway honours it."""
    created = sluice(system.settings, "keys", "create", "--org", org, "--sdk", sdk)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith({"segment": "wk_", "posthog": "phc_"}[sdk])
    request = urllib.request.Request(
        f"{system.url}/v1/batch", data=b'{"batch": []}', method="POST",
        headers={"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()},
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5):
                return key
        except urllib.error.HTTPError as exc:
            if exc.code != 401 or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def wait_rows(system: System, sql: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(found := query_rows(system.settings, sql)) < count and time.monotonic() < deadline:
        time.sleep(0.3)
    return found


def first_ingest_post(method: str, path: str) -> bool:
    """The request whose answer the proxy loses: the SDK's first batch of events."""
    return method == "POST" and path.split("?")[0].rstrip("/") in ("/v1/batch", "/batch", "/e", "/i/v0/e")


def report(name: str, proxy: SdkProxy) -> None:
    print(f"\n{name}:\n  " + "\n  ".join(proxy.lines()))


def landed(system: System, org: str, count: int) -> list[tuple[Any, ...]]:
    rows = wait_rows(
        system,
        "SELECT family, type, event, user_id, unit_key, experiment_id, variant_id, properties "
        f"FROM events FINAL WHERE org_id = '{org}' ORDER BY type, event",
        count,
    )
    return [
        (r["family"], r["type"], r["event"], r["user_id"], r["unit_key"], r["experiment_id"], r["variant_id"],
         json.loads(r["properties"]))
        for r in rows
    ]  # fmt: skip


def counted_once(system: System, org: str, experiment: str, variant: str, unit: str) -> None:
    """The exposure and the conversion counted once each, whatever the SDK sent again."""
    sql = f"SELECT sum(exposures) AS n FROM exposures_1m WHERE org_id = '{org}'"
    assert wait_rows(system, sql, 1)[0]["n"] == 1
    sql = f"SELECT sum(tracks) AS n FROM tracks_1m WHERE org_id = '{org}' AND experiment_id = '{experiment}'"
    assert wait_rows(system, sql, 1)[0]["n"] == 1
    units = wait_rows(
        system,
        "SELECT experiment_id, variant_id, unit_key, converted_at IS NOT NULL AS converted "
        f"FROM experiment_units FINAL WHERE org_id = '{org}'",
        1,
    )
    assert [tuple(u.values()) for u in units] == [(experiment, variant, unit, 1)]


def person(system: System, org: str, user: str) -> dict[str, Any]:
    sql = f"SELECT traits, company_ids FROM users FINAL WHERE org_id = '{org}' AND user_id = '{user}'"
    [row] = wait_rows(system, sql, 1)
    return {"traits": json.loads(row["traits"]), "companies": row["company_ids"]}


def aliases(system: System, org: str, count: int) -> list[tuple[str, str]]:
    sql = f"SELECT previous_id, user_id FROM user_aliases FINAL WHERE org_id = '{org}' ORDER BY previous_id"
    return [(r["previous_id"], r["user_id"]) for r in wait_rows(system, sql, count)]


# --- Python ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_segment_analytics_python(system: System, gzip: bool) -> None:
    from segment.analytics.client import Client  # type: ignore[import-untyped]
    from segment.analytics.version import VERSION  # type: ignore[import-untyped]

    org = f"seg-py-{'gzip' if gzip else 'plain'}"
    errors: list[Any] = []
    with sdk_proxy(system.url, first_ingest_post) as proxy:
        client = Client(write_key=new_key(system, org, "segment"), host=proxy.url, gzip=gzip, on_error=errors.append)
        client.identify("user-py", {"plan": "pro", "email": "ada@example.com"})
        client.group("user-py", "acme-inc", {"name": "Acme", "seats": 5})
        client.track("user-py", "Experiment Viewed", {"experiment_id": "exp_checkout", "variation_id": "blue"})
        client.track("user-py", "Order Completed", {"revenue": 42.5, "currency": "EUR"})
        client.page("user-py", "Docs", "Install", {"url": "https://shop.test/docs"})
        client.alias("anon-py", "user-py")
        client.flush()
        client.join()
    report(f"segment-analytics-python {VERSION} (gzip={gzip})", proxy)
    assert errors == []
    statuses = [(s.method, s.path, s.status) for s in proxy.seen]
    assert statuses[0] == ("POST", "/v1/batch", 503) and ("POST", "/v1/batch", 200) in statuses[1:]
    assert all(s.content_encoding == ("gzip" if gzip else "") for s in proxy.seen)
    rows = landed(system, org, 6)
    assert [r[:7] for r in rows] == [
        ("segment", "alias", "", "user-py", "user-py", "", ""),
        ("segment", "exposure", "Experiment Viewed", "user-py", "user-py", "exp_checkout", "blue"),
        ("segment", "group", "", "user-py", "user-py", "", ""),
        ("segment", "identify", "", "user-py", "user-py", "", ""),
        ("segment", "page", "Install", "user-py", "user-py", "", ""),
        ("segment", "track", "Order Completed", "user-py", "user-py", "", ""),
    ]
    assert rows[5][7] == {"revenue": 42.5, "currency": "EUR"}
    counted_once(system, org, "exp_checkout", "blue", "user-py")
    assert person(system, org, "user-py") == {
        "traits": {"plan": "pro", "email": "ada@example.com"}, "companies": ["acme-inc"],
    }  # fmt: skip
    assert aliases(system, org, 1) == [("anon-py", "user-py")]


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_posthog_python(system: System, gzip: bool) -> None:
    from posthog import Posthog
    from posthog.version import VERSION

    org = f"ph-py-{'gzip' if gzip else 'plain'}"
    errors: list[Any] = []
    with sdk_proxy(system.url, first_ingest_post) as proxy:
        client = Posthog(
            new_key(system, org, "posthog"), host=proxy.url, gzip=gzip, on_error=lambda e, b: errors.append(e)
        )
        client.set(distinct_id="user-py", properties={"plan": "pro"})
        client.group_identify("company", "acme-inc", {"name": "Acme"})
        client.capture("$feature_flag_called", distinct_id="user-py",
                       properties={"$feature_flag": "new-checkout", "$feature_flag_response": "test"})  # fmt: skip
        client.capture("purchase", distinct_id="user-py", properties={"amount": 20})
        client.alias(previous_id="user-py", distinct_id="anon-py")  # user-py is also known as anon-py
        client.flush()
        client.shutdown()
    report(f"posthog (python) {VERSION} (gzip={gzip})", proxy)
    assert errors == []
    statuses = [(s.method, s.path, s.status) for s in proxy.seen]
    assert statuses[0] == ("POST", "/batch/", 503) and ("POST", "/batch/", 200) in statuses[1:]
    assert all(s.content_encoding == ("gzip" if gzip else "") for s in proxy.seen if s.path == "/batch/")
    rows = landed(system, org, 5)
    # group_identify's distinct id is a fresh uuid of the SDK's: its unit is no one's
    assert [r[:7] if r[1] != "group" else r[:4] + r[5:7] for r in rows] == [
        ("posthog", "alias", "$create_alias", "user-py", "user-py", "", ""),
        ("posthog", "exposure", "$feature_flag_called", "user-py", "user-py", "new-checkout", "test"),
        ("posthog", "group", "$groupidentify", "", "", ""),
        ("posthog", "identify", "$set", "user-py", "user-py", "", ""),
        ("posthog", "track", "purchase", "user-py", "user-py", "", ""),
    ]
    assert rows[4][7]["amount"] == 20 and rows[4][7]["$lib"] == "posthog-python"
    counted_once(system, org, "new-checkout", "test", "user-py")
    assert person(system, org, "user-py")["traits"] == {"plan": "pro"}
    assert aliases(system, org, 1) == [("anon-py", "user-py")]
    sql = f"SELECT company_id, traits FROM companies FINAL WHERE org_id = '{org}'"
    [company] = wait_rows(system, sql, 1)
    assert company["company_id"] == "acme-inc" and json.loads(company["traits"])["name"] == "Acme"


# --- Node -----------------------------------------------------------------------------------------


def node(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("node") is None or not NODE_MODULES.is_dir():
        pytest.skip("node or the npm packages are missing (tests/clients/sdks/install.sh, run by make test)")
    env = {**os.environ, "NODE_PATH": str(NODE_MODULES)}
    return subprocess.run(["node", str(CLIENTS / script), *args], env=env, capture_output=True, text=True, timeout=120)


def node_version(package: str) -> str:
    return str(msgspec.json.decode((NODE_MODULES / package / "package.json").read_bytes())["version"])


def test_segment_analytics_node(system: System) -> None:
    org = "seg-node"
    with sdk_proxy(system.url, first_ingest_post) as proxy:
        done = node("segment_node.cjs", new_key(system, org, "segment"), proxy.url)
    report(f"@segment/analytics-node {node_version('@segment/analytics-node')}", proxy)
    assert done.returncode == 0, done.stdout + done.stderr
    statuses = [(s.method, s.path, s.status) for s in proxy.seen]
    assert statuses[0] == ("POST", "/v1/batch", 503) and ("POST", "/v1/batch", 200) in statuses[1:]
    rows = landed(system, org, 4)
    assert [r[:7] for r in rows] == [
        ("segment", "exposure", "Experiment Viewed", "user-node", "user-node", "exp_pricing", "annual"),
        ("segment", "group", "", "user-node", "user-node", "", ""),
        ("segment", "identify", "", "user-node", "user-node", "", ""),
        ("segment", "track", "Order Completed", "user-node", "user-node", "", ""),
    ]
    assert rows[3][7] == {"revenue": 99}
    counted_once(system, org, "exp_pricing", "annual", "user-node")
    assert person(system, org, "user-node") == {"traits": {"plan": "team"}, "companies": ["acme-inc"]}


def test_posthog_node(system: System) -> None:
    org = "ph-node"
    with sdk_proxy(system.url, first_ingest_post) as proxy:
        done = node("posthog_node.cjs", new_key(system, org, "posthog"), proxy.url)
    report(f"posthog-node {node_version('posthog-node')}", proxy)
    assert done.returncode == 0, done.stdout + done.stderr
    statuses = [(s.method, s.path.split("?")[0], s.status) for s in proxy.seen]
    assert statuses[0] == ("POST", "/batch/", 503) and ("POST", "/batch/", 200) in statuses[1:]
    rows = landed(system, org, 4)
    assert [r[:7] for r in rows] == [
        ("posthog", "alias", "$identify", "user-node", "user-node", "", ""),
        ("posthog", "exposure", "$feature_flag_called", "user-node", "user-node", "new-onboarding", "variant-b"),
        ("posthog", "identify", "$identify", "user-node", "user-node", "", ""),
        ("posthog", "track", "signed up", "user-node", "user-node", "", ""),
    ]
    assert rows[3][7]["plan"] == "team" and rows[3][7]["$lib"] == "posthog-node"
    counted_once(system, org, "new-onboarding", "variant-b", "user-node")
    assert person(system, org, "user-node")["traits"] == {"email": "node@example.com"}
    assert aliases(system, org, 1) == [("anon-node", "user-node")]


# --- the browser ----------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
# opt_out_useragent_filter: posthog-js drops the events of browsers that say they are automated
# (HeadlessChrome, navigator.webdriver), and its own warning names this option for end-to-end tests
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>shop</title>
<script src="/array.full.js"></script>
<script>posthog.init(%s, {api_host: %s, opt_out_useragent_filter: true})</script>
</head><body><button id="buy">Buy</button></body></html>
"""


@contextmanager
def page_server(token: str, api_host: str) -> Iterator[str]:
    """The shop's page and posthog-js (from npm, as it ships) on an origin of their own."""
    script = (NODE_MODULES / "posthog-js" / "dist" / "array.full.js").read_bytes()
    page = (PAGE % (json.dumps(token), json.dumps(api_host))).encode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body, kind = (script, "text/javascript") if self.path == "/array.full.js" else (page, "text/html")
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def wait_seen(proxy: SdkProxy, wanted: Callable[[Seen], bool], timeout: float = 30) -> Seen:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := next((s for s in proxy.seen if wanted(s)), None):
            return found
        time.sleep(0.1)
    raise AssertionError(f"no such request; seen: {proxy.lines()}")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (make test installs it)")
async def test_posthog_js_in_chromium_from_another_origin(system: System) -> None:
    from playwright.async_api import async_playwright

    if not (NODE_MODULES / "posthog-js").is_dir():
        pytest.skip("posthog-js is not installed (tests/clients/sdks/install.sh, run by make test)")
    org = "ph-js"
    token = await asyncio.to_thread(new_key, system, org, "posthog")
    console: list[str] = []
    with sdk_proxy(system.url) as proxy, page_server(token, proxy.url) as origin:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            )
            try:
                page = await browser.new_page()
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
                await page.goto(f"{origin}/")
                await page.evaluate("""() => {
                    posthog.identify('user-js', {plan: 'pro'})
                    posthog.capture('$feature_flag_called', {$feature_flag: 'hero', $feature_flag_response: 'bold'})
                    posthog.capture('signed up', {source: 'hero'})
                }""")  # fmt: skip
                # the batches go as gzip in a text/plain body that says nothing of it
                await asyncio.to_thread(wait_seen, proxy, lambda s: s.method == "POST" and s.path.startswith("/e/"))
                # the flags are asked for once the remote config is back, which on a loaded machine
                # can be after the first batch: leaving the page before then would cancel the request
                await asyncio.to_thread(wait_seen, proxy, lambda s: s.path.startswith("/flags/"))
                await page.evaluate("() => posthog.capture('purchase', {amount: 20})")
                await page.goto("about:blank")  # unload: what is queued goes by navigator.sendBeacon
                beacon = await asyncio.to_thread(wait_seen, proxy, lambda s: s.fetch_mode == "no-cors")
            finally:
                await browser.close()
    report(f"posthog-js {node_version('posthog-js')} (Chromium, page on {origin})", proxy)
    assert not [line for line in console if line.startswith("error")], console
    for s in proxy.seen:
        assert s.status < 300, s.line()
    captures = [s for s in proxy.seen if s.method == "POST" and s.path.startswith("/e/")]
    assert captures and all(s.content_type == "text/plain" and s.gzipped and not s.content_encoding for s in captures)
    # navigator.sendBeacon (a no-cors request): gzip as text/plain too, answered like any capture
    assert (beacon.method, beacon.path, beacon.status, beacon.content_type) == ("POST", "/e/", 200, "text/plain")
    startup = {s.path.split("?")[0].replace(token, "{token}") for s in proxy.seen if not s.path.startswith("/e/")}
    assert startup <= {"/flags/", "/array/{token}/config.js", "/array/{token}/config", "/decide/"}
    assert "/flags/" in startup and startup & {"/array/{token}/config.js", "/array/{token}/config"}
    rows = landed(system, org, 5)
    mine = {r[1:7] for r in rows if r[3] == "user-js"}
    assert {
        ("identify", "$identify", "user-js", "user-js", "", ""),
        ("alias", "$identify", "user-js", "user-js", "", ""),
        ("exposure", "$feature_flag_called", "user-js", "user-js", "hero", "bold"),
        ("track", "signed up", "user-js", "user-js", "", ""),
        ("track", "purchase", "user-js", "user-js", "", ""),
    } <= mine
    [pageview] = [r for r in rows if r[2] == "$pageview"]
    assert pageview[1] == "page" and pageview[3] == "" and pageview[7]["$current_url"] == f"{origin}/"
    counted_once_each = "SELECT sum(tracks) AS n FROM tracks_1m WHERE org_id = 'ph-js' AND experiment_id = 'hero'"
    assert wait_rows(system, counted_once_each, 1)[0]["n"] >= 2
    assert person(system, org, "user-js")["traits"] == {"plan": "pro"}
