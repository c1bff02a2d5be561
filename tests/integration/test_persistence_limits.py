"""Uploads the loader cannot take whole: gzip bombs (inflation limits), multi-member gzip past
the inflate buffer, and absurd shapes (too many fields, overlong lines, rows, keys and numbers).
Each is a whole-file rejection with its rule named, and its SQS record succeeds the first time:
never a retry loop into the dead-letter queue."""

from __future__ import annotations

import gzip
import hashlib
import re
from decimal import Decimal

import pytest
from persistence_support import (
    ACCOUNTS_HEADER,
    current_load_id,
    input_state,
    key,
    loads,
    put,
    raw_rows,
    rejections,
)

from dataharvest.persistence.settings import set_inflation_limits

pytestmark = pytest.mark.integration

MiB = 1 << 20
TRANSACTIONS_HEADER = "record_id,account_number,transaction_reference,amount,keyword\n"


@pytest.fixture
def failures(local_stack, wait_quiet):
    """Failed invocations since the test started (a retried record fails at least once)."""
    wait_quiet()
    before = local_stack.runner.status()["failures"]
    return lambda: local_stack.runner.status()["failures"] - before


@pytest.fixture
def upload(client_id, wait_quiet):
    def upload(entity: str, body: str | bytes, suffix: str = ".csv") -> str:
        version = put(key(client_id, entity, suffix=suffix), body)
        wait_quiet()
        return version

    return upload


def rejected_whole(db, client_id: str, entity: str, prefix: str, version: str) -> str:
    """The state a whole-file rejection leaves (no rows, one reason, the input flagged, one
    load: the record was handled once); returns the reason."""
    assert raw_rows(db, entity, client_id) == []
    found = rejections(db, client_id)
    assert [r[:4] for r in found] == [(entity, None, None, None)]
    reason = found[0][4]
    state = input_state(client_id, prefix)
    assert state == {
        "persisted": False,
        "version": version,
        "seq": current_load_id(db, client_id, entity),
        "rows": 0,
        "rejections": 0,
        "error": reason,
    }
    assert [(r["status"], r["source_version"], r["reason"]) for r in loads(db, client_id)] == [
        ("rejected", version, reason)
    ]
    return reason


def load_seconds(db, client_id: str) -> float:
    """The load's own duration: from its transaction's start to its file_loads row."""
    return db.execute(
        "SELECT extract(epoch FROM finished_at - started_at) FROM audit.file_loads "
        "WHERE client_id = %s AND is_current",
        (client_id,),
    ).fetchone()[0]


