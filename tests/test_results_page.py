"""Results over HTTP: the JSON API behind the token, and the page in a real headless Chromium
(Playwright driving the system's /usr/bin/chromium, which ``make test`` installs; no download)."""

from __future__ import annotations

import base64
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest
from aiohttp import web

from pipeline.results.web import ResultsWeb, token_of
from pipeline.warehouse import Warehouse
from sluice.configs import ConfigStore, SavedMetrics, XaikuExperiment, experiment_key, metrics_key
from tests.test_results import fill

pytestmark = pytest.mark.clickhouse

TOKEN = "analyst-token-123"
CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")


def configs(weights: dict[str, float]) -> ConfigStore:
    """The experiment as ``sluice experiments put`` and ``experiments metrics set`` load it."""
    store = ConfigStore()
    variants = [{"id": name, "weight": w, "control": name == "control"} for name, w in weights.items()]
    record = XaikuExperiment(org_id="acme", experiment_id="exp", version=1, updated_at=0.0, digest="",
                             variants=msgspec.Raw(msgspec.json.encode(variants)))  # fmt: skip
    store.apply("experiment", experiment_key("acme", "exp").decode().partition(":")[2], msgspec.json.encode(record))
    saved = SavedMetrics(org_id="acme", experiment_id="exp", metrics=["conversion:purchase", "mean:purchase"],
                         updated_at=0.0)  # fmt: skip
    store.apply("metrics", metrics_key("acme", "exp").decode().partition(":")[2], msgspec.json.encode(saved))
    return store


async def serve(warehouse: Warehouse, store: ConfigStore) -> AsyncIterator[str]:
    app = web.Application()
    ResultsWeb(warehouse, TOKEN, lambda: store).install(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def skewed(warehouse: Warehouse) -> AsyncIterator[str]:
    """The test experiment (3 exposed units a variant), declared 99:1: a sample ratio mismatch."""
    fill(warehouse)
    async for url in serve(warehouse, configs({"control": 99.0, "treatment": 1.0})):
        yield url


def test_the_token_is_taken_as_bearer_or_as_the_basic_password() -> None:
    basic = "Basic " + base64.b64encode(b"anyone:" + TOKEN.encode()).decode()
    assert token_of(f"Bearer {TOKEN}") == TOKEN and token_of(basic) == TOKEN
    assert token_of("Basic !!!") == "" and token_of("") == "" and token_of(TOKEN) == ""


async def test_the_json_api(skewed: str) -> None:
    url = f"{skewed}/api/v1/experiments/exp/results"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, params={"org": "acme", "metric": "purchase"}) as refused:
            assert refused.status == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
        wrong = {"Authorization": "Bearer nope"}
        async with http.get(url, params={"org": "acme", "metric": "purchase"}, headers=wrong) as refused:
            assert refused.status == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        query = {"org": "acme", "metric": "purchase", "kind": "mean", "fixed": "true", "alpha": "0.1"}
        async with http.get(url, params=query, headers=auth) as answer:
            assert answer.status == 200, await answer.text()
            card = await answer.json()
        assert (card["experiment_id"], card["metric"], card["kind"]) == ("exp", "mean:purchase", "mean")
        assert card["sequential"] is False and card["cuped"] is True and card["alpha"] == 0.1
        assert card["srm_p_value"] < 0.001 and card["weights"] == {"control": 99.0, "treatment": 1.0}
        control, treatment = card["variants"]
        assert control["control"] is True and control["units"] == 3 and treatment["units"] == 3
        assert len(treatment["ci_abs"]) == 2 and len(treatment["ci_rel"]) == 2 and "p_value" in treatment
        ratio = {"org": "acme", "metric": "purchase", "kind": "ratio", "denominator": "signup", "cuped": "false"}
        async with http.get(url, params=ratio, headers=auth) as answer:
            assert (await answer.json())["metric"] == "ratio:purchase/signup"
        async with http.get(url, params={"org": "acme", "kind": "median"}, headers=auth) as bad:
            assert bad.status == 400 and "unknown kind" in (await bad.json())["error"]
        async with http.get(f"{skewed}/api/v1/experiments/none/results", params={"org": "acme"}, headers=auth) as gone:
            assert gone.status == 404


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (make test installs it)")
async def test_the_page_in_chromium_shows_variants_bars_and_the_srm_warning(skewed: str) -> None:
    from playwright.async_api import Error, async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )  # fmt: skip
        try:
            anonymous = await browser.new_page()
            with pytest.raises(Error, match="AUTH"):  # asked for credentials, has none
                await anonymous.goto(f"{skewed}/results")
            context = await browser.new_context(http_credentials={"username": "analyst", "password": TOKEN})
            page = await context.new_page()
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            listing = await page.goto(f"{skewed}/results?org=acme")
            assert listing is not None and listing.status == 200
            await page.get_by_role("link", name="exp", exact=True).click()
            await page.wait_for_url("**/results/acme/exp")
            sections = page.locator("section.metric")
            assert await sections.count() == 2  # the saved metrics
            assert await sections.nth(0).get_attribute("data-metric") == "conversion:purchase"
            mean = page.locator("section[data-metric='mean:purchase']")
            assert await mean.locator("tr.row").count() == 2
            assert await mean.locator("tr.row[data-variant='control']").inner_text() > ""
            bar = mean.locator("svg.lifts g.variant[data-variant='treatment'] rect.interval")
            assert await bar.count() == 1 and await bar.is_visible()
            box = await bar.bounding_box()
            assert box is not None and box["width"] > 1
            assert await mean.locator("svg.timeline g.band[data-variant='treatment'] polygon").count() == 1
            warning = mean.locator(".warning.srm")
            assert await warning.is_visible()
            assert "Sample ratio mismatch" in await warning.inner_text()
            assert all(r.startswith(skewed) for r in requests)  # nothing from elsewhere
            named = await page.goto(f"{skewed}/results/acme/exp?metric=purchase&kind=count&fixed=1")
            assert named is not None and named.status == 200
            assert await page.locator("section.metric").count() == 1
            assert "fixed horizon" in await page.locator("section.metric p.muted").first.inner_text()
        finally:
            await browser.close()


