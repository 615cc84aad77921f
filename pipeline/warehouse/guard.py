"""Which SQL may run on the embedded warehouse: an allow-list checked on ClickHouse's own parse.

``readonly = 1`` is not enough in chDB: it still evaluates the ``file()`` *function*, describes
``file(…)`` and ``url(…)`` table functions, and writes ``INTO OUTFILE``. So every statement that
reaches the embedded engine from outside the worker — an analyst's on ``POST /query`` and
``sluice query``, a client's on ``sluice warehouse`` — is parsed by the engine first
(``formatQuerySingleLine``: one statement, comments gone; then ``EXPLAIN AST`` of that text),
and runs only if every part of its tree is on a list of what analysts and clients may do:

* the statement: reading kinds (SELECT, SHOW, DESCRIBE, EXISTS, EXPLAIN); when writes are
  allowed also INSERT into a table, CREATE/ALTER/DROP/TRUNCATE/RENAME/OPTIMIZE of tables and
  databases, USE and SET — never SYSTEM, KILL, GRANT, BACKUP/RESTORE, ATTACH, dictionaries,
  functions;
* table functions: those that make rows inside the engine (``numbers``, ``values``, …) — none
  that read a file, a URL, another server or a Python object;
* ordinary functions: the engine's built-ins (``system.functions``, origin ``System``) less
  those that reach outside the process (``file``, ``catboostEvaluate``, host arguments of
  ``hasColumnInTable``, introspection) or only stall it (``sleep``);
* table and database engines: the MergeTree family, Memory, the Log family and a few more that
  keep data in the warehouse — not File, URL, S3, Filesystem, MySQL, …;
* no ``INTO OUTFILE``, no ``FROM INFILE``, no ``INSERT INTO FUNCTION``, output formats from a
  list (no schema files), and settings naming a disk, a path or a schema file nowhere;
* for analysts, no ``SETTINGS`` at all: the caller cannot lift the time limit or read-only.

Anything the list does not name is refused: a new statement kind, table function or engine in
a later ClickHouse stays closed until someone adds it here.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import NamedTuple

from pipeline.warehouse import WarehouseError
from sluice.sql import literal


class Refused(WarehouseError):
    """A statement the allow-list does not admit (never retried; the caller answers 4xx)."""

    code = 497  # ClickHouse's ACCESS_DENIED


READ_STATEMENTS = ("SelectWithUnionQuery", "SelectIntersectExceptQuery", "DescribeQuery", "Explain", "Show", "Exists")
WRITE_STATEMENTS = (
    "InsertQuery", "CreateQuery", "AlterQuery", "DropQuery", "TruncateQuery", "RenameQuery", "OptimizeQuery",
    "UseQuery", "Set", "CheckQuery", "DeleteQuery", "UpdateQuery",
)  # fmt: skip

TABLE_FUNCTIONS = frozenset({
    "numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateSeries", "values", "null",
    "view", "format", "generateRandom", "primes",
})  # fmt: skip

ENGINES = frozenset({
    "MergeTree", "ReplacingMergeTree", "SummingMergeTree", "AggregatingMergeTree", "CollapsingMergeTree",
    "VersionedCollapsingMergeTree", "CoalescingMergeTree", "Memory", "Log", "TinyLog", "StripeLog", "Null",
    "Set", "Join", "Buffer", "Merge", "GenerateRandom", "Atomic", "Ordinary", "Lazy",
})  # fmt: skip

OUTSIDE_FUNCTIONS = frozenset({
    "file", "catboostevaluate", "modelevaluate", "hascolumnintable", "filesystemavailable", "filesystemcapacity",
    "filesystemfree", "filesystemunreserved", "addresstoline", "addresstolinewithinlines", "addresstosymbol",
    "demangle", "sleep", "sleepeachrow", "trace", "getserversetting",
})  # fmt: skip

# Names the parser uses for constructs that are not in system.functions.
SYNTAX_FUNCTIONS = frozenset({"lambda", "exists", "grouping", "untuple", "columns"})

FORMATS = frozenset({
    "TabSeparated", "TabSeparatedRaw", "TabSeparatedWithNames", "TabSeparatedWithNamesAndTypes", "TSV", "TSVRaw",
    "TSVWithNames", "TSVWithNamesAndTypes", "TabSeparatedRawWithNames", "TabSeparatedRawWithNamesAndTypes",
    "TSVRawWithNames", "TSVRawWithNamesAndTypes", "CSV", "CSVWithNames", "CSVWithNamesAndTypes", "JSON",
    "JSONStrings", "JSONCompact", "JSONCompactStrings", "JSONColumns", "JSONColumnsWithMetadata",
    "JSONCompactColumns", "JSONEachRow", "JSONStringsEachRow", "JSONCompactEachRow", "JSONLines", "NDJSON",
    "JSONCompactEachRowWithNames", "JSONCompactEachRowWithNamesAndTypes", "JSONCompactStringsEachRow",
    "JSONCompactStringsEachRowWithNames", "JSONCompactStringsEachRowWithNamesAndTypes", "JSONObjectEachRow",
    "Pretty", "PrettyCompact", "PrettyCompactMonoBlock", "PrettyNoEscapes", "PrettySpace", "PrettyCompactNoEscapes",
    "PrettySpaceNoEscapes", "PrettyMonoBlock", "Vertical", "Values", "Markdown", "XML", "Null", "Native",
    "RowBinary", "RowBinaryWithNames", "RowBinaryWithNamesAndTypes", "Parquet", "Arrow", "ArrowStream", "ORC",
    "Avro", "MsgPack", "LineAsString", "RawBLOB", "SQLInsert", "BSONEachRow", "Npy",
})  # fmt: skip

# Settings that name a disk, a path or a schema file: not settable by a request, wherever they appear.
PATH_SETTINGS = re.compile(r"\b(disk|storage_policy|\w*path\w*|format_schema\w*|format_template\w*)\s*=", re.IGNORECASE)
QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\"")
FILES = re.compile(r"\b(INTO\s+OUTFILE|FROM\s+INFILE)\b", re.IGNORECASE)
SETTINGS_CLAUSE = re.compile(r"\bSETTINGS\b", re.IGNORECASE)


class Node(NamedTuple):
    depth: int
    kind: str
    name: str
    parent: str
    first: bool
    """The first child of its parent (of a storage definition: the engine; after it come keys)."""


def parse_tree(explained: str) -> list[Node]:
    """The nodes of ``EXPLAIN AST`` output: depth (its indent), kind, name, and its parent's kind."""
    nodes: list[Node] = []
    stack: list[str] = []
    for line in explained.splitlines():
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip(" "))
        words = line.split()
        kind = words[0]
        name = words[1] if len(words) > 1 and not words[1].startswith("(") else ""
        first = len(stack) == depth  # nothing at this depth since the parent
        del stack[depth:]
        nodes.append(Node(depth, kind, name, stack[-1] if stack else "", first))
        stack.append(kind if kind != "Storage" else "Storage definition")
    return nodes


