"""``sluice warehouse`` as real ClickHouse clients use it, unmodified, from their registries:
clickhouse-connect (and SQLAlchemy through its dialect), @clickhouse/client under Node and the
JDBC driver with its default URL (``make clients`` fetches the last two into .sluice/clients).
Every insert counts the rows that landed; one server serves the module.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pandas as pd  # type: ignore[import-untyped]
import pyarrow as pa  # type: ignore[import-untyped]
import pytest
import sqlalchemy as sa

from pipeline.warehouse.http import codec
from tests.processes import warehouse_server

pytestmark = pytest.mark.clickhouse

REPO = Path(__file__).resolve().parent.parent
CLIENTS = REPO / ".sluice" / "clients"


class Server:
    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.url = url
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 8123
        self.user = parsed.username or ""
        self.password = parsed.password or ""
        self.plain = f"http://{self.host}:{self.port}"

    def client(self, **options: Any) -> Any:
        return clickhouse_connect.get_client(
            host=self.host, port=self.port, username=self.user, password=self.password, **options
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with warehouse_server(tmp_path_factory.mktemp("warehouse")) as url:
        yield Server(url)


def make_table(client: Any, name: str) -> str:
    client.command(f"DROP TABLE IF EXISTS {name}")
    client.command(f"CREATE TABLE {name} (id UInt32, name String, at DateTime) ENGINE = MergeTree ORDER BY id")
    return name


def count(client: Any, table: str) -> int:
    return int(client.command(f"SELECT count() FROM {table}"))


@pytest.mark.parametrize("compress", [True, False], ids=["compressed", "plain"])
def test_clickhouse_connect_inserts_land_and_are_counted(server: Server, compress: bool) -> None:
    client = server.client(compress=compress)
    table = make_table(client, f"cc_insert_{int(compress)}")
    at = datetime.datetime(2024, 1, 2, 3, 4, 5)

    summary = client.insert(table, [[1, "one", at], [2, "it's", at]], column_names=["id", "name", "at"])
    assert (summary.written_rows, count(client, table)) == (2, 2)

    frame = pd.DataFrame({"id": [3, 4, 5], "name": ["a", "b", "ü"], "at": [at] * 3})
    assert client.insert_df(table, frame).written_rows == 3
    assert count(client, table) == 5

    arrow = pa.table(
        {"id": pa.array([6, 7], pa.uint32()), "name": ["x", "y"], "at": pa.array([at] * 2, pa.timestamp("s"))}
    )
    assert client.insert_arrow(table, arrow).written_rows == 2
    assert count(client, table) == 7

    rows = client.query(f"SELECT id, name, at FROM {table} ORDER BY id").result_rows
    assert rows[1] == (2, "it's", at) and rows[4][1] == "ü"
    assert client.query_df(f"SELECT * FROM {table}").shape == (7, 3)
    assert client.query_arrow(f"SELECT * FROM {table}").num_rows == 7


def test_clickhouse_connect_server_side_parameters(server: Server) -> None:
    client = server.client()
    table = make_table(client, "cc_params")
    client.insert(
        table, [[i, f"n{i}", datetime.datetime(2024, 1, 1)] for i in range(10)], column_names=["id", "name", "at"]
    )
    result = client.query(
        f"SELECT id FROM {table} WHERE id > {{low:UInt32}} AND name != {{skip:String}} ORDER BY id",
        parameters={"low": 5, "skip": "n7"},
    )
    assert [r[0] for r in result.result_rows] == [6, 8, 9]
    quoted = client.query("SELECT {s:String}, {a:Array(UInt8)}", parameters={"s": "it's \\ \t", "a": [1, 2]})
    assert quoted.result_rows == [("it's \\ \t", [1, 2])]


def test_a_sessions_set_stays_in_it_and_nobody_makes_the_server_read_only(server: Server) -> None:
    a = server.client()  # clickhouse-connect makes a session of its own
    b = server.client()
    table = make_table(b, "cc_sessions")
    a.command("SET max_threads = 3")
    assert int(a.command("SELECT getSetting('max_threads')")) == 3
    assert int(b.command("SELECT getSetting('max_threads')")) != 3

    a.command("SET readonly = 1")
    with pytest.raises(Exception, match="164"):
        a.command(f"INSERT INTO {table} VALUES (1, 'a', now())")
    with pytest.raises(Exception, match="164"):
        a.command("SET readonly = 0")
    with pytest.raises(Exception, match="164"):  # nor can its URL lift it
        a.command(f"INSERT INTO {table} VALUES (1, 'a', now())", settings={"readonly": 0})
    # the one that asked for read-only is; nobody else is
    b.command(f"INSERT INTO {table} VALUES (2, 'b', now())")
    b.command("CREATE TABLE IF NOT EXISTS cc_sessions_2 (x UInt8) ENGINE = Memory")
    b.command("DROP TABLE cc_sessions_2")
    assert count(b, table) == 1
    # a readonly setting in the URL lasts one request
    with pytest.raises(Exception, match="164"):
        b.command(f"INSERT INTO {table} VALUES (3, 'c', now())", settings={"readonly": 1})
    b.command(f"INSERT INTO {table} VALUES (4, 'd', now())")
    assert count(b, table) == 2


def test_sqlalchemy_through_clickhouse_connect(server: Server) -> None:
    engine = sa.create_engine(f"clickhousedb://{server.user}:{server.password}@{server.host}:{server.port}/default")
    with engine.connect() as connection:
        connection.execute(sa.text("DROP TABLE IF EXISTS sa_t"))
        connection.execute(sa.text("CREATE TABLE sa_t (id UInt32, name String) ENGINE = MergeTree ORDER BY id"))
        table = sa.Table("sa_t", sa.MetaData(), autoload_with=engine)
        assert [c.name for c in table.columns] == ["id", "name"]
        connection.execute(table.insert(), [{"id": 1, "name": "a"}, {"id": 2, "name": "it's"}])
        assert connection.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 2
        found = connection.execute(sa.text("SELECT name FROM sa_t WHERE id = :id"), {"id": 2}).all()
        assert [tuple(r) for r in found] == [("it's",)]
        inspector = sa.inspect(engine)
        assert "sa_t" in inspector.get_table_names()
        assert "default" in inspector.get_schema_names()


def test_node_client(server: Server) -> None:
    node = shutil.which("node")
    modules = CLIENTS / "node" / "node_modules"
    if node is None or not (modules / "@clickhouse" / "client").exists():
        pytest.skip("needs node and `make clients` (the Node client in .sluice/clients/node)")
    env = {
        **os.environ, "SLUICE_CH_URL": server.plain, "SLUICE_CH_PASSWORD": server.password,
        "NODE_PATH_CLIENTS": str(modules), "SLUICE_CH_TABLE": "node_t",
    }  # fmt: skip
    run = subprocess.run(
        [node, str(REPO / "tests" / "clients" / "node_client.mjs")], env=env, capture_output=True, timeout=120
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    out = json.loads(run.stdout)
    assert out["version"] == "1.23.1"
    assert out["ping"] and out["pingSelect"]
    assert out["insertSummary"]["written_rows"] == "2"
    assert out["countAfterInsert"] == [{"n": 2}]
    assert out["countCompressed"] == [{"n": 3}]
    assert out["params"] == [{"id": 2, "name": "it's"}]
    assert out["csv"] == "1\n2\n3\n"
    assert out["json"] == [{"id": 1}, {"id": 2}, {"id": 3}]
    assert out["streamed"] == 1000
    assert (out["syntaxError"]["code"], out["syntaxError"]["type"]) == ("62", "SYNTAX_ERROR")
    assert (out["unknownTable"]["code"], out["unknownTable"]["type"]) == ("60", "UNKNOWN_TABLE")
    assert out["badInsert"]["type"] == "CANNOT_PARSE_INPUT_ASSERTION_FAILED"
    assert out["countAfterBadInsert"] == [{"n": 3}]
    assert (out["authError"]["code"], out["authError"]["type"]) == ("516", "AUTHENTICATION_FAILED")
    assert out["sessionSetting"] == [{"v": 3}] and out["otherSetting"] != [{"v": 3}]
    assert (out["sessionReadonly"]["code"], out["sessionReadonly"]["type"]) == ("164", "READONLY")
    assert out["othersWrite"]["written_rows"] == "1"


@pytest.fixture(scope="module")
def jdbc(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    java, javac = shutil.which("java"), shutil.which("javac")
    jars = CLIENTS / "jdbc"
    if java is None or javac is None or not (jars / "clickhouse-jdbc-0.10.0.jar").exists():
        pytest.skip("needs java, javac and `make clients` (the JDBC driver in .sluice/clients/jdbc)")
    classes = tmp_path_factory.mktemp("jdbc")
    classpath = f"{jars}/*"
    subprocess.run(
        [javac, "-d", str(classes), "-cp", classpath, str(REPO / "tests" / "clients" / "JdbcClient.java")],
        check=True, timeout=120,
    )  # fmt: skip
    return java, f"{classes}{os.pathsep}{classpath}"


@pytest.mark.parametrize(
    "options",
    ["", "?decompress=true", "?client.use_http_compression=true"],
    ids=["default URL", "compressed requests", "HTTP compression"],
)
def test_jdbc_driver(server: Server, jdbc: tuple[str, str], options: str) -> None:
    java, classpath = jdbc
    table = f"jdbc_t{len(options)}"
    url = f"jdbc:clickhouse://{server.host}:{server.port}/{options}"
    run = subprocess.run(
        [java, "-cp", classpath, "JdbcClient", url, server.password, table], capture_output=True, timeout=120
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    out = dict(line.split("\t", 1) for line in run.stdout.decode().splitlines())
    assert out["driver"] == "ClickHouse JDBC Driver 0.10.0"
    assert out["product"].startswith("ClickHouse ")
    assert out["valid"] == "true"
    assert "default" in out["schemas"]
    assert out["tables"] == f"[{table}]"
    assert (out["columns"], out["types"]) == ("[id, name, score]", "[UInt32, String, Float64]")
    assert (out["batch"], out["single"], out["count"]) == ("3", "1", "4")
    assert out["selected"] == "it's|3.0"
    assert out["numbers"] == "100000|4999950000"
    assert out["error"].startswith("60|Code: 60.") and "(UNKNOWN_TABLE)" in out["error"]


# The HTTP interface as ClickHouse documents it, with no client library in between.


def http(
    server: Server,
    params: dict[str, str],
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, dict[str, str], bytes]:
    """One request with the credential in ClickHouse's headers: (status, headers, body)."""
    request = urllib.request.Request(
        f"{server.plain}/?{urllib.parse.urlencode(params)}",
        data=body if method == "POST" else None,
        method=method,
        headers={"X-ClickHouse-User": server.user, "X-ClickHouse-Key": server.password, **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def sql(server: Server, text: str, **params: str) -> bytes:
    status, _, body = http(server, params, text.encode())
    assert status == 200, body
    return body


ERROR = re.compile(rb"^Code: (\d+)\. DB::Exception: .*\(([A-Z][A-Z0-9_]+)\) \(version [^)]+\)\n$", re.DOTALL)


def assert_error(reply: tuple[int, dict[str, str], bytes], status: int, code: int) -> None:
    got_status, headers, body = reply
    match = ERROR.match(body)
    assert match, body
    assert (got_status, int(match.group(1)), headers["X-ClickHouse-Exception-Code"]) == (status, code, str(code))


@pytest.fixture
def table(server: Server, request: pytest.FixtureRequest) -> str:
    name = "http_" + re.sub(r"\W", "_", request.node.name)[:50]
    sql(server, f"DROP TABLE IF EXISTS {name}")
    sql(server, f"CREATE TABLE {name} (id UInt32, name String) ENGINE = MergeTree ORDER BY id")
    return name


def rows_in(server: Server, table: str) -> int:
    return int(sql(server, f"SELECT count() FROM {table}"))


NATIVE_ROWS = 50


@pytest.mark.parametrize("encoding", ["identity", "gzip", "deflate", "zstd", "lz4", "br", "xz"])
def test_binary_data_in_any_content_encoding_lands(server: Server, table: str, encoding: str) -> None:
    native = sql(
        server, f"SELECT toUInt32(number) AS id, toString(number) AS name FROM numbers({NATIVE_ROWS}) FORMAT Native"
    )
    body = codec.ENCODERS[encoding](native) if encoding != "identity" else native
    status, headers, _ = http(
        server, {"query": f"INSERT INTO {table} FORMAT Native"}, body, {"Content-Encoding": encoding}
    )
    assert status == 200
    assert json.loads(headers["X-ClickHouse-Summary"])["written_rows"] == str(NATIVE_ROWS)
    assert rows_in(server, table) == NATIVE_ROWS


def test_rowbinary_that_is_not_utf8_lands_byte_for_byte(server: Server, table: str) -> None:
    # RowBinary: UInt32 little-endian, then a String as a varint length and its bytes (here not UTF-8)
    data = (7).to_bytes(4, "little") + bytes([3, 0xFF, 0xFE, 0x00])
    status, headers, _ = http(server, {"query": f"INSERT INTO {table} FORMAT RowBinary"}, data)
    assert status == 200 and json.loads(headers["X-ClickHouse-Summary"])["written_rows"] == "1"
    assert sql(server, f"SELECT hex(name) FROM {table}") == b"FFFE00\n"


def test_a_body_it_cannot_decode_is_an_error_and_nothing_lands(server: Server, table: str) -> None:
    rows = b'{"id": 1, "name": "a"}\n'
    unknown = http(server, {"query": f"INSERT INTO {table} FORMAT JSONEachRow"}, rows, {"Content-Encoding": "compress"})
    assert_error(unknown, 400, 89)
    corrupt = http(
        server, {"query": f"INSERT INTO {table} FORMAT JSONEachRow"}, b"not gzip", {"Content-Encoding": "gzip"}
    )
    assert_error(corrupt, 400, 271)
    bad_rows = http(server, {"query": f"INSERT INTO {table} FORMAT JSONEachRow"}, rows + b'{"id": "x"}\n')
    assert_error(bad_rows, 400, 27)
    assert rows_in(server, table) == 0


def test_sql_that_is_not_utf8_is_a_400(server: Server) -> None:
    assert_error(http(server, {}, b"SELECT '\xff\xfe'"), 400, 36)


def test_insert_with_inline_data_after_format_in_the_body(server: Server, table: str) -> None:
    body = f'INSERT INTO {table} FORMAT JSONEachRow\n{{"id": 1, "name": "a"}}\n{{"id": 2, "name": "b"}}\n'
    status, headers, _ = http(server, {}, body.encode())
    assert status == 200 and json.loads(headers["X-ClickHouse-Summary"])["written_rows"] == "2"
    status, headers, _ = http(server, {"query": f"INSERT INTO {table} VALUES"}, b"(3, 'c'), (4, 'it''s')")
    assert status == 200 and json.loads(headers["X-ClickHouse-Summary"])["written_rows"] == "2"
    assert sql(server, f"SELECT name FROM {table} WHERE id = 4 FORMAT TSVRaw") == b"it's\n"


def test_the_response_names_the_format_it_returns(server: Server) -> None:
    _, headers, body = http(server, {}, b"SELECT 1 AS x", {"X-ClickHouse-Format": "JSONEachRow"})
    assert (headers["X-ClickHouse-Format"], body) == ("JSONEachRow", b'{"x":1}\n')
    _, headers, body = http(server, {"default_format": "JSONEachRow"}, b"SELECT 1 AS x FORMAT CSVWithNames")
    assert (headers["X-ClickHouse-Format"], body) == ("CSVWithNames", b'"x"\n1\n')
    _, headers, body = http(server, {}, b"SELECT 1 AS x")
    assert (headers["X-ClickHouse-Format"], body) == ("TabSeparated", b"1\n")


def test_query_parameters(server: Server) -> None:
    params = {"param_n": "41", "param_s": "it's \\\\ fine", "param_a": "[1,2]"}
    body = sql(server, "SELECT {n:UInt32} + 1, {s:String}, length({a:Array(UInt8)}) FORMAT TSVRaw", **params)
    assert body == b"42\tit's \\ fine\t2\n"
    assert_error(http(server, {}, b"SELECT {n:UInt32}"), 400, 456)


def test_database_header_and_use_in_a_session(server: Server) -> None:
    sql(server, "CREATE DATABASE IF NOT EXISTS http_db")
    sql(server, "CREATE TABLE IF NOT EXISTS http_db.only_here (x UInt8) ENGINE = Memory")
    assert http(server, {}, b"SELECT currentDatabase()", {"X-ClickHouse-Database": "http_db"})[2] == b"http_db\n"
    assert sql(server, "USE http_db", session_id="s-use") == b""
    assert sql(server, "SELECT currentDatabase()", session_id="s-use") == b"http_db\n"
    assert sql(server, "SELECT currentDatabase()", session_id="s-other") == b"default\n"
    assert sql(server, "SELECT currentDatabase()") == b"default\n"
    assert_error(http(server, {"session_id": "never-made", "session_check": "1"}, b"SELECT 1"), 404, 372)


def test_compressed_answers(server: Server) -> None:
    query = b"SELECT number FROM numbers(1000) FORMAT TSV"
    expected = b"".join(b"%d\n" % i for i in range(1000))
    for encoding in ("gzip", "zstd", "br", "lz4"):
        _, headers, body = http(server, {"enable_http_compression": "1"}, query, {"Accept-Encoding": encoding})
        assert headers["Content-Encoding"] == encoding
        assert codec.DECODERS[encoding](body) == expected
    _, headers, body = http(server, {}, query, {"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in headers and body == expected
    _, _, framed = http(server, {"compress": "1"}, query)
    assert codec.unframe(framed) == expected


def test_bodies_in_clickhouse_compressed_blocks(server: Server, table: str) -> None:
    rows = b"".join(b'{"id": %d, "name": "n"}\n' % i for i in range(10))
    query = {"query": f"INSERT INTO {table} FORMAT JSONEachRow", "decompress": "1"}
    for method in (codec.LZ4, codec.ZSTD):
        status, headers, _ = http(server, query, codec.frame(rows, method))
        assert status == 200 and json.loads(headers["X-ClickHouse-Summary"])["written_rows"] == "10"
    corrupted = bytearray(codec.frame(rows))
    corrupted[-1] ^= 0xFF
    assert_error(http(server, query, bytes(corrupted)), 400, 40)
    assert_error(http(server, query, rows), 400, 271)
    assert rows_in(server, table) == 20


def test_get_reads_and_never_writes(server: Server, table: str) -> None:
    status, _, body = http(server, {"query": "SELECT 1"}, method="GET")
    assert (status, body) == (200, b"1\n")
    assert_error(http(server, {"query": f"INSERT INTO {table} VALUES (1, 'a')"}, method="GET"), 403, 164)
    assert_error(http(server, {"query": f"DROP TABLE {table}"}, method="GET"), 403, 164)
    assert_error(http(server, {"query": "SELECT 1", "readonly": "0"}, method="GET", headers={"Origin": "x"}), 403, 497)
    assert rows_in(server, table) == 0


def test_one_statement_a_request(server: Server, table: str) -> None:
    assert_error(http(server, {}, f"SELECT 1; INSERT INTO {table} VALUES (1, 'a')".encode()), 400, 62)
    assert sql(server, "SELECT 1;  -- a trailing semicolon and comment are fine\n") == b"1\n"
    assert rows_in(server, table) == 0


def test_a_url_setting_lasts_one_request(server: Server) -> None:
    assert sql(server, "SELECT getSetting('max_threads')", max_threads="3") == b"3\n"
    assert sql(server, "SELECT getSetting('max_threads')") != b"3\n"
    # the statement's own SETTINGS win over the URL's, as in ClickHouse
    assert sql(server, "SELECT getSetting('max_threads') SETTINGS max_threads = 2", max_threads="3") == b"2\n"
    assert_error(http(server, {"no_such_setting": "1"}, b"SELECT 1"), 400, 115)


def test_an_inserts_own_settings_and_the_urls_apply_to_it(server: Server, table: str) -> None:
    rows = b'{"id": 1, "name": "a"}\n{"id": "bad"}\n{"id": 2, "name": "b"}\n'
    assert_error(http(server, {"query": f"INSERT INTO {table} FORMAT JSONEachRow"}, rows), 400, 27)
    assert rows_in(server, table) == 0
    own = f"INSERT INTO {table} SETTINGS input_format_allow_errors_num = 1 FORMAT JSONEachRow"
    status, headers, _ = http(server, {"query": own, "max_threads": "2"}, rows)
    assert status == 200 and json.loads(headers["X-ClickHouse-Summary"])["written_rows"] == "2"
    status, headers, _ = http(
        server, {"query": f"INSERT INTO {table} FORMAT JSONEachRow", "input_format_allow_errors_num": "1"}, rows
    )
    assert status == 200 and json.loads(headers["X-ClickHouse-Summary"])["written_rows"] == "2"
    assert rows_in(server, table) == 4


def test_settings_that_name_a_path_are_refused_wherever_they_come_from(server: Server, table: str) -> None:
    assert_error(http(server, {"format_schema": "/etc/passwd"}, b"SELECT 1"), 403, 497)
    assert_error(http(server, {"session_id": "s-path"}, b"SET format_schema = '/etc/passwd'"), 403, 497)
    inline = f"INSERT INTO {table} SETTINGS format_schema = '/etc/passwd' FORMAT JSONEachRow"
    assert_error(http(server, {"query": inline}, b'{"id": 1, "name": "a"}\n'), 403, 497)
    assert rows_in(server, table) == 0


def test_a_requests_settings_never_become_part_of_a_view(server: Server) -> None:
    sql(server, "CREATE VIEW http_view AS SELECT getSetting('max_threads') AS m", max_threads="3")
    try:
        assert b"SETTINGS" not in sql(server, "SHOW CREATE TABLE http_view FORMAT TSVRaw")
        assert sql(server, "SELECT m FROM http_view") != b"3\n"
    finally:
        sql(server, "DROP VIEW http_view")


def test_no_statement_reaches_files_or_the_network_through_sluice_warehouse(server: Server, tmp_path: Path) -> None:
    """Issue 24's finding 1 on the writable server: the operator's password lets a client
    create tables and insert, never read the worker's environment, write a file or fetch a URL."""
    client = server.client()
    written = tmp_path / "x.pth"
    attacks = [
        "SELECT file('/proc/self/environ')",
        "DESCRIBE file('/etc/passwd', 'TSVWithNames')",
        f"DESCRIBE url('{server.plain}/ping', 'TSVWithNames')",
        f"SELECT 'import os' INTO OUTFILE '{written}' APPEND FORMAT TSVRaw",
        f"INSERT INTO FUNCTION file('{written}', 'TSVRaw', 'a String') SELECT 'import os'",
        "CREATE TABLE leak (a String) ENGINE = File(LineAsString, '/etc/passwd')",
        "CREATE DATABASE fs ENGINE = Filesystem('/')",
    ]
    for sql in attacks:
        with pytest.raises(clickhouse_connect.driver.exceptions.DatabaseError, match="ACCESS_DENIED"):
            client.command(sql)
    assert not written.exists()
    table = make_table(client, "after_attacks")  # and it still serves what clients do
    client.insert(table, [[1, "a"]], column_names=["id", "name"])
    assert count(client, table) == 1
