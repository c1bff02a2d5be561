"""File formats of docs/SPEC.md §2.2 through S3 and the handler: encodings, line ends, quoting,
compression, header handling, malformed CSV and whole-file rejections, the reject ratio."""

from __future__ import annotations

from decimal import Decimal

import pytest
from persistence_support import (
    ACCOUNTS_HEADER,
    accounts_file,
    current_load_id,
    input_state,
    key,
    loads,
    put,
    raw_rows,
    rejections,
)

from dataharvest.persistence.settings import set_alias, set_max_reject_ratio

pytestmark = pytest.mark.integration

CLIENTS_HEADER = "record_id,first_name,last_name,client_reference,tax_free_allowance\n"


@pytest.fixture
def upload(client_id, wait_quiet):
    def upload(entity: str, body: str | bytes, gzip: bool = False) -> str:
        version = put(key(client_id, entity, suffix=".csv.gz" if gzip else ".csv"), body, gzip)
        wait_quiet()
        return version

    return upload


def whole_file_rejection(db, client_id: str, entity: str = "accounts") -> tuple:
    """The only state a whole-file rejection leaves: no rows, one reason, a flagged input."""
    assert raw_rows(db, entity, client_id) == []
    found = rejections(db, client_id)
    assert [r[1:4] for r in found] == [(None, None, None)]
    return found[0][4]


def test_bom_and_crlf(db, client_id, upload) -> None:
    body = (
        "\ufeff" + ACCOUNTS_HEADER.replace("\n", "\r\n") + "1,100,1.50,EUR,0\r\n2,101,-2,USD,1\r\n"
    )
    version = upload("accounts", body.encode("utf-8"))
    assert raw_rows(db, "accounts", client_id) == [
        (2, 1, 100, Decimal("1.50"), "EUR", Decimal("0")),
        (3, 2, 101, Decimal("-2"), "USD", Decimal("1")),
    ]
    assert rejections(db, client_id) == []
    assert input_state(client_id, "account") == {
        "persisted": True,
        "version": version,
        "seq": loads(db, client_id)[-1]["load_id"],
        "rows": 2,
        "rejections": 0,
    }


def test_quoted_commas_quotes_and_newlines_keep_line_numbers(db, client_id, upload) -> None:
    set_max_reject_ratio(db, client_id, "1")
    body = (
        CLIENTS_HEADER
        + '1,"Anne\nMarie","O\'Neil, Jr.",C1,10\n'  # lines 2-3
        + '2,Bob,"Smith ""The Hammer""",C2,5\n'  # line 4
        + '3,Eve,Lin,C3,"1,5"\n'  # line 5
        + '4,"Multi\r\nLine\nName",X,C4,1\n'  # lines 6-8
        + "5,Zed,Q,C5,bad\n"  # line 9
    )
    upload("clients", body)
    assert raw_rows(db, "clients", client_id) == [
        (2, 1, "Anne\nMarie", "O'Neil, Jr.", "C1", Decimal("10")),
        (4, 2, "Bob", 'Smith "The Hammer"', "C2", Decimal("5")),
        (6, 4, "Multi\r\nLine\nName", "X", "C4", Decimal("1")),
    ]
    assert [r[1:3] for r in rejections(db, client_id)] == [
        (5, "tax_free_allowance"),
        (9, "tax_free_allowance"),
    ]


def test_non_ascii_names(db, client_id, upload) -> None:
    body = CLIENTS_HEADER + "1,Łukasz,Żółć,C1,1\n2,山田,太郎,C2,2\n3,Zoë 😀,Ñúñez,C3,3\n"
    upload("clients", body)
    assert [r[2:5] for r in raw_rows(db, "clients", client_id)] == [
        ("Łukasz", "Żółć", "C1"),
        ("山田", "太郎", "C2"),
        ("Zoë 😀", "Ñúñez", "C3"),
    ]


