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


def family_of(path: str) -> str:
    return ROUTE_FAMILY.get(path.rstrip("/") or "/", "")
