"""The four summary transformers and the partner publisher on the real local stack, with exact
rows: uploads through S3 -> persistence -> catapult -> transformers."""

from __future__ import annotations

import json
import uuid
from datetime import date
from pathlib import Path

import boto3
import psycopg
import pytest
from drops import delete_upload

from dataharvest import catapult, exports, metastore, registry
from dataharvest import db as db_module
from dataharvest.due import desired
from dataharvest.transformers import relationships, runtime
from dataharvest.work import WorkMessage

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "examples" / "acme-bank"
DAY = date(2024, 1, 2)


def upload(stack_info, client_id: str, name: str, content: bytes) -> None:
    boto3.client("s3").put_object(
        Bucket=stack_info.export("LandingBucketName"), Key=f"{client_id}/{name}", Body=content
    )


def csv_rows(conn, table: str, client_id: str) -> list[tuple]:
    return [tuple(r.values()) for r in exports.rows(conn, table, client_id, DAY)]


def bodies(conn, client_id: str, message_type: str) -> list[dict]:
    return sorted(
        (
            json.loads(m["body"])
            for m in exports.rows(conn, "messages", client_id, DAY)
            if m["message_type"] == message_type
        ),
        key=lambda b: json.dumps(b, sort_keys=True),
    )


def test_example_drop_gives_the_exact_summaries_issues_and_messages(
    stack_info, db, client_id, wait_quiet
):
    for name in ("clients", "portfolios", "accounts", "transactions"):
        upload(
            stack_info,
            client_id,
            f"{name}_20240102.csv",
            (EXAMPLE / f"{name}_20240102.csv").read_bytes(),
        )
    wait_quiet()

    assert csv_rows(db, "portfolio-summary", client_id) == [
        ("P-2001", "C-1001", 50001, "5000.00", 3, "1250.50"),
        ("P-2002", "C-1001", 50002, "-250.75", 2, "0"),
        ("P-2003", "C-1002", 50003, "12000.10", 2, "500.10"),
        ("P-2004", "C-1002", 50003, "12000.10", 2, "500.10"),
    ]
    # C-1002's two portfolios share account 50003: its taxes count once.
    assert csv_rows(db, "client-tax", client_id) == [
        ("C-1001", "801.00", "120.50"),
        ("C-1002", "1602.00", "310.00"),
        ("C-1003", "801.00", "0"),
    ]
    assert csv_rows(db, "quality-issues", client_id) == [
        (
            "orphan_portfolio",
            "portfolios",
            "P-2005",
            "account_number 50009 is not in the accounts file",
        ),
        (
            "orphan_portfolio",
            "portfolios",
            "P-2006",
            "client_reference C-1099 is not in the clients file",
        ),
        (
            "orphan_transaction",
            "transactions",
            "T-9007",
            "account_number 50077 is not in the accounts file",
        ),
    ]
    assert [
        (r["entity"], r["line_number"], r["column_name"])
        for r in exports.rows(db, "rejections", client_id, DAY)
    ] == [("transactions", 9, "amount")]
    portfolio_messages = {
        b["portfolio_reference"]: b for b in bodies(db, client_id, "portfolio_message")
    }
    assert sorted(portfolio_messages) == ["P-2001", "P-2002", "P-2003", "P-2004"]
    assert portfolio_messages["P-2001"] == {
        "portfolio_reference": "P-2001",
        "cash_balance": "5000.00",
        "number_of_transactions": 3,
        "sum_of_deposits": "1250.50",
    }
    assert bodies(db, client_id, "client_message") == [
        {"client_reference": "C-1001", "tax_free_allowance": "801.00", "taxes_paid": "120.50"},
        {"client_reference": "C-1002", "tax_free_allowance": "1602.00", "taxes_paid": "310.00"},
        {"client_reference": "C-1003", "tax_free_allowance": "801.00", "taxes_paid": "0"},
    ]
    assert sorted(bodies(db, client_id, "error_message"), key=lambda b: b["message"]) == [
        {
            "client_reference": "C-1003",
            "portfolio_reference": "P-2005",
            "account_number": "50009",
            "message": "orphan_portfolio P-2005: account_number 50009 is not in the accounts file",
        },
        {
            "client_reference": "C-1099",
            "portfolio_reference": "P-2006",
            "account_number": "50004",
            "message": "orphan_portfolio P-2006: client_reference C-1099 is not in the "
            "clients file",
        },
        {
            "client_reference": None,
            "portfolio_reference": None,
            "account_number": "50077",
            "message": "orphan_transaction T-9007: account_number 50077 is not in the "
            "accounts file",
        },
        {
            "client_reference": None,
            "portfolio_reference": None,
            "account_number": None,
            "message": "transactions_20240102.csv line 9: amount: '12,5' is not a decimal "
            "(use '.' as the separator)",
        },
    ]
    item = metastore.get_item(client_id, "20240102")
    for name in (
        "relationship_transformer",
        "sum_deposit_transformer",
        "transaction_transformer",
        "tax_transformer",
        "partner_publisher",
    ):
        assert item[f"{name}_done"] is True, name
    published = db.execute(
        "SELECT count(*) FILTER (WHERE published_at IS NOT NULL), count(*) "
        "FROM etl.partner_messages WHERE client_id = %s",
        (client_id,),
    ).fetchone()
    assert published == (11, 11)