def test_empty_file_is_rejected_whole(db, client_id, upload) -> None:
    version = upload("accounts", b"")
    assert whole_file_rejection(db, client_id) == "the file is empty: no header row"
    state = input_state(client_id, "account")
    assert state == {
        "persisted": False,
        "version": version,
        "seq": current_load_id(db, client_id, "accounts"),
        "rows": 0,
        "rejections": 0,
        "error": "the file is empty: no header row",
    }


def test_header_only_is_a_valid_empty_input(db, client_id, upload) -> None:
    upload("accounts", ACCOUNTS_HEADER)
    assert raw_rows(db, "accounts", client_id) == []
    assert rejections(db, client_id) == []
    state = input_state(client_id, "account")
    assert (state["persisted"], state["rows"], state["rejections"]) == (True, 0, 0)


def test_extra_columns_are_ignored_and_reported(db, client_id, upload) -> None:
    body = "Branch,record_id,account_number,cash_balance,currency,taxes_paid,client_id\n"
    body += "Oslo,1,100,1.50,NOK,0,someone-else\n"
    upload("accounts", body)
    assert raw_rows(db, "accounts", client_id) == [
        (2, 1, 100, Decimal("1.50"), "NOK", Decimal("0"))
    ]
    assert loads(db, client_id)[-1]["ignored_columns"] == ["Branch", "client_id"]
    assert input_state(client_id, "account")["ignored_columns"] == ["Branch", "client_id"]


def test_misspelled_header_rejected_then_fixed_by_an_alias(db, client_id, upload) -> None:
    body = "record_id,Accout_Number,cash_balance,currency,taxes_paid\n1,100,1.50,EUR,0\n"
    upload("accounts", body)
    reason = whole_file_rejection(db, client_id)
    assert reason.startswith("the header lacks required column(s) account_number (found: ")
    assert input_state(client_id, "account")["persisted"] is False

    set_alias(db, client_id, "accounts", " ACCOUT_number", "account_number")
    version = upload("accounts", body)  # the same bytes again: the settings changed
    assert raw_rows(db, "accounts", client_id) == [
        (2, 1, 100, Decimal("1.50"), "EUR", Decimal("0"))
    ]
    assert rejections(db, client_id) == []
    state = input_state(client_id, "account")
    assert (state["persisted"], state["version"], "error" in state) == (True, version, False)


def test_gzip(db, client_id, upload) -> None:
    version = upload("accounts", accounts_file(3), gzip=True)
    assert [r[:3] for r in raw_rows(db, "accounts", client_id)] == [
        (2, 1, 101),
        (3, 2, 102),
        (4, 3, 103),
    ]
    assert [(x["source_key"], x["source_version"]) for x in loads(db, client_id)] == [
        (key(client_id, "accounts", suffix=".csv.gz"), version)
    ]


def test_broken_gzip_is_rejected_whole(db, client_id, wait_quiet) -> None:
    put(key(client_id, "accounts", suffix=".csv.gz"), b"\x1f\x8b\x08\x00 definitely not deflate")
    wait_quiet()
    assert whole_file_rejection(db, client_id).startswith("not a valid gzip file: ")


