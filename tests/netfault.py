"""A TCP proxy that can cut its clients off, as a network partition does: while cut, bytes in
flight stop and new connections hang; healed, stuck connections are closed (their peers
reconnect) and new ones pass again."""

from __future__ import annotations

import asyncio
import contextlib


class Partition:
    def __init__(self, listen_port: int, target_port: int) -> None:
        self.listen_port, self.target_port = listen_port, target_port
        self._healed = asyncio.Event()
        self._healed.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.listen_port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._close_all()

    def partition(self) -> None:
        self._healed.clear()

    def heal(self) -> None:
        self._close_all()  # as after a real partition: the old connections are dead
        self._healed.set()

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._healed.wait()
        try:
            target_reader, target_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, target_writer}
        await asyncio.gather(self._pipe(reader, target_writer), self._pipe(target_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, ConnectionError):
            while data := await reader.read(65536):
                await self._healed.wait()  # bytes in flight go nowhere while cut
                if writer not in self._writers:
                    return
                writer.write(data)
                await writer.drain()
        writer.close()
