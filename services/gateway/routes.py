"""Every route the SDKs call, declared once: its path, method, handler, family (which decides the
error shape) and its operation in the OpenAPI document (``services.gateway.openapi``). The app
(``services.gateway.app``), the error middleware and the document are built from this table."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp.typedefs import Handler

from services.gateway import config, halo, solute, traffical, xaiku


@dataclass(frozen=True)
class Route:
    path: str
    family: str
    handler: Handler
    operation: str
    """Its operation's name in ``services.gateway.openapi.operations`` (two paths may share one)."""
    method: str = "POST"


ROUTES = (
    Route("/api/sdk/events", "halo", halo.events, "halo.events"),
    Route("/api/sdk/users/identify", "halo", halo.identify_user, "halo.identify_user"),
    Route("/api/sdk/companies/identify", "halo", halo.identify_company, "halo.identify_company"),
    Route("/api/v1/analytics", "xaiku", xaiku.handle, "xaiku.analytics"),
    Route("/api/events", "solute", solute.handle, "solute.batch"),
    Route("/v1/events", "traffical", traffical.handle, "traffical.events"),
    Route("/v1/events/batch", "traffical", traffical.handle, "traffical.events"),
    # the GET routes the SDKs fetch their configuration from
    Route("/v1/config/{projectId}", "traffical", config.traffical_config, "traffical.config", "GET"),
    Route("/api/v1/experiments", "xaiku", config.xaiku_experiments, "xaiku.experiments", "GET"),
)

ROUTE_FAMILY: dict[str, str] = {route.path: route.family for route in ROUTES if route.method == "POST"}
"""The ingest routes (POST), by path."""
CONFIG_ROUTES: dict[str, str] = {route.path: route.family for route in ROUTES if route.method == "GET"}
"""The configuration routes (GET), by path pattern."""
_PREFIXES = [(route.path.split("{", 1)[0], route.family) for route in ROUTES if "{" in route.path]


def family_of(path: str) -> str:
    """The family whose error shape answers a request for ``path`` ("" for no SDK's route)."""
    path = path.rstrip("/") or "/"
    if family := ROUTE_FAMILY.get(path) or CONFIG_ROUTES.get(path):
        return family
    return next((family for prefix, family in _PREFIXES if path.startswith(prefix)), "")
