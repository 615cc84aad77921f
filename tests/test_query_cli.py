"""``sluice query`` prints as clickhouse-client does: ClickHouse format names, TabSeparated without
a header into a pipe, PrettyCompact on a terminal; and it never loads the worker (or Faust)."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from commands.cli import main
from commands.query import PIPE_FORMAT, TERMINAL_FORMAT, chosen_format
from pipeline.warehouse import ChdbWarehouse
from pipeline.warehouse.formats import output_format

TABLE = "   ┌─count()─┐\n1. │       1 │\n   └─────────┘\n".encode()
ANSWERS = {
    "TabSeparated": b"1\n", "TSVWithNames": b"count()\n1\n", "TabSeparatedWithNames": b"count()\n1\n",
    "PrettyCompact": TABLE, "JSONEachRow": b'{"count()":"1"}\n', "CSV": b"1\n",
}  # fmt: skip


class FakeWorker:
    """The worker's ``POST /query?format=…``, answering ``SELECT count()`` in the formats it knows."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        worker = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                fmt = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["format"][0]
                self.rfile.read(int(self.headers["Content-Length"]))
                worker.asked.append(fmt)
                body = ANSWERS.get(fmt, b"unsupported format\n")
                self.send_response(200 if fmt in ANSWERS else 400)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWorker]:
    fake = FakeWorker()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("SLUICE_WORKER_URL", fake.url)
    monkeypatch.delenv("SLUICE_CLICKHOUSE_URL", raising=False)
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


class Stdout(io.TextIOWrapper):
    def __init__(self, terminal: bool) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8")
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal

    def printed(self) -> bytes:
        self.flush()
        out: bytes = self.buffer.getvalue()  # type: ignore[attr-defined]
        return out


def run(monkeypatch: pytest.MonkeyPatch, terminal: bool, *args: str) -> tuple[int, bytes]:
    stdout = Stdout(terminal)
    monkeypatch.setattr(sys, "stdout", stdout)
    code = main(["query", *args, "SELECT count() FROM events"])
    return code, stdout.printed()


def test_piped_it_is_tab_separated_without_a_header(worker: FakeWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(monkeypatch, False) == (0, b"1\n")
    assert worker.asked == ["TabSeparated"]


def test_on_a_terminal_it_is_a_pretty_compact_table(worker: FakeWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(monkeypatch, True) == (0, TABLE)
    assert worker.asked == ["PrettyCompact"]


@pytest.mark.parametrize(
    ("name", "asked"),
    [
        ("TabSeparatedWithNames", "TabSeparatedWithNames"),
        ("TabSeparated", "TabSeparated"),
        ("CSV", "CSV"),
        ("tsv", "TSVWithNames"),  # the CLI's names before, kept for scripts
        ("json", "JSONEachRow"),
    ],
)
def test_format_takes_clickhouse_names(
    worker: FakeWorker, monkeypatch: pytest.MonkeyPatch, name: str, asked: str
) -> None:
    assert run(monkeypatch, False, "--format", name) == (0, ANSWERS[asked])
    assert worker.asked == [asked]


def test_a_format_the_worker_lacks_is_its_error(
    worker: FakeWorker, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(monkeypatch, False, "--format", "Parquet")[0] == 1
    assert "unsupported format" in capsys.readouterr().err
    assert run(monkeypatch, False, "--format", "not a format")[0] == 1
    assert worker.asked == ["Parquet"]


def test_the_worker_renders_both_defaults() -> None:
    assert output_format(TERMINAL_FORMAT) == TERMINAL_FORMAT and output_format(PIPE_FORMAT) == PIPE_FORMAT
    assert chosen_format(None, True) == "PrettyCompact" and chosen_format(None, False) == "TabSeparated"


def test_query_loads_neither_the_worker_nor_its_stream_code(worker: FakeWorker) -> None:
    program = (
        "import sys\nfrom commands.cli import main\n"
        "assert main(['query', 'SELECT count() FROM events']) == 0\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('faust', 'mode') or m == 'pipeline.worker']\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "1\n", "")


@pytest.mark.clickhouse
def test_the_embedded_warehouse_draws_a_plain_table(warehouse: ChdbWarehouse) -> None:
    """What a terminal gets: ClickHouse's own PrettyCompact, without colour escapes."""
    assert warehouse.execute("SELECT count() FROM numbers(3)", "PrettyCompact") == TABLE.replace(b"1 ", b"3 ", 1)
    assert warehouse.execute("SELECT count() FROM numbers(3)", "TabSeparated") == b"3\n"