def repeated_line_gzip(header: str, line: str, inflated: int) -> bytes:
    """A gzip of `header` and then `line` repeated to about `inflated` bytes, at level 9
    (a 32-byte CSV line inflates about 400:1): members of 64 MiB, each compressed once."""
    block = line.encode() * (64 * MiB // len(line))
    member = gzip.compress(block, compresslevel=9, mtime=0)
    return gzip.compress(header.encode(), mtime=0) + member * (inflated // len(block))


def test_a_gzip_bomb_is_rejected_by_its_inflation_ratio_in_seconds(
    db, client_id, upload, failures
) -> None:
    body = repeated_line_gzip(TRANSACTIONS_HEADER, "1,100,TX-ABCDEFGH,12.50,DEPOSIT\n", 1 << 30)
    assert len(body) < 3 * MiB
    version = upload("transactions", body, ".csv.gz")
    reason = rejected_whole(db, client_id, "transactions", "transaction", version)
    found = re.fullmatch(
        r"transactions_20240102\.csv\.gz inflates at more than this client's "
        r"max_inflation_ratio 100:1 \(([0-9,]+) bytes from ([0-9,]+) compressed bytes, "
        r"([0-9,]+):1\); real CSV rarely passes 20:1",
        reason,
    )
    assert found, reason
    inflated, consumed, ratio = (int(g.replace(",", "")) for g in found.groups())
    assert 8 * MiB <= inflated <= 12 * MiB
    assert ratio == inflated // consumed > 100
    assert load_seconds(db, client_id) < 5
    assert failures() == 0


def test_max_inflated_bytes_is_per_client(db, client_id, upload, failures) -> None:
    set_inflation_limits(db, client_id, max_inflated_bytes="1000")
    rows = "".join(f"{i},{100 + i},{i}.50,EUR,0\n" for i in range(1, 101))
    version = upload("accounts", gzip.compress((ACCOUNTS_HEADER + rows).encode()), ".csv.gz")
    assert rejected_whole(db, client_id, "accounts", "account", version) == (
        "accounts_20240102.csv.gz inflates to more than this client's max_inflated_bytes "
        "(1,000 bytes)"
    )
    assert failures() == 0

    # A higher limit: the same bytes, uploaded again, load (the settings changed since).
    set_inflation_limits(db, client_id, max_inflated_bytes="100000")
    upload("accounts", gzip.compress((ACCOUNTS_HEADER + rows).encode()), ".csv.gz")
    assert len(raw_rows(db, "accounts", client_id)) == 100
    assert rejections(db, client_id) == []


def test_max_inflation_ratio_is_per_client(db, client_id, upload) -> None:
    # 10 MiB of accounts rows compress about 9:1; a client bound of 5:1 rejects them.
    set_inflation_limits(db, client_id, max_inflation_ratio="5")
    rows = "".join(f"{i},{100 + i},{i}.50,EUR,0\n" for i in range(1, 450_001))
    data = gzip.compress((ACCOUNTS_HEADER + rows).encode(), mtime=0)
    version = upload("accounts", data, ".csv.gz")
    reason = rejected_whole(db, client_id, "accounts", "account", version)
    assert reason.startswith(
        "accounts_20240102.csv.gz inflates at more than this client's max_inflation_ratio 5:1 ("
    )


def test_multi_member_gzip_past_the_inflate_buffer_loads_exactly(
    db, client_id, upload, failures
) -> None:
    """Issue 12: members inflating to more than 4 MiB each (cat a.gz b.gz, pigz)."""
    first = ACCOUNTS_HEADER + "".join(f"{i},{i},{i}.50,EUR,0\n" for i in range(1, 200_001))
    second = "".join(f"{i},{i},{i}.50,USD,1\n" for i in range(200_001, 400_001))
    assert len(first) > 5 * MiB and len(second) > 5 * MiB
    version = upload(
        "accounts", gzip.compress(first.encode()) + gzip.compress(second.encode()), ".csv.gz"
    )
    state = input_state(client_id, "account")
    assert (state["persisted"], state["version"], state["rows"]) == (True, version, 400_000)
    assert db.execute(
        "SELECT count(*), min(line_number), max(line_number), sum(cash_balance),"
        " count(*) FILTER (WHERE currency = 'USD') FROM raw.accounts WHERE client_id = %s",
        (client_id,),
    ).fetchone() == (
        400_000,
        2,
        400_001,
        sum(Decimal(f"{i}.50") for i in range(1, 400_001)),
        200_000,
    )
    assert failures() == 0


# -- shapes ------------------------------------------------------------------------------------


def test_a_header_of_1601_fields_is_rejected_not_retried(db, client_id, upload, failures) -> None:
    header = ACCOUNTS_HEADER.strip() + "".join(f",extra_{i}" for i in range(1596)) + "\n"
    assert header.count(",") + 1 == 1601
    version = upload("accounts", header + "1,100,1.50,EUR,0" + "," * 1596 + "\n")
    assert rejected_whole(db, client_id, "accounts", "account", version) == (
        "the header has 1,601 fields, more than the 1,000 a file may have"
    )
    assert failures() == 0


def test_a_row_wider_than_a_page_is_rejected_not_retried(db, client_id, upload, failures) -> None:
    header = ACCOUNTS_HEADER.strip() + "".join(f",extra_{i}" for i in range(895)) + "\n"
    row = "1,100,1.50,EUR,0" + ",abcdefghij" * 895 + "\n"
    version = upload("accounts", header + row)
    reason = rejected_whole(db, client_id, "accounts", "account", version)
    # The row's size depends on the staging table's own columns, not on this file alone.
    assert re.fullmatch(
        r"a record is wider than the database can store \(row is too big: size [0-9]+, "
        r"maximum size 8160\); use fewer fields",
        reason,
    ), reason
    assert failures() == 0


def test_a_header_line_over_the_limit_is_rejected_not_retried(
    db, client_id, upload, failures
) -> None:
    header = ACCOUNTS_HEADER.strip() + ",x" + "y" * MiB + "\n"
    version = upload("accounts", header + "1,100,1.50,EUR,0,z\n")
    assert rejected_whole(db, client_id, "accounts", "account", version) == (
        "the header line is longer than 1,048,576 bytes, the most it may hold"
    )
    assert failures() == 0


def test_a_line_over_the_limit_is_rejected_not_retried(db, client_id, upload, failures) -> None:
    body = ACCOUNTS_HEADER + "1,100,1.50,EUR,0\n" + "2,101,2.50,EUR," + "0" * MiB + "\n"
    version = upload("accounts", body)
    assert rejected_whole(db, client_id, "accounts", "account", version) == (
        "line 3 is longer than 1,048,576 bytes, the most a line may hold"
    )
    assert failures() == 0


def test_a_long_key_loads_as_raw_storage_has_no_index_to_outgrow(
    db, client_id, upload, failures
) -> None:
    # 3,200 characters: past the 2,704 bytes a btree index entry may hold, so the old primary
    # key refused it; raw storage has no index now, and uniqueness is checked by counting.
    reference = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(50))
    body = TRANSACTIONS_HEADER + f"1,100,T1,1.00,DEPOSIT\n2,100,{reference},2.00,TAX\n"
    upload("transactions", body)
    assert [row[3] for row in raw_rows(db, "transactions", client_id)] == ["T1", reference]
    assert failures() == 0


def test_a_number_beyond_numeric_is_rejected_not_retried(db, client_id, upload, failures) -> None:
    # The decimal pattern has no length bound; PostgreSQL's numeric holds 131,072 digits.
    body = ACCOUNTS_HEADER + "1,100,1.50,EUR,0\n" + f"2,101,1{'0' * 140_000},EUR,0\n"
    version = upload("accounts", body)
    assert rejected_whole(db, client_id, "accounts", "account", version) == (
        "a number is out of the range the database can store (value overflows numeric format)"
    )
    assert failures() == 0
