"""The requests the families' browser SDKs make, header for header: Traffical's js-client 0.17 and
@xaiku/browser 1.1.1 as read from their public sources, Solute and Halo as their reference pages
give them. What CORS preflights and golden tests are checked against. ``KEY`` is the page's key."""

from __future__ import annotations

from typing import NamedTuple

KEY = "{key}"


class SdkRequest(NamedTuple):
    method: str
    path: str
    headers: dict[str, str]
    """As the SDK sets them; ``{key}`` is the key. Browsers add Origin, and for a preflight,
    Access-Control-Request-Method and -Headers (the non-safelisted names, lowercased)."""

    def with_key(self, key: str) -> dict[str, str]:
        return {name: value.replace(KEY, key) for name, value in self.headers.items()}

    def preflight(self) -> dict[str, str]:
        """The preflight a browser sends before this request."""
        safelisted = {"accept", "accept-language", "content-language"}
        asked = sorted(n.lower() for n in self.headers if n.lower() not in safelisted)
        return {
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": self.method,
            "Access-Control-Request-Headers": ",".join(asked),
        }


JSON = "application/json"
SDK_REQUESTS: dict[str, SdkRequest] = {
    # Traffical js-client: EventLogger (batches, and the keepalive fetch on page hide: same headers)
    "traffical-events": SdkRequest(
        "POST", "/v1/events/batch", {"Content-Type": JSON, "Authorization": f"Bearer {KEY}"}
    ),
    # Traffical js-client: _fetchConfig, first fetch and refreshes (If-None-Match: the last ETag)
    "traffical-config": SdkRequest(
        "GET", "/v1/config/proj_test?env=production", {"Content-Type": JSON, "Authorization": f"Bearer {KEY}"}
    ),
    "traffical-config-refresh": SdkRequest(
        "GET",
        "/v1/config/proj_test?env=production",
        {"Content-Type": JSON, "Authorization": f"Bearer {KEY}", "If-None-Match": '"etag"'},
    ),
    # @xaiku/browser: its request helper always adds Accept and Content-Type: application/json
    "xaiku-analytics": SdkRequest(
        "POST", "/api/v1/analytics", {"Accept": JSON, "Content-Type": JSON, "X-public-key": KEY}
    ),
    "xaiku-experiments": SdkRequest(
        "GET",
        "/api/v1/experiments",
        {"Accept": JSON, "Content-Type": JSON, "X-public-key": KEY, "X-experiment-ids": "exp_a,exp_b"},
    ),
    "xaiku-experiments-test-mode": SdkRequest(
        "GET",
        "/api/v1/experiments",
        {
            "Accept": JSON,
            "Content-Type": JSON,
            "X-public-key": KEY,
            "X-experiment-ids": "exp_a",
            "X-xaiku-test": "true",
        },
    ),
    "solute-events": SdkRequest("POST", "/api/events", {"Content-Type": JSON, "X-Api-Key": KEY}),
    "halo-events": SdkRequest("POST", "/api/sdk/events", {"Content-Type": JSON, "Authorization": f"Bearer {KEY}"}),
    "halo-identify": SdkRequest(
        "POST", "/api/sdk/users/identify", {"Content-Type": JSON, "Authorization": f"Bearer {KEY}"}
    ),
}
