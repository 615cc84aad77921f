"""The worker's ``POST /query`` (the embedded warehouse's SQL door): a token, no browsers, one
reading statement under ``readonly = 1`` — no files, no URLs, no other servers, no writes."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipeline.warehouse.readonly import token_path
from pipeline.warehouse.remote import RemoteWarehouse
from sluice.settings import Settings
from tests.processes import running, sluice

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


def post(settings: Settings, sql: str, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(f"{settings.worker_url}/query?format=TSV", data=sql.encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_the_query_endpoint_is_authenticated_read_only_and_closed_to_browsers(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    with running(kafka_settings, "worker", f"{kafka_settings.worker_url}/healthz", tmp_path / "worker.log"):
        path = token_path(kafka_settings.home)
        assert path.stat().st_mode & 0o777 == 0o600
        token = path.read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        assert post(kafka_settings, "SELECT 1", {})[0] == 401
        assert post(kafka_settings, "SELECT 1", {"Authorization": "Bearer wrong"})[0] == 401
        assert post(kafka_settings, "SELECT 1", {**auth, "Origin": "https://evil.example"})[0] == 403
        assert post(kafka_settings, "SELECT 1", auth) == (200, "1\n")
        assert post(kafka_settings, "SELECT count() FROM events -- a comment", auth) == (200, "0\n")
        refused = [
            "SELECT * FROM file('/etc/passwd', 'LineAsString')",
            "SELECT * FROM file('/proc/self/environ', 'LineAsString')",
            "INSERT INTO FUNCTION file('/tmp/x.tsv', 'TSV', 'a String') SELECT 'x'",
            "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
            "SELECT * FROM remote('127.0.0.1:9000', system.one)",
            "DROP TABLE events",
            "CREATE TABLE owned (a Int8) ENGINE = Memory",
            "CREATE TABLE owned (a Int8) ENGINE = Memory; SELECT 1",
            "SELECT 1; DROP TABLE events",
            "INSERT INTO events (org_id) SELECT 'x'",
            "SELECT 1 SETTINGS readonly = 0",
            "SYSTEM SHUTDOWN",
            # the review's (issue 24): readonly = 1 alone let each of these through
            "SELECT file('/proc/self/environ')",
            "DESCRIBE file('/etc/passwd', 'TSVWithNames')",
            f"DESCRIBE url('{kafka_settings.worker_url}/healthz', 'TSVWithNames')",
            f"SELECT 'import os' INTO OUTFILE '{tmp_path / 'x.pth'}' APPEND FORMAT TSVRaw",
        ]
        for sql in refused:
            status, body = post(kafka_settings, sql, auth)
            assert status == 400, (sql, status, body)
        assert not (tmp_path / "x.pth").exists()
        assert post(kafka_settings, "EXISTS TABLE owned", auth) == (200, "0\n")
        assert post(kafka_settings, "SELECT count() FROM events", auth) == (200, "0\n")  # still there
        remote = RemoteWarehouse(kafka_settings.worker_url, token=token)  # values as param_name, bound
        tricky = "o'k \\ '); DROP TABLE events; --"
        sql = "SELECT length({s:String}), has({ids:Array(String)}, {s:String})"
        assert remote.execute(sql, "TSV", parameters={"s": tricky, "ids": [tricky]}) == f"{len(tricky)}\t1\n".encode()
        done = sluice(kafka_settings, "query", "SELECT 41 + 1")  # the CLI reads the token itself
        assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "42", done.stderr
