"""Small factories and readers for the persistence tests: upload files, read back exactly
what persistence stored (raw rows, rejections, loads, the metastore item)."""

from __future__ import annotations

import gzip as gzip_module
import json
import os
from datetime import date
from typing import Any

import boto3
import psycopg

from dataharvest import metastore

DATE = "20240102"
BUSINESS_DATE = date(2024, 1, 2)

# Column lists of the raw tables as the tests read them back (lineage first).
RAW_COLUMNS = {
    "clients": "first_name, last_name, client_reference, tax_free_allowance",
    "portfolios": "account_number, portfolio_reference, client_reference, agent_code",
    "accounts": "account_number, cash_balance, currency, taxes_paid",
    "transactions": "account_number, transaction_reference, amount, keyword",
}


def bucket() -> str:
    return os.environ["LANDING_BUCKET"]


def s3():
    return boto3.client("s3")


def key(client_id: str, entity: str, day: str = DATE, suffix: str = ".csv") -> str:
    return f"{client_id}/{entity}_{day}{suffix}"


def put(object_key: str, body: str | bytes, gzip: bool = False) -> str:
    """Upload an object; returns its S3 version id."""
    data = body.encode() if isinstance(body, str) else body
    if gzip:
        data = gzip_module.compress(data)
    return s3().put_object(Bucket=bucket(), Key=object_key, Body=data)["VersionId"]


def delete(object_key: str, stack_info) -> None:
    """Delete the key and deliver the notification S3 sends for it.

    On a versioned bucket S3 notifies `ObjectRemoved:DeleteMarkerCreated`; moto (5.2) sends
    nothing for a delete marker, so the test delivers that event itself. Should the local stack
    start sending it, the second delivery is just a redelivery.
    """
    marker = s3().delete_object(Bucket=bucket(), Key=object_key).get("VersionId")
    send_event(stack_info, s3_event(object_key, "ObjectRemoved:DeleteMarkerCreated", marker))


def raw_rows(db: psycopg.Connection, entity: str, client_id: str) -> list[tuple]:
    """(line_number, record_id, <entity columns>) of the client's rows, by line; personal
    columns (stored encrypted, issue 18) decrypted with the client's key, as the owner may."""
    from dataharvest.security import personal

    if entity not in personal.MAY_BE_PERSONAL:
        return db.execute(
            f"SELECT line_number, record_id, {RAW_COLUMNS[entity]} FROM raw.{entity} "
            "WHERE client_id = %s ORDER BY line_number",
            (client_id,),
        ).fetchall()
    names = ["line_number", "record_id", *RAW_COLUMNS[entity].split(", ")]
    cursor = db.execute(
        f"SELECT {', '.join(names)}, personal_key_id FROM raw_store.{entity} "
        "WHERE client_id = %s ORDER BY line_number",
        (client_id,),
    )
    records = [dict(zip([*names, "personal_key_id"], row, strict=True)) for row in cursor]
    decrypted = personal.decrypt_rows(db, client_id, records, personal.MAY_BE_PERSONAL[entity])
    return [tuple(r[n] for n in names) for r in decrypted]


def lineage(db: psycopg.Connection, entity: str, client_id: str) -> set[tuple]:
    return set(
        db.execute(
            f"SELECT business_date, source_key, source_version FROM raw.{entity} "
            "WHERE client_id = %s",
            (client_id,),
        ).fetchall()
    )


def rejections(db: psycopg.Connection, client_id: str) -> list[tuple]:
    """(entity, line_number, column_name, value, reason), in order."""
    return db.execute(
        "SELECT entity, line_number, column_name, value, reason FROM audit.rejections "
        "WHERE client_id = %s ORDER BY entity, line_number NULLS FIRST, rejection_id",
        (client_id,),
    ).fetchall()


def loads(db: psycopg.Connection, client_id: str) -> list[dict[str, Any]]:
    with db.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "SELECT load_id, entity, source_key, source_version, status, rows_total, "
            "rows_loaded, rows_rejected, reason, ignored_columns, is_current "
            "FROM audit.file_loads WHERE client_id = %s ORDER BY load_id",
            (client_id,),
        ).fetchall()


def current_load_id(db: psycopg.Connection, client_id: str, entity: str) -> int:
    """The load id of the input's current load: what the item's `<prefix>_seq` must hold."""
    (load_id,) = db.execute(
        "SELECT load_id FROM audit.file_loads WHERE client_id = %s AND entity = %s AND is_current",
        (client_id, entity),
    ).fetchone()
    return load_id


def item(client_id: str, day: str = DATE) -> dict[str, Any]:
    return metastore.plain(metastore.get_item(client_id, day))


INPUT_ATTRIBUTES = ("persisted", "version", "seq", "rows", "rejections", "error", "ignored_columns")


def input_state(client_id: str, prefix: str, day: str = DATE) -> dict[str, Any]:
    """The item's attributes of one input (persistence's own), without the prefix."""
    found = item(client_id, day)
    return {
        name: found[f"{prefix}_{name}"] for name in INPUT_ATTRIBUTES if f"{prefix}_{name}" in found
    }


def s3_event(object_key: str, event_name: str, version_id: str | None = None) -> str:
    """An S3 event notification body as S3 sends it to SQS (the key URL-encoded)."""
    from urllib.parse import quote_plus

    obj: dict[str, Any] = {"key": quote_plus(object_key), "size": 1, "sequencer": "0"}
    if version_id:
        obj["versionId"] = version_id
    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "awsRegion": os.environ.get("AWS_REGION", "eu-west-1"),
                    "eventTime": "2026-11-25T10:00:00.000Z",
                    "eventName": event_name,
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "configurationId": "persistence",
                        "bucket": {"name": bucket(), "arn": f"arn:aws:s3:::{bucket()}"},
                        "object": obj,
                    },
                }
            ]
        }
    )


def send_event(stack_info, body: str) -> None:
    """Deliver an event straight to the persistence queue (a redelivery, or a late event)."""
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=stack_info.export("PersistenceQueueName"))["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=body)


ACCOUNTS_HEADER = "record_id,account_number,cash_balance,currency,taxes_paid\n"


def accounts_file(rows: int, bad: int = 0, header: str = ACCOUNTS_HEADER) -> str:
    """`rows` account rows, the last `bad` of them with a comma-decimal cash balance."""
    lines = [header]
    for i in range(1, rows + 1):
        balance = '"1,5"' if i > rows - bad else f"{i}.50"
        lines.append(f"{i},{100 + i},{balance},EUR,0\n")
    return "".join(lines)


def put_quiet(bucket_name: str, object_key: str, body: str) -> str:
    """Upload to a bucket nobody listens to (the `quiet_bucket` fixture)."""
    return boto3.client("s3").put_object(Bucket=bucket_name, Key=object_key, Body=body.encode())[
        "VersionId"
    ]
