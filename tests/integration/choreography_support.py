"""Helpers for the choreography recovery tests: the example drop, exports to compare with a
clean run, the metastore flags."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import psycopg

from dataharvest import exports, metastore

EXAMPLE = Path(__file__).parents[2] / "examples" / "acme-bank"
DAY = "20240102"
ENTITIES = ("clients", "portfolios", "accounts", "transactions")
FLAGS = (
    "relationship_transformer_done",
    "sum_deposit_transformer_done",
    "transaction_transformer_done",
    "tax_transformer_done",
    "partner_publisher_done",
)


def upload(stack_info: Any, client_id: str, name: str, content: bytes | None = None) -> None:
    """Upload `name` (e.g. clients_20240102.csv), by default the example's file of that name."""
    boto3.client("s3").put_object(
        Bucket=stack_info.export("LandingBucketName"),
        Key=f"{client_id}/{name}",
        Body=content if content is not None else (EXAMPLE / name).read_bytes(),
    )


def upload_drop(stack_info: Any, client_id: str, entities: tuple[str, ...] = ENTITIES) -> None:
    for entity in entities:
        upload(stack_info, client_id, f"{entity}_{DAY}.csv")


def outputs(conn: psycopg.Connection, client_id: str) -> dict[str, list]:
    """Every export of the client's day; messages by type and body (their deduplication ids
    contain the client id, so two clients' ids differ by construction)."""
    day = date(int(DAY[:4]), int(DAY[4:6]), int(DAY[6:]))
    found: dict[str, list] = {}
    for table in ("portfolio-summary", "client-tax", "rejections", "quality-issues"):
        found[table] = [
            {k: v for k, v in row.items() if k not in ("source_key", "source_version")}
            for row in exports.rows(conn, table, client_id, day)
        ]
    found["messages"] = sorted(
        (m["message_type"], json.dumps(json.loads(m["body"]), sort_keys=True))
        for m in exports.rows(conn, "messages", client_id, day)
    )
    return found


def flags(client_id: str) -> dict[str, Any]:
    item = metastore.get_item(client_id, DAY)
    return {flag: item.get(flag) for flag in ("client_persisted", *FLAGS)}
