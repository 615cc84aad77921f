"""CORS: every request the families' browser SDKs make passes its preflight, and a page can read
what it needs from the answer."""

from __future__ import annotations

import pytest

from tests.gateway_harness import Harness
from tests.sdk_requests import SDK_REQUESTS


@pytest.mark.parametrize("name", SDK_REQUESTS)
async def test_the_preflight_of_every_sdk_request_passes(gw: Harness, name: str) -> None:
    sdk = SDK_REQUESTS[name]
    response = await gw.client.options(sdk.path, headers=sdk.preflight())
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert sdk.method in response.headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    asked = set(sdk.preflight()["Access-Control-Request-Headers"].split(","))
    assert asked <= allowed, asked - allowed


async def test_headers_the_browser_asks_for_are_allowed_even_if_unknown(gw: Harness) -> None:
    response = await gw.client.options("/v1/events", headers={
        "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-request-id",
    })  # fmt: skip
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "x-request-id" in allowed and "if-none-match" in allowed
    assert response.headers["Vary"] == "Access-Control-Request-Headers"


@pytest.mark.parametrize("asked", ["bad header,x-ok", "x," * 40, "a" * 65])
async def test_a_malformed_request_headers_list_gets_the_sdk_list(gw: Harness, asked: str) -> None:
    response = await gw.client.options("/v1/events", headers={
        "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": asked,
    })  # fmt: skip
    allowed = response.headers["Access-Control-Allow-Headers"]
    assert "x-ok" not in allowed.lower() and "X-experiment-ids" in allowed


async def test_a_page_may_read_etag_and_retry_after(gw: Harness) -> None:
    response = await gw.client.get("/healthz")
    assert response.headers["Access-Control-Expose-Headers"] == "ETag, Retry-After"