CLIENTS = b"record_id,client_reference,tax_free_allowance\n1,C1,100.00\n2,C2,0\n"
PORTFOLIOS = (
    b"record_id,account_number,portfolio_reference,client_reference\n"
    b"1,1,P1,C1\n2,2,P2,C1\n3,1,P3,C2\n"
)
ACCOUNTS = (
    b"record_id,account_number,cash_balance,currency,taxes_paid\n"
    b"1,1,10.00,EUR,1.50\n2,2,-3,EUR,2.25\n"
)
TRANSACTIONS = (
    b"record_id,account_number,transaction_reference,amount,keyword\n"
    b"1,1,T1,5.005,DEPOSIT\n2,1,T2,-1,deposit\n3,2,T3,7,TAX\n4,9,T4,1,DEPOSIT\n"
)


def test_without_transactions_only_client_side_outputs_exist_and_a_delete_retracts_them(
    stack_info, db, client_id, wait_quiet
):
    for name, content in (("clients", CLIENTS), ("portfolios", PORTFOLIOS), ("accounts", ACCOUNTS)):
        upload(stack_info, client_id, f"{name}_20240102.csv", content)
    wait_quiet()
    assert csv_rows(db, "portfolio-summary", client_id) == []
    assert csv_rows(db, "client-tax", client_id) == [("C1", "100.00", "3.75"), ("C2", "0", "1.50")]
    assert [m["message_type"] for m in exports.rows(db, "messages", client_id, DAY)] == [
        "client_message",
        "client_message",
    ]

    upload(stack_info, client_id, "transactions_20240102.csv", TRANSACTIONS)
    wait_quiet()
    assert csv_rows(db, "portfolio-summary", client_id) == [
        ("P1", "C1", 1, "10.00", 2, "4.005"),
        ("P2", "C1", 2, "-3", 1, "0"),
        ("P3", "C2", 1, "10.00", 2, "4.005"),
    ]
    assert csv_rows(db, "quality-issues", client_id) == [
        ("orphan_transaction", "transactions", "T4", "account_number 9 is not in the accounts file")
    ]
    assert len(bodies(db, client_id, "portfolio_message")) == 3
    assert len(bodies(db, client_id, "error_message")) == 1

    delete_upload(stack_info, f"{client_id}/transactions_20240102.csv")
    wait_quiet()
    assert csv_rows(db, "portfolio-summary", client_id) == []
    assert csv_rows(db, "quality-issues", client_id) == []
    assert len(bodies(db, client_id, "client_message")) == 2
    assert bodies(db, client_id, "portfolio_message") == []
    assert bodies(db, client_id, "error_message") == []
    item = metastore.get_item(client_id, "20240102")
    assert item["sum_deposit_transformer_done"] is False
    assert item["transaction_transformer_done"] is False
    assert item["partner_publisher_done"] is True

    delete_upload(stack_info, f"{client_id}/clients_20240102.csv")
    wait_quiet()
    assert csv_rows(db, "client-tax", client_id) == []
    assert exports.rows(db, "messages", client_id, DAY) == []
    assert metastore.get_item(client_id, "20240102")["partner_publisher_done"] is False


def result_messages(stack_info, client_id: str) -> list[tuple[str, dict, str]]:
    """This client's messages on the result queue, in order: (type, body, deduplication id).

    Other tenants' messages are left on the queue (they become visible again)."""
    sqs = boto3.client("sqs")
    queue_url = stack_info.export("ResultQueueUrl")
    found = []
    while True:
        response = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=30,
            MessageAttributeNames=["All"],
            AttributeNames=["MessageGroupId", "MessageDeduplicationId"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return found
        for m in messages:
            if m["Attributes"]["MessageGroupId"] != client_id:
                continue
            found.append(
                (
                    m["MessageAttributes"]["message_type"]["StringValue"],
                    json.loads(m["Body"]),
                    m["Attributes"]["MessageDeduplicationId"],
                )
            )
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])


