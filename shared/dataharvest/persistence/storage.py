"""Raw storage: where the rows of a load live, and how a load becomes (or stops being) current.

`raw_store.<entity>` is partitioned three levels deep (migration 0005):

    raw_store.transactions                          RANGE (business_date), a partition per day
      raw_store.transactions_20240102               LIST (client_id)
        raw_store.transactions_20240102_<hash>      RANGE (load_id, line_number)
          raw_store.transactions_load_42            the rows of load 42 (or _42_<chunk>)

A load writes its rows into leaf tables of its own that nothing else can see (created in the
load's transaction, or committed but not attached while chunks are staged), analyzes them, and
makes them current in one final transaction: the client's previous leaves are detached and
dropped, the new ones attached. Readers of one client and date are pruned to that client's
partition and scan its leaves whole: no index is maintained, no row is deleted.

Locking: creating a partition locks its parent exclusively until commit, so the day and client
partitions are created in a short transaction of their own (`ensure_parents`), never inside a
load. The swap locks only the client's partition of that day and entity, briefly, at the end.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, timedelta

import psycopg
from psycopg import sql

from dataharvest.db import advisory_xact_lock
from dataharvest.schemas import ENTITIES

SCHEMA = "raw_store"
# The columns every leaf has besides the entity's own (see the migration for their order).
LINEAGE_COLUMNS = ("load_id", "business_date", "client_id", "line_number")


@dataclass(frozen=True)
class Leaf:
    """One leaf table: the rows of a load from first_line up to (not including) end_line."""

    name: str
    first_line: int | None  # None: from the first line of the load
    end_line: int | None  # None: to the last line of the load

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(SCHEMA, self.name)


def parent(entity: str) -> sql.Identifier:
    return sql.Identifier(SCHEMA, entity)


def day_partition(entity: str, day: date) -> str:
    return f"{entity}_{day:%Y%m%d}"


def client_partition(entity: str, day: date, client_id: str) -> str:
    # Client ids are up to 63 characters, as are PostgreSQL names: a hash keeps names short.
    digest = hashlib.md5(client_id.encode(), usedforsecurity=False).hexdigest()[:12]
    return f"{day_partition(entity, day)}_{digest}"


def leaf_name(entity: str, load_id: int, chunk: int | None = None) -> str:
    base = f"{entity}_load_{load_id}"
    return base if chunk is None else f"{base}_{chunk}"


def ensure_parents(conn: psycopg.Connection, entity: str, day: date, client_id: str) -> None:
    """Create the day and client partitions of an input if missing, and commit them.

    Must not run inside a load's transaction: the exclusive lock on the parent would be held
    for the whole load and block every reader of that day.
    """
    if _exists(conn, client_partition(entity, day, client_id)):
        return
    with conn.transaction():
        _create_parents(conn, entity, day, client_id)


def _create_parents(conn: psycopg.Connection, entity: str, day: date, client_id: str) -> None:
    day_name = day_partition(entity, day)
    client_name = client_partition(entity, day, client_id)
    # Concurrent loads of one day create its partitions once.
    advisory_xact_lock(conn, f"{SCHEMA}/{day_name}")
    if not _exists(conn, day_name):
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({}) "
                "PARTITION BY LIST (client_id)"
            ).format(
                sql.Identifier(SCHEMA, day_name),
                parent(entity),
                sql.Literal(day),
                sql.Literal(day + timedelta(days=1)),
            )
        )
    if not _exists(conn, client_name):
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} PARTITION OF {} FOR VALUES IN ({}) "
                "PARTITION BY RANGE (load_id, line_number)"
            ).format(
                sql.Identifier(SCHEMA, client_name),
                sql.Identifier(SCHEMA, day_name),
                sql.Literal(client_id),
            )
        )


def _exists(conn: psycopg.Connection, name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.{name}",)).fetchone()
    return row is not None and row[0] is not None


def create_leaf(
    conn: psycopg.Connection,
    entity: str,
    day: date,
    client_id: str,
    load_id: int,
    chunk: int | None = None,
    first_line: int | None = None,
    end_line: int | None = None,
) -> Leaf:
    """A new, empty leaf table shaped like raw_store.<entity>, not attached.

    Its CHECK constraint states the partition bounds, so attaching it later needs no scan; the
    lineage columns default to the load's values, so a COPY need not send them.
    """
    leaf = Leaf(leaf_name(entity, load_id, chunk), first_line, end_line)
    bounds = [
        sql.SQL("load_id = {}").format(sql.Literal(load_id)),
        sql.SQL("client_id = {}").format(sql.Literal(client_id)),
        sql.SQL("business_date = {}").format(sql.Literal(day)),
    ]
    if first_line is not None:
        bounds.append(sql.SQL("line_number >= {}").format(sql.Literal(first_line)))
    if end_line is not None:
        bounds.append(sql.SQL("line_number < {}").format(sql.Literal(end_line)))
    conn.execute(
        sql.SQL(
            "CREATE TABLE {leaf} (LIKE {parent} INCLUDING DEFAULTS, CONSTRAINT {check} CHECK ({b}))"
        ).format(
            leaf=leaf.identifier,
            parent=parent(entity),
            check=sql.Identifier(f"{leaf.name}_bounds"),
            b=sql.SQL(" AND ").join(bounds),
        )
    )
    conn.execute(
        sql.SQL(
            "ALTER TABLE {} ALTER load_id SET DEFAULT {}, ALTER client_id SET DEFAULT {}, "
            "ALTER business_date SET DEFAULT {}"
        ).format(leaf.identifier, sql.Literal(load_id), sql.Literal(client_id), sql.Literal(day))
    )
    return leaf


def finish_leaf(conn: psycopg.Connection, leaf: Leaf) -> None:
    """Drop the load-time defaults and give the planner statistics of the rows just written
    (autovacuum would analyze them minutes later; transformers run seconds later).
    Personal columns are encrypted here, before the leaf is ever attached (security/personal.py)."""
    from dataharvest.security import personal

    personal.encrypt_leaf(conn, SCHEMA, leaf.name, leaf.name.split("_load_", 1)[0])
    conn.execute(
        sql.SQL(
            "ALTER TABLE {} ALTER load_id DROP DEFAULT, ALTER client_id DROP DEFAULT, "
            "ALTER business_date DROP DEFAULT, ALTER line_number DROP DEFAULT"
        ).format(leaf.identifier)
    )
    conn.execute(sql.SQL("ANALYZE {}").format(leaf.identifier))


def drop_leaf(conn: psycopg.Connection, leaf: Leaf) -> None:
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(leaf.identifier))


def current_leaves(conn: psycopg.Connection, entity: str, day: date, client_id: str) -> list[str]:
    """The leaves attached under the client's partition of that day (the current load's)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(%s) ORDER BY c.relname",
        (f"{SCHEMA}.{client_partition(entity, day, client_id)}",),
    ).fetchall()
    return [r[0] for r in rows]


