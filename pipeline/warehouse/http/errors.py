"""Errors as ClickHouse's HTTP interface answers them, so that clients parse them.

The body is ``Code: N. DB::Exception: message. (ERROR_NAME) (version V)``: the Node client
takes the code and the name in parentheses from it, the JDBC driver the code; the code also goes
in ``X-ClickHouse-Exception-Code``. The status follows the code as ClickHouse maps it (400 for a
bad request, 401/403 for access, 404 for what does not exist, 500 otherwise).
"""

from __future__ import annotations

import re

from aiohttp import web

# The codes this server raises itself (the engine's own errors carry their names already).
NAMES = {
    27: "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
    36: "BAD_ARGUMENTS",
    40: "CHECKSUM_DOESNT_MATCH",
    48: "NOT_IMPLEMENTED",
    62: "SYNTAX_ERROR",
    73: "UNKNOWN_FORMAT",
    81: "UNKNOWN_DATABASE",
    89: "UNKNOWN_COMPRESSION_METHOD",
    115: "UNKNOWN_SETTING",
    164: "READONLY",
    271: "CANNOT_DECOMPRESS",
    372: "SESSION_NOT_FOUND",
    373: "SESSION_IS_LOCKED",
    497: "ACCESS_DENIED",
    516: "AUTHENTICATION_FAILED",
    1001: "STD_EXCEPTION",
}
STATUS = {
    27: 400, 36: 400, 40: 400, 48: 501, 62: 400, 73: 400, 81: 404, 89: 400, 115: 400, 164: 403, 271: 400,
    372: 404, 373: 409, 497: 403, 516: 401, 60: 404, 47: 400, 46: 400, 6: 400, 26: 400, 53: 400, 117: 400,
    386: 400, 43: 400, 44: 400, 57: 400, 456: 400, 457: 400, 16: 400, 10: 404, 38: 400, 41: 400, 70: 400, 72: 400,
}  # fmt: skip
CODE = re.compile(r"Code: (\d+)\. ")
NAMED = re.compile(r"\([A-Z][A-Z0-9_]+\)(?: \(version [^)]*\))?\s*$")
VERSIONED = re.compile(r"\(version [^)]*\)\s*$")
# chDB repeats the prefix of some errors: ``Code: 115. DB::Exception: Code: 115. DB::Exception: …``
REPEATED = re.compile(r"^(Code: \d+\. DB::Exception: )\1")


class ClickHouseError(Exception):
    """An error to answer with ClickHouse's code (and, unless given, the status that code takes)."""

    def __init__(self, code: int, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.status = status or STATUS.get(code, 500)


def from_engine(text: str) -> ClickHouseError:
    """chDB's exception text (``Code: N. DB::Exception: … (NAME) (version …)``) as an error;
    the prefix chDB's Python layer adds (``Streaming insert finish failed: ``) goes."""
    at = text.find("Code: ")
    if at > 0:
        text = text[at:]
    text = REPEATED.sub(r"\1", text)
    match = CODE.match(text)
    return ClickHouseError(int(match.group(1)) if match else 1001, text.strip())


def response(error: ClickHouseError, version: str, headers: dict[str, str] | None = None) -> web.Response:
    text = str(error).strip()
    if not text.startswith("Code:"):
        text = f"Code: {error.code}. DB::Exception: {text.rstrip('.')}."
    if not NAMED.search(text):
        text += f" ({NAMES.get(error.code, 'UNKNOWN_EXCEPTION')})"
    if not VERSIONED.search(text):
        text += f" (version {version})"
    return web.Response(
        status=error.status,
        text=text + "\n",
        headers={**(headers or {}), "X-ClickHouse-Exception-Code": str(error.code)},
    )