def test_corrections_are_published_and_identical_resends_are_deduplicated(
    stack_info, db, client_id, wait_quiet
):
    accounts_a = ACCOUNTS
    accounts_b = ACCOUNTS.replace(b"1,1,10.00,EUR,1.50", b"1,1,10.00,EUR,9.99")
    for name, content in (
        ("clients", CLIENTS),
        ("portfolios", PORTFOLIOS),
        ("accounts", accounts_a),
    ):
        upload(stack_info, client_id, f"{name}_20240102.csv", content)
    wait_quiet()
    # Adding transactions re-runs the publisher; the unchanged client messages keep their
    # deduplication ids, so the FIFO queue swallows the re-send.
    upload(stack_info, client_id, "transactions_20240102.csv", TRANSACTIONS)
    wait_quiet()
    upload(stack_info, client_id, "accounts_20240102.csv", accounts_b)
    wait_quiet()
    # Back to the first content: a new revision, not swallowed as a duplicate of the first.
    upload(stack_info, client_id, "accounts_20240102.csv", accounts_a)
    wait_quiet()

    received = result_messages(stack_info, client_id)
    c1 = [
        (body["taxes_paid"], dedup)
        for kind, body, dedup in received
        if kind == "client_message" and body["client_reference"] == "C1"
    ]
    assert [taxes for taxes, _ in c1] == ["3.75", "12.24", "3.75"]
    assert len({dedup for _, dedup in c1}) == 3
    current = {
        json.loads(m["body"])["client_reference"]: m["deduplication_id"]
        for m in exports.rows(db, "messages", client_id, DAY)
        if m["message_type"] == "client_message"
    }
    assert current["C1"] == c1[-1][1]
    # The partner's view (latest message per key) equals the current message set.
    latest = {}
    for kind, body, _ in received:
        if kind == "portfolio_message":
            latest[body["portfolio_reference"]] = body
    assert latest == {
        b["portfolio_reference"]: b for b in bodies(db, client_id, "portfolio_message")
    }


def test_a_later_change_sends_only_the_messages_it_changed(stack_info, db, client_id, wait_quiet):
    for name, content in (
        ("clients", CLIENTS),
        ("portfolios", PORTFOLIOS),
        ("accounts", ACCOUNTS),
        ("transactions", TRANSACTIONS),
    ):
        upload(stack_info, client_id, f"{name}_20240102.csv", content)
    wait_quiet()
    assert result_messages(stack_info, client_id)

    def sent_at() -> dict[str, object]:
        return dict(
            db.execute(
                "SELECT deduplication_id, published_at FROM etl.partner_messages "
                "WHERE client_id = %s",
                (client_id,),
            ).fetchall()
        )

    before = sent_at()
    # Account 1 carries P1 and P3; the client totals (taxes) do not change.
    accounts_b = ACCOUNTS.replace(b"1,1,10.00,EUR,1.50", b"1,1,11.00,EUR,1.50")
    upload(stack_info, client_id, "accounts_20240102.csv", accounts_b)
    wait_quiet()
    changed = result_messages(stack_info, client_id)
    assert sorted((kind, body.get("portfolio_reference")) for kind, body, _ in changed) == [
        ("portfolio_message", "P1"),
        ("portfolio_message", "P3"),
    ]
    after = sent_at()
    assert None not in after.values()
    unchanged = set(before) & set(after)
    assert len(unchanged) == len(after) - 2
    # Unchanged messages were not sent again: they keep the time of their first send, so a
    # change later than the queue's 5-minute deduplication window re-delivers nothing.
    assert {d: after[d] for d in unchanged} == {d: before[d] for d in unchanged}

    # The accounts file deleted, then uploaded again unchanged: the partner has every message.
    delete_upload(stack_info, f"{client_id}/accounts_20240102.csv")
    wait_quiet()
    # The delete happened: the input is retracted, and so is the publisher's output (it needs
    # the client tax summary, which needs the accounts).
    deleted = metastore.get_item(client_id, "20240102")
    assert deleted["account_persisted"] is False
    assert deleted["partner_publisher_done"] is False
    assert sent_at() == {}
    upload(stack_info, client_id, "accounts_20240102.csv", accounts_b)
    wait_quiet()
    # The upload happened: a new load, and the publisher's last run was on it.
    reloaded = metastore.get_item(client_id, "20240102")
    assert reloaded["account_persisted"] is True
    assert reloaded["account_seq"] > deleted["account_seq"]
    assert reloaded["partner_publisher_done"] is True
    last_run = db.execute(
        "SELECT input_versions->>'account_seq' FROM audit.transformer_runs "
        "WHERE client_id = %s AND transformer = 'partner_publisher' AND outcome = 'succeeded' "
        "ORDER BY run_id DESC LIMIT 1",
        (client_id,),
    ).fetchone()[0]
    assert last_run == str(reloaded["account_seq"])
    assert result_messages(stack_info, client_id) == []
    assert sent_at() == after

    # The documented full re-send: clear what the revisions remember, replay the publisher.
    db.execute(
        "UPDATE etl.partner_message_revisions SET published_at = NULL WHERE client_id = %s",
        (client_id,),
    )
    catapult.replay(registry.get("partner_publisher"), client_id, "20240102", "20240102")
    wait_quiet()
    again = sent_at()
    assert set(again) == set(after)
    assert all(again[dedup] > after[dedup] for dedup in after)
    # Sent with the same deduplication ids: within the 5-minute window the queue drops them,
    # as AWS does (a partner asking for a re-send asks later than that).
    assert result_messages(stack_info, client_id) == []


