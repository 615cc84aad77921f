"""A TCP proxy that can cut its clients off, as a network partition does: while cut, bytes in
flight stop and new connections hang; healed, stuck connections are closed (their peers
reconnect) and new ones pass again. It runs on an event loop of its own, in a thread, so that a
test blocking its own loop (a subprocess, a sleep) does not stall the proxied traffic."""

from __future__ import annotations

import asyncio
import contextlib
import threading


class Partition:
    def __init__(self, listen_port: int, target_port: int) -> None:
        self.listen_port, self.target_port = listen_port, target_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._healed = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._waiting: set[asyncio.StreamWriter] = set()
        """Clients accepted while cut, not yet connected through (closed at stop)."""
        self._server: asyncio.Server | None = None
        self.held = 0
        """Bytes (and connections) that came while cut and were held back: a test waits on it to
        know that a client is in the middle of something (``holding``)."""

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    def partition(self) -> None:
        """Cut: from now on nothing passes, in either direction."""
        self._loop.call_soon_threadsafe(self._healed.clear)

    def holding(self) -> bool:
        """Whether a client sent anything since the cut (and waits for it to pass)."""
        return self.held > 0

    def heal(self) -> None:
        """Heal: the stuck connections are closed (as a real partition's would time out)."""
        self._loop.call_soon_threadsafe(self._heal)

    async def _start(self) -> None:
        self._healed.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.listen_port)

    async def _stop(self) -> None:
        """Close everything and let the loop finish closing it: a transport left half-closed
        when the loop stops is reported unclosed whenever it is collected, in whatever test."""
        if self._server is not None:
            self._server.close()
        self._close_all()
        for writer in self._waiting:
            writer.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.1)  # the transports' connection_lost callbacks run here

    def _heal(self) -> None:
        self._close_all()
        self._healed.set()

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._waiting.add(writer)
        if not self._healed.is_set():
            self.held += 1
        await self._healed.wait()
        self._waiting.discard(writer)
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
                if not self._healed.is_set():
                    self.held += len(data)
                await self._healed.wait()  # bytes in flight go nowhere while cut
                if writer not in self._writers:
                    return
                writer.write(data)
                await writer.drain()
        writer.close()
