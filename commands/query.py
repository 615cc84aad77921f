"""What ``sluice query`` prints, the way clickhouse-client does.

``--format`` takes ClickHouse format names, which the warehouse renders itself (a ClickHouse
server any of them; the worker's ``/query`` those of ``pipeline/warehouse/formats.py``). Without
one, a terminal gets a readable table (``PrettyCompact``) and a pipe gets ``TabSeparated``
without a header, so ``n=$(sluice query "SELECT count() FROM events")`` is just the number.
"""

from __future__ import annotations

import re

TERMINAL_FORMAT = "PrettyCompact"
PIPE_FORMAT = "TabSeparated"
LEGACY = {"tsv": "TSVWithNames", "json": "JSONEachRow"}
"""The CLI's own names from before it took ClickHouse's, kept for scripts."""
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,63}$")


def chosen_format(name: str | None, terminal: bool) -> str:
    """The ClickHouse format to print in: ``name``, else the default for a terminal or a pipe."""
    if name is None:
        return TERMINAL_FORMAT if terminal else PIPE_FORMAT
    if not _NAME.match(name):
        raise ValueError(f"not a ClickHouse format name: {name!r}")
    return LEGACY.get(name, name)
