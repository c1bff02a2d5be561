"""The fast path on a mixed file: plain lines go straight into the leaf with their line
numbers, every other record is set aside and staged through the full rules (exact lines)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import psycopg
import pytest

from dataharvest.persistence import fastpath, storage, validate
from dataharvest.persistence.header import match_header
from dataharvest.schemas import ENTITIES

pytestmark = pytest.mark.integration

ENTITY = ENTITIES["transactions"]
HEADER = ["record_id", "account_number", "transaction_reference", "amount", "keyword"]
# A date no upload of the session uses: these tests create its partitions as the superuser,
# and a service role cannot add a client's partition under a parent it does not own.
DAY = date(2031, 7, 15)


def test_plain_lines_are_copied_and_the_rest_staged_with_their_lines(
    local_stack, client_id
) -> None:
    mixed = (
        b"1,42,T-1,12.50,DEPOSIT\n"  # line 2: plain
        b"2,42, T-2 ,12.50,deposit\n"  # 3: white space, lower case: staged, loads
        b"3,42,T-3,1e3,DEPOSIT\n"  # 4: staged, rejected
        b'4,42,"T-4\nsecond",1.00,TAX\n'  # 5-6: a quoted newline: staged, loads
        b"\n"  # 7: blank: no record
        b"5,42,T-5,1.00,TAX\n"  # 8: plain, in a mixed block
    )
    plain = b"6,42,T-6,2.00,FEE\n"  # 9: plain block again: the line sequence catches up
    header = match_header(HEADER, ENTITY, {})
    planned = fastpath.plan(ENTITY, header)
    assert planned is not None
    with psycopg.connect(local_stack.info.database_url, autocommit=True) as conn:
        storage.ensure_parents(conn, "transactions", DAY, client_id)
        with conn.transaction(force_rollback=True):
            leaf = storage.create_leaf(conn, "transactions", DAY, client_id, 1)
            records, loaded, keys_distinct = fastpath.load_lines(
                conn, ENTITY, header, leaf, planned, iter([mixed, plain]), 2
            )
            rows = conn.execute(
                f"SELECT line_number, record_id, transaction_reference, amount, keyword "
                f"FROM raw_store.{leaf.name} ORDER BY line_number"
            ).fetchall()
            rejects = conn.execute(
                f"SELECT line, column_name, reason FROM {validate.REJECTS.as_string(conn)}"
            ).fetchall()
    assert (records, loaded) == (6, 5)
    assert not keys_distinct  # records were staged: only the count can tell
    assert rows == [
        (2, 1, "T-1", Decimal("12.50"), "DEPOSIT"),
        (3, 2, "T-2", Decimal("12.50"), "DEPOSIT"),
        (5, 4, "T-4\nsecond", Decimal("1.00"), "TAX"),
        (8, 5, "T-5", Decimal("1.00"), "TAX"),
        (9, 6, "T-6", Decimal("2.00"), "FEE"),
    ]
    assert rejects == [
        (
            4,
            "amount",
            "amount: '1e3' is not a decimal (digits with an optional '.' fraction; "
            "no exponent, no thousands separator)",
        )
    ]


def test_a_quote_never_closed_sends_the_file_to_the_staged_path(local_stack, client_id) -> None:
    header = match_header(HEADER, ENTITY, {})
    planned = fastpath.plan(ENTITY, header)
    assert planned is not None
    with psycopg.connect(local_stack.info.database_url, autocommit=True) as conn:
        storage.ensure_parents(conn, "transactions", DAY, client_id)
        with conn.transaction(force_rollback=True):
            leaf = storage.create_leaf(conn, "transactions", DAY, client_id, 1)
            body = iter([b'1,42,T-1,12.50,DEPOSIT\n2,42,"T-2,1.00,TAX\n'])
            with pytest.raises(fastpath.NotPlain, match="never closed"):
                fastpath.load_lines(conn, ENTITY, header, leaf, planned, body, 2)


def test_fields_that_are_no_contract_column_leave_no_column_behind(local_stack, client_id) -> None:
    header = match_header(["comment", *HEADER, "note"], ENTITY, {})
    planned = fastpath.plan(ENTITY, header)
    body = iter([b'x,1,42,T-1,12.50,DEPOSIT,"a, b"\n,2,42,T-2, 1.00 ,TAX,\n'])
    with psycopg.connect(local_stack.info.database_url, autocommit=True) as conn:
        storage.ensure_parents(conn, "transactions", DAY, client_id)
        with conn.transaction(force_rollback=True):
            leaf = storage.create_leaf(conn, "transactions", DAY, client_id, 1)
            assert fastpath.load_lines(conn, ENTITY, header, leaf, planned, body, 2) == (
                2,
                2,
                False,  # a quoted field: the keys are counted, not proven
            )
            rows = conn.execute(
                f"SELECT * FROM raw_store.{leaf.name} ORDER BY line_number"
            ).fetchall()
            # The placeholders are dropped; the leaf attaches like any other.
            storage.swap(conn, "transactions", DAY, client_id, 1, [leaf])
            viewed = conn.execute(
                "SELECT line_number, transaction_reference, amount FROM raw.transactions "
                "WHERE client_id = %s ORDER BY line_number",
                (client_id,),
            ).fetchall()
    assert [len(r) for r in rows] == [9, 9]  # the leaf's own columns, nothing more
    assert viewed == [(2, "T-1", Decimal("12.50")), (3, "T-2", Decimal("1.00"))]


def test_keys_in_order_are_proven_distinct_while_copying(local_stack, client_id) -> None:
    header = match_header(HEADER, ENTITY, {})
    planned = fastpath.plan(ENTITY, header)
    blocks = [b"1,42,T-1,12.50,DEPOSIT\n2,42,T-2,1.00,TAX\n", b"3,42,T-3,2.00,FEE"]
    with psycopg.connect(local_stack.info.database_url, autocommit=True) as conn:
        storage.ensure_parents(conn, "transactions", DAY, client_id)
        with conn.transaction(force_rollback=True):
            leaf = storage.create_leaf(conn, "transactions", DAY, client_id, 1)
            loaded = fastpath.load_lines(conn, ENTITY, header, leaf, planned, iter(blocks), 2)
            count = conn.execute(validate.distinct_keys(ENTITY, leaf.identifier)).fetchone()
    assert loaded == (3, 3, True)
    assert count == (3,)  # what the count would have said
