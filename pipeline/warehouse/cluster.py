"""The single-node DDL, rewritten for a ClickHouse cluster (``SLUICE_CLICKHOUSE_CLUSTER``).

One schema source: each ``CREATE TABLE t … ENGINE = XMergeTree`` becomes a replicated local
table ``t_local`` (``ReplicatedXMergeTree`` under ``/clickhouse/tables/{shard}/{database}/{table}``)
and a ``Distributed`` table ``t`` in front of it, sharded by a hash of the sorting key — so every
version of a row lands on one shard and ``FINAL`` stays exact. Views are created on the cluster
as they are; they read the Distributed tables by their usual names; ``ALTER TABLE t`` alters
``t_local`` on every replica (and ``ADD COLUMN`` the Distributed ``t`` too, or inserts and reads
through it would not know the column).
"""

from __future__ import annotations

import re

_TABLE = re.compile(
    r"CREATE TABLE IF NOT EXISTS (?P<name>\w+)\s*(?P<columns>\(.*\))\s*"
    r"ENGINE\s*=\s*(?P<engine>\w*MergeTree)(?:\((?P<args>[^)]*)\))?(?P<rest>.*)",
    re.DOTALL,
)
_COPY = re.compile(
    r"CREATE TABLE IF NOT EXISTS (?P<name>\w+) AS (?P<like>\w+)\s+"
    r"ENGINE\s*=\s*(?P<engine>\w*MergeTree)(?:\((?P<args>[^)]*)\))?(?P<rest>.*)",
    re.DOTALL,
)
_INSERT = re.compile(r"INSERT INTO (?P<name>\w+) SELECT \* FROM (?P<source>\w+)", re.DOTALL)
_DROP = re.compile(r"DROP (?P<kind>TABLE|VIEW)(?: IF EXISTS)? (?P<name>\w+)", re.DOTALL)
_VIEW = re.compile(r"CREATE VIEW IF NOT EXISTS (?P<name>\w+)\s+AS\s+(?P<query>.*)", re.DOTALL)
_ALTER = re.compile(r"ALTER TABLE (?P<name>\w+)\s+(?P<rest>.*)", re.DOTALL)
_ORDER = re.compile(r"ORDER BY\s*(\((?P<many>[^)]*)\)|(?P<one>\w+))")


def for_cluster(statement: str, cluster: str) -> list[str]:
    """The cluster form of one DDL statement (one or two statements)."""
    table = _TABLE.fullmatch(statement.strip())
    if table:
        return _table(table, cluster)
    copy = _COPY.fullmatch(statement.strip())
    if copy:
        return _table(copy, cluster, f"AS {copy['like']}_local")
    insert = _INSERT.fullmatch(statement.strip())
    if insert:  # through the Distributed tables, waiting for the shards
        return [f"INSERT INTO {insert['name']} SETTINGS distributed_foreground_insert = 1 "
                f"SELECT * FROM {insert['source']}"]  # fmt: skip
    drop = _DROP.fullmatch(statement.strip())
    if drop:
        names = [drop["name"]] + ([f"{drop['name']}_local"] if drop["kind"] == "TABLE" else [])
        return [f"DROP {drop['kind']} IF EXISTS {name} ON CLUSTER {cluster} SYNC" for name in names]
    view = _VIEW.fullmatch(statement.strip())
    if view:
        return [f"CREATE VIEW IF NOT EXISTS {view['name']} ON CLUSTER {cluster} AS {view['query']}"]
    alter = _ALTER.fullmatch(statement.strip())
    if alter:
        local = f"ALTER TABLE {alter['name']}_local ON CLUSTER {cluster} {alter['rest']}"
        if alter["rest"].lstrip().upper().startswith("ADD COLUMN"):  # the Distributed table in front too
            return [local, f"ALTER TABLE {alter['name']} ON CLUSTER {cluster} {alter['rest']}"]
        return [local]
    raise ValueError(f"no cluster form for: {statement[:80]}")


def _table(match: re.Match[str], cluster: str, columns: str = "") -> list[str]:
    name, engine, rest = match["name"], match["engine"], match["rest"]
    args = ", ".join(a for a in ["'/clickhouse/tables/{shard}/{database}/{table}'", "'{replica}'", match["args"]] if a)
    order = _ORDER.search(rest)
    if order is None:
        raise ValueError(f"{name}: a cluster table needs ORDER BY (its sharding key)")
    key = order["many"] or order["one"]
    return [
        f"CREATE TABLE IF NOT EXISTS {name}_local ON CLUSTER {cluster} {columns or match['columns']} "
        f"ENGINE = Replicated{engine}({args}){rest}",
        f"CREATE TABLE IF NOT EXISTS {name} ON CLUSTER {cluster} AS {name}_local "
        f"ENGINE = Distributed({cluster}, currentDatabase(), {name}_local, cityHash64({key}))",
    ]
