"""``python -m tests.memory_gateway``: one gateway process with an in-memory sink and one key
(printed on stdout), configured from ``SLUICE_*`` — for tests that measure the process itself."""

from __future__ import annotations

from aiohttp import web

from services.gateway.app import build_app
from services.gateway.context import Gateway
from sluice.registry import Registry, key_record, new_key
from sluice.settings import Settings
from tests.memory_sink import MemorySink


def main() -> None:
    settings = Settings.from_env()
    registry = Registry()
    key, record = new_key("org_acme", "publishable", scopes=["sdk:write"])
    registry.apply(*key_record(record))
    print(key, flush=True)
    web.run_app(
        build_app(Gateway(settings, MemorySink(), registry)), host=settings.gateway_host, port=settings.gateway_port,
        print=None, access_log=None, keepalive_timeout=settings.client_timeout,
    )  # fmt: skip


if __name__ == "__main__":
    main()
