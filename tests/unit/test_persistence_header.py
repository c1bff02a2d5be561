"""Header matching: case and white space, aliases, unknown columns, missing or doubled ones."""

from __future__ import annotations

import pytest

from dataharvest.persistence.exceptions import FileRejected
from dataharvest.persistence.header import MAX_FIELDS, HeaderMap, match_header, parse_header
from dataharvest.schemas import ENTITIES

ACCOUNTS = ENTITIES["accounts"]


def test_names_match_case_insensitively_after_trimming_in_any_order() -> None:
    names = [" Currency", "RECORD_ID ", "taxes_paid", "Account_Number", "cash_balance"]
    assert match_header(names, ACCOUNTS, {}) == HeaderMap(
        field_count=5,
        columns={
            "currency": 0,
            "record_id": 1,
            "taxes_paid": 2,
            "account_number": 3,
            "cash_balance": 4,
        },
        ignored=(),
    )


def test_unknown_columns_are_ignored_and_reported() -> None:
    names = ["record_id", "account_number", "Branch", "cash_balance", "currency", "taxes_paid", ""]
    header = match_header(names, ACCOUNTS, {})
    assert header.ignored == ("Branch", "")
    assert header.columns["cash_balance"] == 3
    assert header.field_count == 7


def test_a_client_alias_maps_a_misspelled_header() -> None:
    names = ["record_id", "Accout_Number", "cash_balance", "currency", "taxes_paid"]
    header = match_header(names, ACCOUNTS, {"accout_number": "account_number"})
    assert header.columns["account_number"] == 1
    assert header.ignored == ()


def test_missing_required_column_rejects_the_file() -> None:
    names = ["record_id", "accout_number", "cash_balance", "currency", "taxes_paid"]
    with pytest.raises(FileRejected) as raised:
        match_header(names, ACCOUNTS, {})
    assert raised.value.reason.startswith(
        "the header lacks required column(s) account_number (found: 'record_id', "
        "'accout_number', 'cash_balance', 'currency', 'taxes_paid')"
    )
    assert "dataharvest config set-alias" in raised.value.reason


def test_optional_columns_may_be_absent() -> None:
    header = match_header(
        ["record_id", "client_reference", "tax_free_allowance"], ENTITIES["clients"], {}
    )
    assert set(header.columns) == {"record_id", "client_reference", "tax_free_allowance"}


def test_a_column_named_twice_rejects_the_file() -> None:
    names = ["record_id", "account_number", "cash_balance", "currency", "taxes_paid", "CURRENCY"]
    with pytest.raises(FileRejected, match=r"names column currency twice \(fields 4 and 6"):
        match_header(names, ACCOUNTS, {})


def test_an_alias_colliding_with_the_real_column_rejects_the_file() -> None:
    names = ["record_id", "account_number", "acct", "cash_balance", "currency", "taxes_paid"]
    with pytest.raises(FileRejected, match="names column account_number twice"):
        match_header(names, ACCOUNTS, {"acct": "account_number"})


def test_parse_header_handles_quotes_and_rejects_bad_input() -> None:
    assert parse_header(b'"record_id","a,b",x') == ["record_id", "a,b", "x"]
    with pytest.raises(FileRejected, match="the file is empty"):
        parse_header(b"  ")
    with pytest.raises(FileRejected, match="not valid UTF-8"):
        parse_header(b"record_id,\xff")


def test_a_header_of_more_fields_than_a_file_may_have_is_rejected() -> None:
    assert len(parse_header(",".join(f"c{i}" for i in range(MAX_FIELDS)).encode())) == MAX_FIELDS
    with pytest.raises(FileRejected) as raised:
        parse_header(",".join(f"c{i}" for i in range(1601)).encode())
    assert raised.value.reason == "the header has 1,601 fields, more than the 1,000 a file may have"
