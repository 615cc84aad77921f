"""One request's SQL, split as ClickHouse's HTTP interface splits it: the statement, and for an
``INSERT … FORMAT X`` or ``INSERT … VALUES`` the data that follows it, kept as bytes.

ClickHouse joins ``?query=`` and the body with a newline and parses the statement from the
front; an insert's data starts after its ``FORMAT name`` (past spaces and one line break) or
right after ``VALUES``. Only the statement has to be text: Native, RowBinary, Parquet or Arrow
data never goes through a text decoding, and never through the SQL parser.

This is a tokenizer, not a parser: it finds the first keyword, the top-level ``FORMAT``,
``VALUES`` and ``SETTINGS`` of an insert, a query's ``FORMAT`` clause, and where the statement
ends. The engine's own parser (and the allow-list in :mod:`pipeline.warehouse.guard`) judges the
rest.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from pipeline.warehouse.http.errors import ClickHouseError

WORD = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")
SETTING_NAME = NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SPACE = b" \t\r\n\f\v"
QUOTES = b"'\"`"


@dataclass(frozen=True)
class Token:
    start: int
    end: int
    text: bytes  # a word's bytes, or one punctuation character
    depth: int  # parentheses around it

    @property
    def word(self) -> str:
        return self.text.decode("ascii").upper() if WORD.fullmatch(self.text) else ""


@dataclass
class Statement:
    """What a request asks: ``sql`` to run (for an insert, the part before its data and its own
    ``SETTINGS``), the insert's ``data`` and its ``input_format``, the query's own ``FORMAT``
    clause, and the ``SETTINGS`` an insert already names (``insert_settings``: ours merge in)."""

    kind: str
    sql: str
    data: bytes | None = None
    input_format: str = ""
    output_format: str = ""
    insert_settings: list[tuple[str, str]] = field(default_factory=list)
    head: str = ""  # an insert's statement as sent, up to its data (for the allow-list)
    # A view's definition keeps a trailing SETTINGS clause: a request's settings must not go there
    stores_query: bool = False


def tokens(text: bytes, start: int = 0, stop_at_data: bool = False) -> list[Token]:
    """The words and punctuation of ``text``, without comments, strings and quoted names (a
    quoted name comes as one token). With ``stop_at_data``, stops after an insert's
    ``VALUES``/``FORMAT name`` at depth 0, where its data starts."""
    out: list[Token] = []
    depth = 0
    i = start
    n = len(text)
    first = ""
    selecting = False  # an INSERT … SELECT has no data after it
    while i < n:
        c = text[i]
        if c in SPACE:
            i += 1
        elif text.startswith(b"--", i) or (c == 0x23 and text.startswith(b"#!", i)) or text.startswith(b"# ", i):
            end = text.find(b"\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith(b"/*", i):
            i = _block_comment_end(text, i)
        elif c in QUOTES:
            end = _quoted_end(text, i)
            if c != 0x27:  # a quoted name is a word
                out.append(Token(i, end, text[i:end], depth))
            else:
                out.append(Token(i, end, b"'", depth))
            i = end
        elif match := WORD.match(text, i):
            token = Token(i, match.end(), match.group(), depth)
            out.append(token)
            i = match.end()
            if not first:
                first = token.word
            elif not stop_at_data or first != "INSERT" or depth > 0 or selecting:
                pass
            elif token.word in ("SELECT", "WITH"):
                selecting = True
            elif token.word == "VALUES" or (len(out) >= 2 and out[-2].word == "FORMAT"):
                return out
        else:
            if c == 0x28:
                depth += 1
            elif c == 0x29:
                depth = max(0, depth - 1)
            out.append(Token(i, i + 1, text[i : i + 1], depth))
            i += 1
    return out


def _block_comment_end(text: bytes, i: int) -> int:
    level = 0
    while i < len(text):
        if text.startswith(b"/*", i):
            level += 1
            i += 2
        elif text.startswith(b"*/", i):
            level -= 1
            i += 2
            if level == 0:
                return i
        else:
            i += 1
    raise ClickHouseError(62, "Syntax error: unterminated comment")


def _quoted_end(text: bytes, i: int) -> int:
    quote = text[i]
    i += 1
    while i < len(text):
        c = text[i]
        if c == 0x5C:  # backslash escapes the next byte
            i += 2
        elif c == quote:
            if i + 1 < len(text) and text[i + 1] == quote:  # doubled quote
                i += 2
            else:
                return i + 1
        else:
            i += 1
    raise ClickHouseError(62, "Syntax error: unterminated quoted string or name")


def decode(text: bytes) -> str:
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClickHouseError(
            36, f"The query is not valid UTF-8 (byte {exc.start}); send data after the statement, as FORMAT X data"
        ) from exc


def split(text: bytes, output_formats: frozenset[str]) -> Statement:
    """The statement in ``text`` (the query parameter, a newline and the body, as ClickHouse
    joins them), its insert data as bytes; :class:`ClickHouseError` for an empty query or a
    statement that is not UTF-8."""
    found = tokens(text, stop_at_data=True)
    meaningful = [t for t in found if t.text != b";"]
    if not meaningful:
        raise ClickHouseError(62, "Empty query")
    kind = found[0].word or ("SELECT" if found[0].text == b"(" else found[0].text.decode("latin-1"))
    last = found[-1]
    if kind == "INSERT" and last.word == "VALUES" and last.depth == 0:
        return _insert(text, found[:-1], last.start, last.end, "Values")
    if kind == "INSERT" and len(found) >= 2 and found[-2].word == "FORMAT" and last.depth == 0:
        fmt = last.text.decode("ascii")
        return _insert(text, found[:-2], found[-2].start, _data_start(text, last.end), fmt)
    # The statement ends at its last token: a trailing ``;`` (and comments) go.
    end = max((t.end for t in found if t.text != b";" or t.depth > 0), default=0)
    semicolons = [t for t in found if t.text == b";" and t.depth == 0]
    if any(t.start < end for t in semicolons):
        raise ClickHouseError(62, "Syntax error (Multi-statements are not allowed)")
    output = ""
    for before, after in itertools.pairwise(found):
        if before.word == "FORMAT" and before.depth == 0 and after.text.decode("latin-1") in output_formats:
            output = after.text.decode("ascii")
    words = [t.word for t in found if t.depth == 0]
    stores = kind in ("CREATE", "ATTACH", "ALTER") and (
        "VIEW" in words or any(a == "MODIFY" and b == "QUERY" for a, b in itertools.pairwise(words))
    )
    return Statement(kind, decode(text[:end]), output_format=output, stores_query=stores)


def _data_start(text: bytes, i: int) -> int:
    """Past the spaces after ``FORMAT name`` and one line break, as ClickHouse skips them."""
    while i < len(text) and text[i] in b" \t\f":
        i += 1
    if text.startswith(b"\r\n", i):
        return i + 2
    if text.startswith(b"\n", i) or text.startswith(b"\r", i):
        return i + 1
    return i


def _insert(text: bytes, head: list[Token], head_end: int, data_start: int, fmt: str) -> Statement:
    settings_at = next((t for t in head if t.word == "SETTINGS" and t.depth == 0), None)
    insert_settings: list[tuple[str, str]] = []
    sql_end = head_end
    if settings_at is not None:
        insert_settings = assignments(decode(text[settings_at.end : head_end]))
        sql_end = settings_at.start
    sql = decode(text[:sql_end]).rstrip()
    as_sent = decode(text[:data_start]).rstrip()
    return Statement(
        "INSERT", sql, data=text[data_start:], input_format=fmt, insert_settings=insert_settings, head=as_sent
    )


def assignments(text: str) -> list[tuple[str, str]]:
    """``a = 1, b = 'x'`` (a ``SET`` or ``SETTINGS`` list) as [(name, value as SQL)]."""
    raw = text.encode()
    pieces: list[tuple[int, int]] = []
    begin = 0
    for token in tokens(raw):
        if token.text == b"," and token.depth == 0:
            pieces.append((begin, token.start))
            begin = token.end
    pieces.append((begin, len(raw)))
    out: list[tuple[str, str]] = []
    for a, b in pieces:
        piece = raw[a:b].decode()
        name, equals, value = piece.partition("=")
        name = name.strip()
        if not NAME.match(name):
            raise ClickHouseError(62, f"Syntax error: expected a setting name, got {name!r}")
        out.append((name, value.strip() if equals else "1"))
    return out


def use_target(sql: str) -> str:
    """The database a ``USE db`` names (quotes removed)."""
    found = tokens(sql.encode())
    if len(found) != 2:
        raise ClickHouseError(62, "Syntax error: USE takes one database name")
    name = found[1].text.decode()
    if name[:1] in ("`", '"'):
        name = name[1:-1].replace("\\" + name[0], name[0]).replace(name[0] * 2, name[0])
    return name