def swap(
    conn: psycopg.Connection,
    entity: str,
    day: date,
    client_id: str,
    load_id: int | None,
    leaves: list[Leaf],
) -> None:
    """Make `leaves` (the rows of load `load_id`) the input's rows; none: it has no rows.

    Runs in the load's final transaction: readers see the old rows or the new, never a gap.
    """
    client_name = client_partition(entity, day, client_id)
    if not _exists(conn, client_name):
        if not leaves:
            return  # the input has no rows
        # Dropped by retention since ensure_parents (rare): create it here, at the very end.
        _create_parents(conn, entity, day, client_id)
    container = sql.Identifier(SCHEMA, client_name)
    for name in current_leaves(conn, entity, day, client_id):
        conn.execute(
            sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(
                container, sql.Identifier(SCHEMA, name)
            )
        )
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(SCHEMA, name)))
    for leaf in leaves:
        assert load_id is not None
        low = sql.SQL("MINVALUE") if leaf.first_line is None else sql.Literal(leaf.first_line)
        high = (
            sql.SQL("({}, MINVALUE)").format(sql.Literal(load_id + 1))
            if leaf.end_line is None
            else sql.SQL("({}, {})").format(sql.Literal(load_id), sql.Literal(leaf.end_line))
        )
        conn.execute(
            sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}, {}) TO {}").format(
                container, leaf.identifier, sql.Literal(load_id), low, high
            )
        )


def drop_empty_parents(conn: psycopg.Connection, before: date) -> int:
    """Drop the client and day partitions of days before `before` that hold no leaf; returns
    how many. Each day is its own short transaction (a drop locks its parent exclusively)."""
    dropped = 0
    for entity in ENTITIES:
        days = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s) ORDER BY 1",
            (f"{SCHEMA}.{entity}",),
        ).fetchall()
        for (day_name,) in days:
            if day_name[-8:] >= f"{before:%Y%m%d}":
                continue
            with conn.transaction():
                empty_clients = conn.execute(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = to_regclass(%s) "
                    "AND NOT EXISTS (SELECT 1 FROM pg_inherits j WHERE j.inhparent = c.oid)",
                    (f"{SCHEMA}.{day_name}",),
                ).fetchall()
                for (client_name,) in empty_clients:
                    conn.execute(
                        sql.SQL("DROP TABLE {}").format(sql.Identifier(SCHEMA, client_name))
                    )
                    dropped += 1
                (remaining,) = conn.execute(
                    "SELECT count(*) FROM pg_inherits WHERE inhparent = to_regclass(%s)",
                    (f"{SCHEMA}.{day_name}",),
                ).fetchone() or (0,)
                if remaining == 0:
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(SCHEMA, day_name)))
                    dropped += 1
    return dropped


def drop_unattached_leaves(conn: psycopg.Connection, entity: str, load_id: int) -> None:
    """Drop the leaf tables of a load that will never be attached (abandoned or rejected)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'r' AND NOT c.relispartition "
        "AND (c.relname = %s OR c.relname LIKE %s)",
        (SCHEMA, leaf_name(entity, load_id), leaf_name(entity, load_id) + "\\_%"),
    ).fetchall()
    for (name,) in rows:
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(SCHEMA, name)))


def drop_all(conn: psycopg.Connection) -> None:
    """Every partition of every entity (the local stack starts empty)."""
    for entity in ENTITIES:
        rows = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname <> %s AND c.relname LIKE %s "
            "AND (c.relkind = 'r' OR c.relkind = 'p')",
            (SCHEMA, entity, entity + "\\_%"),
        ).fetchall()
        for (name,) in rows:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(SCHEMA, name)))


def size_bytes(conn: psycopg.Connection, entity: str) -> int:
    """Bytes of every leaf of an entity (heap, TOAST, free-space and visibility maps)."""
    row = conn.execute(
        "SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree(%s)",
        (f"{SCHEMA}.{entity}",),
    ).fetchone()
    return int(row[0]) if row else 0