ANALYZE_COUNT = """
SELECT analyze_count FROM pg_stat_user_tables WHERE schemaname = 'etl' AND relname = %s
"""


def replay_of(transformer: str, client_id: str) -> WorkMessage:
    """The work the item calls for now, under a fresh replay id: the runtime runs it again."""
    entry = next(e for e in registry.RegistryCache().current() if e.name == transformer)
    action, versions = desired(entry, metastore.get_item(client_id, DAY.strftime("%Y%m%d")))
    assert action == "APPLY"
    return WorkMessage(
        client_id, DAY.strftime("%Y%m%d"), transformer, action, versions, replay=uuid.uuid4().hex
    )


def test_a_run_writing_enough_rows_analyzes_its_output_under_its_own_role(
    stack_info, local_stack, db, client_id, wait_quiet, monkeypatch
):
    """A transformer run at or above ANALYZE_MIN_ROWS leaves its output analyzed (an ANALYZE,
    not autovacuum's) by the function's own role, which only MAINTAIN allows: without it
    PostgreSQL skips the table with a warning and the count stays put. A smaller run does not
    analyze."""
    for name in ("clients", "portfolios", "accounts"):
        upload(
            stack_info,
            client_id,
            f"{name}_20240102.csv",
            (EXAMPLE / f"{name}_20240102.csv").read_bytes(),
        )
    wait_quiet()
    urls = local_stack.runner.service_environment.urls
    role = "dataharvest_relationship_transformer"
    own = psycopg.connect(urls[role], autocommit=True)
    monkeypatch.setattr(db_module, "_connection", own)  # the function's connection, its role
    try:
        assert own.execute("SELECT current_user").fetchone() == (role,)

        def analyzed() -> int:
            (count,) = db.execute(ANALYZE_COUNT, ("portfolio_links",)).fetchone()
            return int(count)

        before = analyzed()
        # Below the threshold (the default: the example writes a few links): no ANALYZE.
        result = runtime.run(
            relationships.TRANSFORMER, replay_of(role.removeprefix("dataharvest_"), client_id)
        )
        assert result.outcome == "succeeded"
        assert 0 < result.rows_written < runtime.ANALYZE_MIN_ROWS
        assert analyzed() == before

        # At the threshold: the output is analyzed after the commit, by this role.
        monkeypatch.setattr(runtime, "ANALYZE_MIN_ROWS", result.rows_written)
        again = runtime.run(
            relationships.TRANSFORMER, replay_of(role.removeprefix("dataharvest_"), client_id)
        )
        assert again == runtime.RunResult("succeeded", result.rows_written)
        assert analyzed() == before + 1

        # Another transformer's role has no MAINTAIN on it: PostgreSQL skips the table with a
        # warning, which the runtime logs, and nothing is analyzed.
        with psycopg.connect(urls["dataharvest_tax_transformer"], autocommit=True) as other:
            runtime.analyze_outputs(other, relationships.TRANSFORMER)
        assert analyzed() == before + 1
    finally:
        own.close()
