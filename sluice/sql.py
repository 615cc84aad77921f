"""Values for ClickHouse SQL, in one place: statements carry ``{name:Type}`` placeholders and the
values travel apart, bound by the engine — chDB's ``params``, the HTTP interface's ``param_name``,
clickhouse-connect's ``parameters`` — so nothing a user typed is ever quoted into a statement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class ParameterText(str):
    """A value already in the text form ClickHouse parses parameters from (``param_name`` of an
    HTTP request): passed on as it is."""


Parameters = Mapping[str, "str | int | float | Sequence[str]"]


def parameter_texts(parameters: Parameters | None) -> dict[str, str]:
    """Each value as the text ClickHouse parses a query parameter from (its escaped format for a
    scalar, the quoted format for an array), as chDB's ``params`` and ``param_name`` take them."""
    return {name: _text(value) for name, value in (parameters or {}).items()}


def _text(value: str | int | float | Sequence[str]) -> str:
    if isinstance(value, ParameterText):
        return value
    if isinstance(value, str):
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
    if isinstance(value, int | float):
        return repr(value)
    return "[" + ",".join(literal(item) for item in value) + "]"


def literal(text: str) -> str:
    """``text`` as a ClickHouse string literal (backslash and quote escaped), for the few places
    a value must be inside a statement's text (an array parameter's elements, a setting)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
