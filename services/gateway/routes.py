"""Every route the SDKs call, declared once: its path, method, handler, family (which decides the
error shape) and its operation in the OpenAPI document (``services.gateway.openapi``). The app
(``services.gateway.app``), the error middleware and the document are built from this table."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp.typedefs import Handler

from services.gateway import config, halo, posthog, segment, solute, traffical, xaiku
from sluice.wire.segment import CALLS as SEGMENT_CALLS


@dataclass(frozen=True)
class Route:
    path: str
    family: str
    handler: Handler
    operation: str
    """Its operation's name in ``services.gateway.openapi.operations`` (two paths may share one)."""
    method: str = "POST"
    plain: bool = False
    """Neither an ingest POST nor a configuration GET with a key: PostHog's capture by GET and the
    start-up calls posthog-js makes (``/flags``, ``/decide``, ``/array/{token}/config``)."""


ROUTES = (
    Route("/api/sdk/events", "halo", halo.events, "halo.events"),
    Route("/api/sdk/users/identify", "halo", halo.identify_user, "halo.identify_user"),
    Route("/api/sdk/companies/identify", "halo", halo.identify_company, "halo.identify_company"),
    Route("/api/v1/analytics", "xaiku", xaiku.handle, "xaiku.analytics"),
    Route("/api/events", "solute", solute.handle, "solute.batch"),
    Route("/v1/events", "traffical", traffical.handle, "traffical.events"),
    Route("/v1/events/batch", "traffical", traffical.handle, "traffical.events"),
    # Segment's HTTP Tracking API, and analytics.js's short paths for the same calls
    *(Route(f"/v1/{call}", "segment", segment.handle, "segment.call") for call in SEGMENT_CALLS),
    *(Route(f"/v1/{name}", "segment", segment.handle, "segment.batch") for name in ("batch", "b", "import")),
    # PostHog's capture API (trailing slash or not, POST or GET), and posthog-js's start-up calls
    *(
        Route(path + end, "posthog", posthog.capture, "posthog.capture", method, plain=method == "GET")
        for path in posthog.CAPTURE_PATHS
        for end in ("", "/")
        for method in ("POST", "GET")
    ),
    *(
        Route(path + end, "posthog", posthog.flags, "posthog.flags", method, plain=True)
        for path in posthog.FLAGS_PATHS
        for end in ("", "/")
        for method in ("POST", "GET")
    ),
    Route("/array/{token}/config", "posthog", posthog.remote_config, "posthog.config", "GET", plain=True),
    Route("/array/{token}/config.js", "posthog", posthog.remote_config_js, "posthog.config_js", "GET", plain=True),
    # the GET routes the SDKs fetch their configuration from
    Route("/v1/config/{projectId}", "traffical", config.traffical_config, "traffical.config", "GET"),
    Route("/api/v1/experiments", "xaiku", config.xaiku_experiments, "xaiku.experiments", "GET"),
)

ROUTE_FAMILY: dict[str, str] = {
    route.path: route.family for route in ROUTES if route.method == "POST" and not route.plain
}
"""The ingest routes (POST), by path."""
CONFIG_ROUTES: dict[str, str] = {
    route.path: route.family for route in ROUTES if route.method == "GET" and not route.plain
}
"""The configuration routes (GET), by path pattern."""
PLAIN_ROUTES: dict[str, str] = {route.path: route.family for route in ROUTES if route.plain}
"""The other routes (``Route.plain``), by path pattern."""
_PREFIXES = [(route.path.split("{", 1)[0], route.family) for route in ROUTES if "{" in route.path]


def family_of(path: str) -> str:
    """The family whose error shape answers a request for ``path`` ("" for no SDK's route)."""
    path = path.rstrip("/") or "/"
    if family := ROUTE_FAMILY.get(path) or CONFIG_ROUTES.get(path) or PLAIN_ROUTES.get(path):
        return family
    return next((family for prefix, family in _PREFIXES if path.startswith(prefix)), "")
