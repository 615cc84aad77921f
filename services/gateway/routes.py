"""Which SDK family each route belongs to (it decides the error shape)."""

from __future__ import annotations

ROUTE_FAMILY: dict[str, str] = {
    "/api/sdk/events": "halo",
    "/api/sdk/users/identify": "halo",
    "/api/sdk/companies/identify": "halo",
    "/api/v1/analytics": "xaiku",
    "/api/events": "solute",
    "/v1/events": "traffical",
    "/v1/events/batch": "traffical",
}

CONFIG_ROUTES: dict[str, str] = {
    "/v1/config/{projectId}": "traffical",
    "/api/v1/experiments": "xaiku",
}
"""The GET routes the SDKs fetch their configuration from."""


def family_of(path: str) -> str:
    path = path.rstrip("/") or "/"
    if path.startswith("/v1/config/"):
        return "traffical"
    return ROUTE_FAMILY.get(path) or CONFIG_ROUTES.get(path, "")
