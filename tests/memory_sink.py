"""The gateway's record sink as a list: a test double for unit tests of the gateway, never for
integration tests (those use the real broker)."""

from __future__ import annotations

from services.gateway.sink import Record, SinkUnavailable


class MemorySink:
    """Keeps records in a list: for unit tests of the gateway, never for integration tests."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.fail = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send_all(self, records: list[Record]) -> None:
        if self.fail:
            raise SinkUnavailable("memory sink set to fail")
        self.records.extend(records)
