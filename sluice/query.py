"""What ``sluice query`` prints, the way clickhouse-client does.

``--format`` takes ClickHouse format names. Without one, a terminal gets a readable table
(``PrettyCompact``) and a pipe gets ``TabSeparated`` without a header, so
``n=$(sluice query "SELECT count() FROM events")`` is just the number.

The embedded warehouse is reached through the worker's ``/query``, which produces a short list of
formats; ``PrettyCompact`` is drawn here from its ``JSON`` answer (names, types and rows), and
the long ClickHouse names are sent as the short aliases the worker knows. A ClickHouse server
(``SLUICE_CLICKHOUSE_URL``) takes any name.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

TERMINAL_FORMAT = "PrettyCompact"
PIPE_FORMAT = "TabSeparated"
DRAWN = {"PrettyCompact"}
"""Formats drawn here rather than asked for."""
ALIASES = {
    "TabSeparated": "TSV",
    "TabSeparatedWithNames": "TSVWithNames",
    # the CLI's own names before it took ClickHouse's: kept for scripts
    "tsv": "TSV",
    "json": "JSONEachRow",
}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,63}$")


def chosen_format(name: str | None, terminal: bool) -> str:
    """The format to print: ``name``, else the default for a terminal or a pipe."""
    if name is None:
        return TERMINAL_FORMAT if terminal else PIPE_FORMAT
    if not _NAME.match(name):
        raise ValueError(f"not a ClickHouse format name: {name!r}")
    return name


def requested_format(fmt: str) -> str:
    """What to ask the warehouse for to print ``fmt``."""
    return "JSON" if fmt in DRAWN else ALIASES.get(fmt, fmt)


def render(fmt: str, answer: bytes) -> bytes:
    """The warehouse's answer as ``fmt`` prints it."""
    return pretty_compact(answer) if fmt in DRAWN else answer


_RIGHT = re.compile(r"^(Nullable\()?(U?Int\d|Float|Decimal|Date)")
"""Types ClickHouse aligns to the right: numbers and times."""


def pretty_compact(answer: bytes) -> bytes:
    """ClickHouse's ``PrettyCompact`` from its ``JSON`` format: a box-drawn table with row
    numbers, numeric columns to the right; no rows, no table (as ClickHouse draws it)."""
    document: dict[str, Any] = msgspec.json.decode(answer) if answer.strip() else {}
    meta, data = document.get("meta", []), document.get("data", [])
    if not data:
        return b""
    names = [column["name"] for column in meta]
    right = [bool(_RIGHT.match(column.get("type", ""))) for column in meta]
    rows = [[_cell(row.get(name)) for name in names] for row in data]
    widths = [max(len(name), *(len(row[i]) for row in rows)) for i, name in enumerate(names)]
    columns = list(zip(widths, right, strict=True))
    heads = (
        ("─" * (w - len(n)) + n) if r else (n + "─" * (w - len(n))) for n, (w, r) in zip(names, columns, strict=True)
    )
    margin = " " * (len(str(len(rows))) + 2)
    lines = [margin + "┌─" + "─┬─".join(heads) + "─┐"]
    for number, row in enumerate(rows, 1):
        cells = (c.rjust(w) if r else c.ljust(w) for c, (w, r) in zip(row, columns, strict=True))
        lines.append(f"{number}.".rjust(len(margin) - 1) + " │ " + " │ ".join(cells) + " │")
    lines.append(margin + "└─" + "─┴─".join("─" * w for w in widths) + "─┘")
    return ("\n".join(lines) + "\n").encode()


def _cell(value: object) -> str:
    """A value as ClickHouse's text formats write it: strings bare at the top, quoted inside."""
    if value is None:
        return "ᴺᵁᴸᴸ"
    return value if isinstance(value, str) else _nested(value)


def _nested(value: object) -> str:
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list):
        return "[" + ",".join(_nested(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_nested(k)}:{_nested(v)}" for k, v in value.items()) + "}"
    return "NULL" if value is None else msgspec.json.encode(value).decode()
