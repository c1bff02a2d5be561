"""Every row rule of docs/SPEC.md §2, each broken by a row of an uploaded file: the good rows
load exactly (trimmed, typed, upper-cased), the bad ones are rejected with line, column, value
and a reason naming the rule. One upload per entity, end to end through S3 and the handler."""

from __future__ import annotations

import uuid
from decimal import Decimal

import psycopg
import pytest
from persistence_support import current_load_id, input_state, key, put, raw_rows, rejections

from dataharvest.persistence.settings import set_max_reject_ratio

pytestmark = pytest.mark.integration

FILES = {
    "clients": (
        "record_id,first_name,last_name,client_reference,tax_free_allowance\n"
        "1,Zoë,Müller,C1,801\n"
        "2,,,C2,0\n"
        ",Ann,Lee,C3,10\n"
        "x1,Ann,Lee,C4,10\n"
        "99999999999999999999,A,B,C5,1\n"
        "7,A,B,,5\n"
        "8,A,B,C1,5\n"
        "9,A,B,C9,\n"
        '10,A,B,C10,"12,5"\n'
        "11,A,B,C11,1e3\n"
        "12,A,B,C12,-0.01\n"
        "13, Bo , Ek , C13 , 12.50\n"
    ),
    "portfolios": (
        "record_id,account_number,portfolio_reference,client_reference,agent_code\n"
        "1,100,P1,C1,A7\n"
        "2,,P2,C1,\n"
        "3,1.5,P3,C1,\n"
        "4,101,,C1,\n"
        "5,102,P5,,\n"
        "6,103,P1,C2,\n"
        "7,+104,P7,C2,\n"
    ),
    "accounts": (
        "record_id,account_number,cash_balance,currency,taxes_paid\n"
        "1,007,-12.50,EUR,0\n"
        "2,7,1.00,EUR,0\n"
        "3,8,1.00,eur,0\n"
        "4,9,1.00,EURO,0\n"
        "5,10,1.00,,0\n"
        "6,11,,USD,0\n"
        '7,12,"1,000.00",USD,0\n'
        "8,13,1.00,USD,-5\n"
        "9,14,1.00,USD,\n"
        "10,15,0.1234567890123456789,CHF,3.5\n"
        "11,x,abc,usd,-1\n"
    ),
    "transactions": (
        "record_id,account_number,transaction_reference,amount,keyword\n"
        "1,7,T1,100.00,deposit\n"
        "2,7,T2,-5.5,Tax\n"
        "3,7,T3,1.5,Refund\n"
        "4,7,T4,1.5,\n"
        "5,7,T1,1,DEPOSIT\n"
        "6,7,T6,,DEPOSIT\n"
        "7,7,T7,.5,DEPOSIT\n"
        "8,,T8,1,DEPOSIT\n"
        "9,7,,1,DEPOSIT\n"
    ),
}

