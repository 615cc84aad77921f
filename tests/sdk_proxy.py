"""A recording HTTP proxy between an SDK and the gateway, for the SDK tests.

It forwards every request as it came (method, path, query, headers, body) and answers with the
gateway's answer, and records what it saw: which requests the SDK made and the status each got.
``fail_first`` makes it lose the gateway's answer to the first matching request and answer 503
instead — the gateway has made the events durable, the SDK believes they are lost and sends the
same batch again: the retry the pipeline must not count twice.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"}


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    status: int
    """The status the SDK got (503 where ``fail_first`` lost the gateway's answer)."""
    gateway_status: int
    content_type: str
    content_encoding: str
    size: int
    gzipped: bool = False
    """The body starts with gzip's magic bytes, whatever the headers say."""
    fetch_mode: str = ""
    """``Sec-Fetch-Mode`` from a browser: ``no-cors`` for a ``navigator.sendBeacon`` of a safelisted type."""

    def line(self) -> str:
        parts = [self.method, self.path, str(self.status)]
        if self.status != self.gateway_status:
            parts.append(f"(gateway: {self.gateway_status})")
        parts += [f"{self.content_type or '-'}", f"{self.content_encoding or '-'}", f"{self.size} B"]
        if self.gzipped and not self.content_encoding:
            parts.append("(gzip unannounced)")
        if self.fetch_mode:
            parts.append(f"mode={self.fetch_mode}")
        return " ".join(parts)


class SdkProxy:
    def __init__(self, target: str, fail_first: Callable[[str, str], bool] | None = None) -> None:
        self.target = urlsplit(target)
        self.fail_first = fail_first
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._failed = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def lines(self) -> list[str]:
        return [s.line() for s in self.seen]

    def _should_fail(self, method: str, path: str) -> bool:
        with self._lock:
            if self._failed or self.fail_first is None or not self.fail_first(method, path):
                return False
            self._failed = True
            return True

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self) -> None:
                body = self._body()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                connection = http.client.HTTPConnection(proxy.target.netloc, timeout=30)
                try:
                    connection.request(self.command, self.path, body=body or None, headers=headers)
                    answer = connection.getresponse()
                    data = answer.read()
                    status, answer_headers = answer.status, answer.getheaders()
                finally:
                    connection.close()
                sent = status
                if status < 300 and proxy._should_fail(self.command, self.path):
                    sent, data = 503, b'{"error": "answer lost on the way back (test proxy)"}'
                    answer_headers = [(k, v) for k, v in answer_headers if k.lower().startswith("access-control")] + [
                        ("Content-Type", "application/json"),
                        ("Retry-After", "0"),
                    ]
                proxy.seen.append(Seen(
                    self.command, self.path, sent, status, self.headers.get("Content-Type", ""),
                    self.headers.get("Content-Encoding", ""), len(body),
                    body.startswith(b"\x1f\x8b"), self.headers.get("Sec-Fetch-Mode", ""),
                ))  # fmt: skip
                self.send_response(sent)
                for name, value in answer_headers:
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_OPTIONS = _forward

        return Handler


@contextmanager
def sdk_proxy(target: str, fail_first: Callable[[str, str], bool] | None = None) -> Iterator[SdkProxy]:
    proxy = SdkProxy(target, fail_first)
    thread = threading.Thread(target=proxy.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.server.shutdown()
        proxy.server.server_close()
        thread.join(5)
