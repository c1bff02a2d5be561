"""What the Data API reads: outputs and load history from PostgreSQL (keyset pages), status from
the metastore (key pages).

Every PostgreSQL read made for a partner runs through `scoped`: its transaction first switches
to the partner role (`SET LOCAL ROLE`, reads only) and binds `dataharvest.client_id` to the
token's client (`set_config(..., true)` is `SET LOCAL` with a bound value), so row-level
security keyed on `current_setting('dataharvest.client_id')` holds whatever the route's own
WHERE clause says (migration 0010_service_roles).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg
from boto3.dynamodb.conditions import Key
from psycopg import sql

from dataharvest import metastore
from dataharvest.api.auth import Principal
from dataharvest.security import roles

Stuck = Callable[[dict[str, Any]], list[str]] | None
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class BadCursor(ValueError):
    """HTTP 400: the cursor was not made by this route."""


@contextmanager
def scoped(conn: psycopg.Connection, principal: Principal) -> Iterator[psycopg.Connection]:
    """One transaction for one request's reads; a partner's is bound to its own client."""
    with conn.transaction():
        if principal.role == "partner":
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(roles.PARTNER_ROLE)))
            conn.execute(
                "SELECT set_config(%s, %s, true)", (roles.CLIENT_SETTING, principal.client_id)
            )
        yield conn


def encode_cursor(kind: str, after: Any) -> str:
    text = json.dumps({"k": kind, "a": after}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str | None) -> Any:
    """The position after which the next page starts; None for the first page."""
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadCursor("cursor: not a cursor this API returned") from None
    if not isinstance(value, dict) or value.get("k") != kind or "a" not in value:
        raise BadCursor(f"cursor: not a cursor of {kind}") from None
    return value["a"]


@dataclass(frozen=True)
class OutputTable:
    relation: str
    key: str  # unique within a client and date; pages follow it
    key_type: type
    columns: str  # SELECT list, aliased to the export's column names (exports.EXPORTS)


OUTPUTS: dict[str, OutputTable] = {
    "portfolio-summary": OutputTable(
        "etl.portfolio_summary",
        "portfolio_reference",
        str,
        "portfolio_reference, client_reference, account_number, cash_balance::text AS "
        "cash_balance, number_of_transactions, sum_of_deposits::text AS sum_of_deposits",
    ),
    "client-tax": OutputTable(
        "etl.client_tax_summary",
        "client_reference",
        str,
        "client_reference, tax_free_allowance::text AS tax_free_allowance, "
        "taxes_paid::text AS taxes_paid",
    ),
    "rejections": OutputTable(
        "audit.rejections",
        "rejection_id",
        int,
        "entity, source_key, source_version, line_number, column_name, value, reason",
    ),
    "quality-issues": OutputTable(
        "audit.data_quality_issues", "issue_id", int, "issue, entity, reference, detail"
    ),
    "messages": OutputTable(
        "etl.partner_messages",
        "deduplication_id",
        str,
        "message_type, message_group_id, deduplication_id, body",
    ),
}


def output_page(
    conn: psycopg.Connection,
    principal: Principal,
    table: str,
    client_id: str,
    business_date: date,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> dict[str, Any]:
    """One page of an export table in key order: {"items": [...], "next": cursor-or-null}."""
    spec = OUTPUTS[table]
    after = decode_cursor(table, cursor)
    if after is not None and not isinstance(after, spec.key_type):
        raise BadCursor(f"cursor: not a cursor of {table}")
    params: dict[str, Any] = {"c": client_id, "d": business_date, "n": limit + 1, "a": after}
    where = "client_id = %(c)s AND business_date = %(d)s"
    if after is not None:
        where += f" AND {spec.key} > %(a)s"
    query = (
        f"SELECT {spec.key} AS page_key, {spec.columns} FROM {spec.relation} "
        f"WHERE {where} ORDER BY {spec.key} LIMIT %(n)s"
    )
    with scoped(conn, principal), conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        rows = cur.execute(query, params).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [{k: v for k, v in row.items() if k != "page_key"} for row in rows]
    return {
        "items": items,
        "next": encode_cursor(table, rows[-1]["page_key"]) if more else None,
    }


LOAD_COLUMNS = (
    "load_id, to_char(business_date, 'YYYY-MM-DD') AS business_date, entity, source_key, "
    "source_version, status, rows_total, rows_loaded, rows_rejected, reason, is_current, "
    "started_at, finished_at"
)


def load_page(
    conn: psycopg.Connection,
    principal: Principal,
    client_id: str,
    business_date: date | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The client's load history (audit.file_loads), newest first."""
    after = decode_cursor("loads", cursor)
    if after is not None and not isinstance(after, int):
        raise BadCursor("cursor: not a cursor of loads")
    params: dict[str, Any] = {"c": client_id, "d": business_date, "n": limit + 1, "a": after}
    where = "client_id = %(c)s"
    if business_date is not None:
        where += " AND business_date = %(d)s"
    if after is not None:
        where += " AND load_id < %(a)s"
    query = (
        f"SELECT {LOAD_COLUMNS} FROM audit.file_loads WHERE {where} "
        "ORDER BY load_id DESC LIMIT %(n)s"
    )
    with scoped(conn, principal), conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        rows = cur.execute(query, params).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    for row in rows:
        row["started_at"] = row["started_at"].isoformat()
        row["finished_at"] = row["finished_at"].isoformat()
    return {"items": rows, "next": encode_cursor("loads", rows[-1]["load_id"]) if more else None}