NOT_DECIMAL = (
    "is not a decimal (digits with an optional '.' fraction; no exponent, no thousands separator)"
)
EXPECTED_ROWS = {
    "clients": [
        (2, 1, "Zoë", "Müller", "C1", Decimal("801")),
        (3, 2, None, None, "C2", Decimal("0")),
        (13, 13, "Bo", "Ek", "C13", Decimal("12.50")),
    ],
    "portfolios": [
        (2, 1, 100, "P1", "C1", "A7"),
        (8, 7, 104, "P7", "C2", None),
    ],
    "accounts": [
        (2, 1, 7, Decimal("-12.50"), "EUR", Decimal("0")),
        (11, 10, 15, Decimal("0.1234567890123456789"), "CHF", Decimal("3.5")),
    ],
    "transactions": [
        (2, 1, 7, "T1", Decimal("100.00"), "DEPOSIT"),
        (3, 2, 7, "T2", Decimal("-5.5"), "TAX"),
        (4, 3, 7, "T3", Decimal("1.5"), "REFUND"),
    ],
}
EXPECTED_REJECTIONS = {
    "clients": [
        (4, "record_id", None, "record_id: missing value"),
        (5, "record_id", "x1", "record_id: 'x1' is not an integer (digits, optional sign)"),
        (
            6,
            "record_id",
            "99999999999999999999",
            "record_id: '99999999999999999999' is out of the integer range (64 bit)",
        ),
        (7, "client_reference", None, "client_reference: missing value"),
        (
            8,
            "client_reference",
            "C1",
            "client_reference: duplicate of line 2 (the first row with this key is kept)",
        ),
        (9, "tax_free_allowance", None, "tax_free_allowance: missing value"),
        (
            10,
            "tax_free_allowance",
            "12,5",
            "tax_free_allowance: '12,5' is not a decimal (use '.' as the separator)",
        ),
        (11, "tax_free_allowance", "1e3", f"tax_free_allowance: '1e3' {NOT_DECIMAL}"),
        (
            12,
            "tax_free_allowance",
            "-0.01",
            "tax_free_allowance: '-0.01' is negative (must be >= 0)",
        ),
    ],
    "portfolios": [
        (3, "account_number", None, "account_number: missing value"),
        (
            4,
            "account_number",
            "1.5",
            "account_number: '1.5' is not an integer (digits, optional sign)",
        ),
        (5, "portfolio_reference", None, "portfolio_reference: missing value"),
        (6, "client_reference", None, "client_reference: missing value"),
        (
            7,
            "portfolio_reference",
            "P1",
            "portfolio_reference: duplicate of line 2 (the first row with this key is kept)",
        ),
    ],
    "accounts": [
        (
            3,
            "account_number",
            "7",
            "account_number: duplicate of line 2 (the first row with this key is kept)",
        ),
        (4, "currency", "eur", "currency: 'eur' is not a currency code (3 upper-case letters)"),
        (5, "currency", "EURO", "currency: 'EURO' is not a currency code (3 upper-case letters)"),
        (6, "currency", None, "currency: missing value"),
        (7, "cash_balance", None, "cash_balance: missing value"),
        (8, "cash_balance", "1,000.00", f"cash_balance: '1,000.00' {NOT_DECIMAL}"),
        (9, "taxes_paid", "-5", "taxes_paid: '-5' is negative (must be >= 0)"),
        (10, "taxes_paid", None, "taxes_paid: missing value"),
        (
            12,
            "account_number",
            "x",
            "account_number: 'x' is not an integer (digits, optional sign)",
        ),
        (12, "cash_balance", "abc", f"cash_balance: 'abc' {NOT_DECIMAL}"),
        (12, "currency", "usd", "currency: 'usd' is not a currency code (3 upper-case letters)"),
        (12, "taxes_paid", "-1", "taxes_paid: '-1' is negative (must be >= 0)"),
    ],
    "transactions": [
        (5, "keyword", None, "keyword: missing value"),
        (
            6,
            "transaction_reference",
            "T1",
            "transaction_reference: duplicate of line 2 (the first row with this key is kept)",
        ),
        (7, "amount", None, "amount: missing value"),
        (8, "amount", ".5", f"amount: '.5' {NOT_DECIMAL}"),
        (9, "account_number", None, "account_number: missing value"),
        (10, "transaction_reference", None, "transaction_reference: missing value"),
    ],
}
PREFIX = {
    "clients": "client",
    "portfolios": "portfolio",
    "accounts": "account",
    "transactions": "transaction",
}


@pytest.fixture(scope="module")
def rules_client(local_stack) -> dict[str, str]:
    """One tenant with every entity's rule-breaking file uploaded; returns entity -> version."""
    client_id = f"t-{uuid.uuid4().hex[:10]}"
    with psycopg.connect(local_stack.info.database_url, autocommit=True) as conn:
        # Most rows of these files are bad on purpose: keep the files from being rejected whole.
        set_max_reject_ratio(conn, client_id, "1")
    versions = {entity: put(key(client_id, entity), body) for entity, body in FILES.items()}
    assert local_stack.runner.wait_quiet(120), local_stack.runner.status()
    return {"client_id": client_id, **versions}


@pytest.mark.parametrize("entity", list(FILES))
def test_good_rows_load_exactly(rules_client, db, entity: str) -> None:
    assert raw_rows(db, entity, rules_client["client_id"]) == EXPECTED_ROWS[entity]


@pytest.mark.parametrize("entity", list(FILES))
def test_each_broken_rule_is_one_rejection_record(rules_client, db, entity: str) -> None:
    got = [r[1:] for r in rejections(db, rules_client["client_id"]) if r[0] == entity]
    assert got == EXPECTED_REJECTIONS[entity]


@pytest.mark.parametrize("entity", list(FILES))
def test_metastore_counts_rows_and_rejected_rows(rules_client, db, entity: str) -> None:
    state = input_state(rules_client["client_id"], PREFIX[entity])
    rejected_rows = len({line for line, *_ in EXPECTED_REJECTIONS[entity]})
    assert state == {
        "persisted": True,
        "version": rules_client[entity],
        "seq": current_load_id(db, rules_client["client_id"], entity),
        "rows": len(EXPECTED_ROWS[entity]),
        "rejections": rejected_rows,
    }
