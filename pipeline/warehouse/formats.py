"""Output formats the query endpoints accept: the CLI's short names and ClickHouse's own."""

from __future__ import annotations

QUERY_FORMATS = {"tsv": "TSVWithNames", "json": "JSONEachRow"}
CLICKHOUSE_FORMATS = {
    "TSV", "TabSeparated", "TSVWithNames", "TabSeparatedWithNames", "JSONEachRow", "JSON", "CSV",
    "CSVWithNames", "Pretty", "PrettyCompact", "Vertical",
}  # fmt: skip


def output_format(name: str) -> str | None:
    """``tsv``/``json`` (the CLI's names) or a ClickHouse output format from a short list."""
    return QUERY_FORMATS.get(name) or (name if name in CLICKHOUSE_FORMATS else None)
