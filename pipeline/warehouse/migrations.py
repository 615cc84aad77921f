"""The DDL (``pipeline/warehouse/ddl/NNNN_name.sql``), applied once each, in order, by one step
(:func:`migrate`), recorded in ``schema_migrations``; the same files for chDB and a server (on a
cluster, rewritten by ``pipeline.warehouse.cluster``)."""

from __future__ import annotations

import re
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.warehouse import Warehouse


def migrations() -> list[tuple[int, str, list[str]]]:
    """The versioned DDL files, in order: (version, name, statements)."""
    return [(version, name, statements) for version, name, _, statements in _migration_files()]


def _migration_files() -> list[tuple[int, str, str, list[str]]]:
    """(version, name, condition, statements): a file whose first line is ``-- only-if: SQL``
    applies its statements only where that query answers non-zero (an upgrade that a warehouse
    created with the current DDL does not need)."""
    found = []
    for entry in resources.files("pipeline.warehouse").joinpath("ddl").iterdir():
        if entry.name.endswith(".sql"):
            text = entry.read_text()
            first = text.splitlines()[0] if text else ""
            condition = first.removeprefix("-- only-if:").strip() if first.startswith("-- only-if:") else ""
            found.append((int(entry.name.split("_", 1)[0]), entry.name, condition, split_statements(text)))
    return sorted(found)


_LEXEME = re.compile(
    r"""'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*"|`(?:[^`\\]|\\.)*`|--[^\n]*|/\*.*?\*/|;|[^'"`;/-]+|.""", re.DOTALL
)


def split_statements(script: str) -> list[str]:
    """The statements of a DDL script: split at each ``;`` outside strings, quoted names and
    comments; comments dropped, empty statements skipped."""
    statements: list[str] = []
    current: list[str] = []
    for lexeme in _LEXEME.findall(script):
        if lexeme == ";":
            statements.append("".join(current).strip())
            current = []
        elif not lexeme.startswith(("--", "/*")):
            current.append(lexeme)
    statements.append("".join(current).strip())
    return [statement for statement in statements if statement]


MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
    "applied_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY version"
)


def migrate(warehouse: Warehouse, cluster: str = "") -> list[int]:
    """Apply the DDL versions this warehouse lacks; return the versions applied. With a
    ``cluster``, every statement is applied in its replicated form (``cluster.for_cluster``)."""
    from pipeline.warehouse.cluster import for_cluster

    def run(statement: str) -> None:
        for part in for_cluster(statement, cluster) if cluster else [statement]:
            warehouse.execute(part)

    run(MIGRATIONS_TABLE)
    done = {int(v) for v in warehouse.execute("SELECT version FROM schema_migrations", "TSV").split()}
    applied = []
    for version, name, condition, statements in _migration_files():
        if version in done:
            continue
        if not condition or int(warehouse.execute(condition, "TSV").strip() or b"0"):
            for statement in statements:
                run(statement)
        warehouse.execute(f"INSERT INTO schema_migrations (version, name) VALUES ({version}, '{name}')")
        applied.append(version)
    return applied
