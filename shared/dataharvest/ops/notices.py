"""Partner notices: the `error_message`s a partner gets for a failure they can act on that the
publisher cannot report (it publishes only once clients, portfolios and accounts are linked):

- a whole-file rejection of any input (the file and the reason);
- a late or missing input (the file expected and when it was due);
- an upload of theirs that could not be routed (the key and why).

Each is recorded once per client and cause in audit.partner_notices (a redelivery, a second
checker run or a retry finds the row and adds nothing) and sent to the FIFO result queue with
a deduplication id derived from the cause. Sending is resumable: a notice is marked published
in the transaction that sent it, and `send_pending` sends what a crash left unsent. The
publisher leaves whole-file rejections to this module (its error messages are the row
rejections and data-quality issues), so each cause reaches the partner once.

`dataharvest export messages` shows notices beside the publisher's messages.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date
from typing import Any

import boto3
import psycopg
from psycopg.types.json import Jsonb

from dataharvest.config import environment
from dataharvest.ops import metrics
from dataharvest.ops.metrics import PARTNER_NOTICES_SENT

SEND_CHUNK = 10  # one SendMessageBatch

UNPUBLISHED = """
SELECT notice_id, client_id, business_date, message_type, deduplication_id, body::text
FROM audit.partner_notices
WHERE client_id = %s AND published_at IS NULL
ORDER BY notice_id
LIMIT %s
FOR UPDATE SKIP LOCKED
"""


class NoticeError(RuntimeError):
    """The result queue refused a notice; the caller's work is retried."""


@dataclass(frozen=True)
class Notice:
    client_id: str
    business_date: date
    cause: str
    message: str


def body(message: str) -> dict[str, Any]:
    """The error_message shape of SPEC §3; a file-level notice names no record."""
    return {
        "client_reference": None,
        "portfolio_reference": None,
        "account_number": None,
        "message": message,
    }


def deduplication_id(client_id: str, cause: str) -> str:
    return hashlib.sha256(f"notice\x1f{client_id}\x1f{cause}".encode()).hexdigest()


def record(conn: psycopg.Connection, notice: Notice) -> bool:
    """Store the notice unless its cause was recorded before; True when it is new."""
    inserted = conn.execute(
        "INSERT INTO audit.partner_notices (client_id, business_date, cause, deduplication_id,"
        " body) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (client_id, cause) DO NOTHING",
        (
            notice.client_id,
            notice.business_date,
            notice.cause,
            deduplication_id(notice.client_id, notice.cause),
            Jsonb(body(notice.message)),
        ),
    )
    return inserted.rowcount == 1


def exists(conn: psycopg.Connection, client_id: str, cause: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM audit.partner_notices WHERE client_id = %s AND cause = %s",
        (client_id, cause),
    ).fetchone()
    return row is not None


def notify(conn: psycopg.Connection, notice: Notice) -> bool:
    """Record the notice (once per cause) and send what the client has unsent; True when the
    cause is new."""
    with conn.transaction():
        new = record(conn, notice)
    send_pending(conn, notice.client_id)
    return new


def send_pending(conn: psycopg.Connection, client_id: str) -> int:
    """Send the client's unpublished notices to the result queue; returns how many."""
    queue_url = environment().result_queue_url
    if not queue_url:
        raise NoticeError("RESULT_QUEUE_URL is not set: no result queue to send notices to")
    sqs = boto3.client("sqs")
    sent = 0
    while True:
        with conn.transaction():
            rows = conn.execute(UNPUBLISHED, (client_id, SEND_CHUNK)).fetchall()
            if not rows:
                return sent
            entries = [
                {
                    "Id": str(notice_id),
                    "MessageBody": text,
                    "MessageGroupId": client,
                    "MessageDeduplicationId": dedup,
                    "MessageAttributes": {
                        "client_id": {"DataType": "String", "StringValue": client},
                        "business_date": {
                            "DataType": "String",
                            "StringValue": day.strftime("%Y%m%d"),
                        },
                        "message_type": {"DataType": "String", "StringValue": message_type},
                    },
                }
                for notice_id, client, day, message_type, dedup, text in rows
            ]
            response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            if response.get("Failed"):
                raise NoticeError(
                    f"result queue refused {len(response['Failed'])} notice(s) of "
                    f"{client_id}: {response['Failed'][0]}"
                )
            conn.execute(
                "UPDATE audit.partner_notices SET published_at = clock_timestamp() "
                "WHERE notice_id = ANY(%s)",
                ([row[0] for row in rows],),
            )
        sent += len(rows)
        metrics.emit(
            "notices", "error_message", PARTNER_NOTICES_SENT, len(rows), client_id=client_id
        )


def rows_for(conn: psycopg.Connection, client_id: str, business_date: date) -> list[dict[str, Any]]:
    """The client's notices of a date in the `messages` export's columns."""
    return [
        {
            "message_type": message_type,
            "message_group_id": client_id,
            "deduplication_id": dedup,
            "body": text,
        }
        for message_type, dedup, text in conn.execute(
            "SELECT message_type, deduplication_id, body::text FROM audit.partner_notices "
            "WHERE client_id = %s AND business_date = %s ORDER BY body::text",
            (client_id, business_date),
        ).fetchall()
    ]


def message_text(value: str) -> str:
    """A notice's message from its stored body (for tests and the CLI)."""
    return str(json.loads(value)["message"])