def test_malformed_records_rejected_well_formed_ones_load(db, client_id, upload) -> None:
    set_max_reject_ratio(db, client_id, "1")
    body = (
        ACCOUNTS_HEADER.replace("\n", "\r\n")
        + "1,100,1.00,EUR,0\n"  # line 2, LF after a CRLF header: mixed line ends
        + "2,101,1.00,EUR\n"  # line 3: a field short
        + "\n"  # line 4: blank
        + '3,102,"1.00"x,EUR,0\n'  # line 5: stray quote
        + "4,103,2.50,EUR,0\r\n"  # line 6
        + "5,104,3.00,EUR,0,extra\n"  # line 7: a field too many
        + "6,105,4.00,EUR,0\n"  # line 8
    )
    upload("accounts", body)
    assert [r[:3] for r in raw_rows(db, "accounts", client_id)] == [
        (2, 1, 100),
        (6, 4, 103),
        (8, 6, 105),
    ]
    assert [r[1:] for r in rejections(db, client_id)] == [
        (
            3,
            None,
            "2,101,1.00,EUR",
            "malformed CSV record: expected 5 fields as in the header, found 4",
        ),
        (5, None, None, "malformed CSV record: ',' expected after '\"'"),
        (
            7,
            None,
            "5,104,3.00,EUR,0,extra",
            "malformed CSV record: expected 5 fields as in the header, found 6",
        ),
    ]
    state = input_state(client_id, "account")
    assert (state["persisted"], state["rows"], state["rejections"]) == (True, 3, 3)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            ACCOUNTS_HEADER.encode() + b"1,100,1.00,EUR,0\n2,101,\xff1.00,EUR,0\n",
            "not valid UTF-8: the record on line 3 has bytes that are not UTF-8",
        ),
        (
            b"record_id,account_number,cash_balance,curr\xe9ncy,taxes_paid\n1,100,1.00,EUR,0\n",
            "not valid UTF-8: the header line has invalid continuation byte",
        ),
        (
            ACCOUNTS_HEADER.encode() + b'1,100,1.00,EUR,0\n2,"101,1.00,EUR,0\n3,102,1.00,EUR,0\n',
            "not valid CSV: the quoted field opened on line 3 is never closed",
        ),
        (
            ACCOUNTS_HEADER.encode() + b"1,100,1.00,EUR,0\n2,1\x0001,1.00,EUR,0\n",
            "not valid CSV text: a NUL byte in the record on line 3",
        ),
    ],
    ids=["not-utf8", "not-utf8-header", "unterminated-quote", "nul-byte"],
)
def test_invalid_files_are_rejected_whole(db, client_id, upload, body: bytes, reason: str) -> None:
    upload("accounts", body)
    assert whole_file_rejection(db, client_id) == reason
    assert input_state(client_id, "account")["error"] == reason


def test_reject_ratio_at_the_threshold_loads(db, client_id, upload) -> None:
    upload("accounts", accounts_file(10, bad=1))  # 10 % rejected: not more than 0.10
    assert len(raw_rows(db, "accounts", client_id)) == 9
    assert [r[1] for r in rejections(db, client_id)] == [11]
    state = input_state(client_id, "account")
    assert (state["persisted"], state["rows"], state["rejections"]) == (True, 9, 1)


def test_reject_ratio_above_the_threshold_rejects_the_file(db, client_id, upload) -> None:
    version = upload("accounts", accounts_file(10, bad=2))
    reason = "2 of 10 rows rejected (20.0%), more than this client's max_reject_ratio 0.10"
    assert raw_rows(db, "accounts", client_id) == []
    # The reason first, then the row rejections that led to it, so the partner can fix them.
    assert [r[1:3] + r[4:] for r in rejections(db, client_id)] == [
        (None, None, reason),
        (10, "cash_balance", "cash_balance: '1,5' is not a decimal (use '.' as the separator)"),
        (11, "cash_balance", "cash_balance: '1,5' is not a decimal (use '.' as the separator)"),
    ]
    state = input_state(client_id, "account")
    assert state == {
        "persisted": False,
        "version": version,
        "seq": current_load_id(db, client_id, "accounts"),
        "rows": 0,
        "rejections": 2,
        "error": reason,
    }


def test_a_client_ratio_lets_the_same_file_load(db, client_id, upload) -> None:
    set_max_reject_ratio(db, client_id, "0.25")
    upload("accounts", accounts_file(10, bad=2))
    assert len(raw_rows(db, "accounts", client_id)) == 8
    assert input_state(client_id, "account")["persisted"] is True


def test_last_row_without_a_line_end(db, client_id, upload) -> None:
    set_max_reject_ratio(db, client_id, "1")
    upload("accounts", ACCOUNTS_HEADER + "1,100,1.50,EUR,0\n2,101,x,EUR,0")
    assert [r[:3] for r in raw_rows(db, "accounts", client_id)] == [(2, 1, 100)]
    assert [r[1:3] for r in rejections(db, client_id)] == [(3, "cash_balance")]