def status_page(
    client_id: str,
    date_from: str | None = None,
    date_to: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    stuck: Stuck = None,
) -> dict[str, Any]:
    """A client's metastore items by date (YYYYMMDD bounds), one DynamoDB Query per page."""
    after = decode_cursor("status", cursor)
    if after is not None and not isinstance(after, str):
        raise BadCursor("cursor: not a cursor of status")
    condition = Key(metastore.PARTITION_KEY).eq(client_id)
    low, high = date_from or "00000000", date_to or "99999999"
    condition &= Key(metastore.SORT_KEY).between(low, high)
    kwargs: dict[str, Any] = {"KeyConditionExpression": condition, "Limit": limit}
    if after is not None:
        kwargs["ExclusiveStartKey"] = metastore.item_key(client_id, after)
    page = metastore.table().query(**kwargs)
    return _status_result(page, "status", stuck)


def all_status_page(
    limit: int = DEFAULT_LIMIT, cursor: str | None = None, stuck: Stuck = None
) -> dict[str, Any]:
    """Every client's items (operators' grid), one DynamoDB Scan page per call."""
    after = decode_cursor("all-status", cursor)
    kwargs: dict[str, Any] = {
        "Limit": limit,
        "FilterExpression": "NOT begins_with(#pk, :registry)",
        "ExpressionAttributeNames": {"#pk": metastore.PARTITION_KEY},
        "ExpressionAttributeValues": {":registry": "#"},
    }
    if after is not None:
        if not (
            isinstance(after, list) and len(after) == 2 and all(isinstance(a, str) for a in after)
        ):
            raise BadCursor("cursor: not a cursor of all-status")
        kwargs["ExclusiveStartKey"] = metastore.item_key(*after)
    page = metastore.table().scan(**kwargs)
    return _status_result(page, "all-status", stuck)


def _status_result(page: dict[str, Any], kind: str, stuck: Stuck) -> dict[str, Any]:
    items = []
    for item in page["Items"]:
        plain = metastore.plain(item)
        if stuck is not None:
            plain["stuck"] = stuck(item)
        items.append(plain)
    last = page.get("LastEvaluatedKey")
    if last is None:
        following = None
    elif kind == "status":
        following = encode_cursor(kind, last[metastore.SORT_KEY])
    else:
        following = encode_cursor(kind, [last[metastore.PARTITION_KEY], last[metastore.SORT_KEY]])
    return {"items": items, "next": following}
