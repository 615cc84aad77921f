"""SQL literals, in one place: every value Sluice puts into ClickHouse SQL goes through here."""

from __future__ import annotations


def literal(text: str) -> str:
    """``text`` as a ClickHouse string literal (backslash and quote escaped)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