async def test_the_pages_json_links_and_the_api_measure_what_the_page_shows(skewed: str) -> None:
    """Each card's JSON link reads the card's own metric (it once sent ``metric=mean:purchase`` with
    ``kind=mean``: an event named "mean:purchase", all zeros); with no metric asked, the API, the
    page and the CLI take the saved metrics (the API the first), and a kind alone is that kind over
    any track; yes/no parameters other than yes or no are refused."""
    import re
    from html import unescape
    from urllib.parse import urljoin

    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=auth) as http:
        page_url = f"{skewed}/results/acme/exp?org=other&alpha=0.1"
        async with http.get(page_url) as page:
            assert page.status == 200, await page.text()
            links = [unescape(href) for href in re.findall(r"href='([^']*api/v1[^']*)'", await page.text())]
        assert len(links) == 2  # the saved metrics: conversion:purchase and mean:purchase
        for link in links:
            async with http.get(urljoin(page_url, link)) as answer:
                assert answer.status == 200, await answer.text()
                card = await answer.json()
            direct = {"org": "acme", "metric": card["metric"].partition(":")[2], "kind": card["kind"], "alpha": "0.1"}
            async with http.get(f"{skewed}/api/v1/experiments/exp/results", params=direct) as answer:
                assert await answer.json() == card and card["org_id"] == "acme" and card["alpha"] == 0.1
        assert sorted(link.partition("metric=")[2].split("&")[0] for link in links) == [
            "conversion%3Apurchase", "mean%3Apurchase",
        ]  # fmt: skip
        url = f"{skewed}/api/v1/experiments/exp/results"
        async with http.get(url, params={"org": "acme"}) as answer:
            assert (await answer.json())["metric"] == "conversion:purchase"  # the first saved metric
        async with http.get(url, params={"org": "acme", "kind": "count"}) as answer:
            assert (await answer.json())["metric"] == "count:*"
        for bad in ({"metric": "mean:purchase", "kind": "count"}, {"fixed": "2"}, {"cuped": ""}):
            async with http.get(url, params={"org": "acme", "metric": "purchase"} | bad) as answer:
                assert answer.status == 400, bad
        async with http.get(f"{skewed}/results/acme/exp", params={"kind": "median"}) as answer:
            assert answer.status == 400 and "unknown kind" in (await answer.json())["error"]