class Guard:
    """The allow-list, checked with the engine ``run`` reaches (a statement in, its TSV out).

    The engine's built-in function names are read once per process: every engine here is the
    same chDB."""

    _functions: frozenset[str] | None = None
    _combinators: tuple[str, ...] = ()
    _lock = threading.Lock()

    def __init__(self, run: Callable[[str], bytes]) -> None:
        self.run = run

    def functions(self) -> frozenset[str]:
        with Guard._lock:
            if Guard._functions is None:
                rows = self.run("SELECT name, case_insensitive FROM system.functions WHERE origin = 'System'").decode()
                names: set[str] = set()
                for row in rows.splitlines():
                    name, _, insensitive = row.partition("\t")
                    names.add(name.lower() if insensitive == "1" else name)
                combinators = self.run("SELECT name FROM system.aggregate_function_combinators").decode().split()
                Guard._combinators = tuple(sorted(combinators, key=len, reverse=True))
                Guard._functions = frozenset(names)
            return Guard._functions

    def check(self, sql: str, *, writes: bool) -> str:
        """``sql`` formatted as one statement, if the allow-list admits it; :class:`Refused` if not.

        The caller runs the text it was given (an insert's data follows its statement) or the
        formatted one; both parse to the tree checked here."""
        try:
            formatted = self.run(f"SELECT formatQuerySingleLine({literal(sql)})").decode().strip()
            tree = parse_tree(self.run(f"EXPLAIN AST {formatted}").decode())
        except Refused:
            raise
        except WarehouseError as exc:
            raise Refused(f"not one statement ClickHouse can parse: {exc}") from exc
        if not tree:
            raise Refused("empty query")
        self._statement(tree[0], writes)
        # What the tree shows only as a bare ``Set`` or not at all (on SHOW, DESCRIBE …): the text.
        bare = QUOTED.sub("''", formatted)
        if FILES.search(bare):
            raise Refused("INTO OUTFILE and FROM INFILE are not allowed: the warehouse does not reach files")
        if PATH_SETTINGS.search(bare):
            raise Refused("settings that name a disk, a path or a schema file are not allowed here")
        if not writes and SETTINGS_CLAUSE.search(bare):
            raise Refused("SETTINGS are not allowed here: the limits of this endpoint are fixed")
        for node in tree:
            self._node(node, writes)
        return formatted

    def _statement(self, root: Node, writes: bool) -> None:
        if root.kind.startswith(READ_STATEMENTS):
            return
        if writes and root.kind.startswith(WRITE_STATEMENTS):
            return
        allowed = "reading statements" + (", inserts and table DDL" if writes else "")
        raise Refused(f"{root.kind} is not allowed here: only {allowed}")

    def _node(self, node: Node, writes: bool) -> None:
        if node.kind in ("Function", "FunctionWithKeyValueArguments"):
            self._function(node)
        elif node.kind == "Set" and node.depth > 0 and not writes:
            raise Refused("SETTINGS are not allowed here: the limits of this endpoint are fixed")
        elif node.kind == "Literal" and node.parent in ("SelectWithUnionQuery", "InsertQuery"):
            raise Refused("INTO OUTFILE and FROM INFILE are not allowed: the warehouse does not reach files")
        elif node.kind == "Identifier" and node.parent == "SelectWithUnionQuery" and node.name not in FORMATS:
            raise Refused(f"output format {node.name} is not allowed here")
        elif node.kind == "Dictionary":
            raise Refused("dictionaries are not allowed here")

    def _function(self, node: Node) -> None:
        if node.parent in ("TableExpression", "InsertQuery", "CreateQuery", "BackupQuery", "DescribeQuery"):
            if node.name not in TABLE_FUNCTIONS:
                raise Refused(
                    f"table function {node.name or '?'} is not allowed: only {', '.join(sorted(TABLE_FUNCTIONS))}"
                )
        elif node.parent == "Storage definition" and node.first:
            if node.name not in ENGINES:
                raise Refused(f"engine {node.name or '?'} is not allowed: only engines that keep data in the warehouse")
        elif node.kind == "FunctionWithKeyValueArguments" or not self._builtin(node.name):
            raise Refused(f"function {node.name or '?'} is not allowed here")

    def _builtin(self, name: str) -> bool:
        if name.lower() in OUTSIDE_FUNCTIONS:
            return False
        known = self.functions()
        while name:
            if name in SYNTAX_FUNCTIONS or name in known or name.lower() in known:
                return True
            # an aggregate function with combinators (sumIf, uniqMerge, quantilesStateIf …)
            suffix = next((c for c in Guard._combinators if name.endswith(c) and len(name) > len(c)), "")
            if not suffix:
                return False
            name = name[: -len(suffix)]
        return False
