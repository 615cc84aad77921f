"""The warehouse's two kinds of failure: unavailable (retried: wait it out) and everything else
(a rejection of the statement or its rows: never retried, isolated by the caller)."""

from __future__ import annotations

import re


class WarehouseError(Exception):
    """A statement was rejected: bad SQL, unknown table, a value the column refuses. Retrying
    the same statement will not help."""


class WarehouseUnavailable(WarehouseError):
    """The warehouse could not take the statement now (unreachable, overloaded, out of memory,
    timing out). Wait and retry."""


TRANSIENT_CODES = frozenset({
    159,  # TIMEOUT_EXCEEDED
    160,  # TOO_SLOW
    202,  # TOO_MANY_SIMULTANEOUS_QUERIES
    209,  # SOCKET_TIMEOUT
    210,  # NETWORK_ERROR
    241,  # MEMORY_LIMIT_EXCEEDED
    242,  # TABLE_IS_READ_ONLY
    252,  # TOO_MANY_PARTS (merges behind: back off)
    373,  # SESSION_IS_LOCKED (a query of the same session still running)
    285,  # TOO_FEW_LIVE_REPLICAS
    319,  # UNKNOWN_STATUS_OF_INSERT
    425,  # SYSTEM_ERROR
    439,  # CANNOT_SCHEDULE_TASK
    999,  # KEEPER_EXCEPTION
})  # fmt: skip
"""ClickHouse error codes that say "not now" rather than "not this data"."""


def classify(message: str) -> WarehouseError:
    """A ClickHouse error message (``Code: N. DB::Exception: …``) as unavailable or rejected."""
    found = re.search(r"Code:\s*(\d+)", message)
    if found and int(found.group(1)) in TRANSIENT_CODES:
        return WarehouseUnavailable(message)
    return WarehouseError(message)
