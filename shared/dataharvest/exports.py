"""export: the outputs of one client and business date as docs/SPEC.md names them (§3, §5.1).

Each export is one SQL query whose column aliases are the column names of SPEC §3 and §5.1.
Decimals leave PostgreSQL as text, so CSV and JSON carry the exact NUMERIC value ("5000.00"),
never a float.

CSV is opened in spreadsheets, and partner text reaches it unchanged: a text cell that a
spreadsheet would run as a formula is neutralised (OWASP, "CSV Injection") unless raw output
is asked for. Number columns never are: "-12.50" stays a number.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg

# A cell starting with one of these is a formula to Excel, LibreOffice or Google Sheets.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Export:
    columns: tuple[str, ...]
    query: str
    numbers: frozenset[str] = frozenset()  # columns holding numbers (decimals as exact text)
    # Encrypted personal columns: the query adds the row's personal_key_id after `columns`
    # and they are decrypted for the caller (security/personal.py).
    personal: tuple[str, ...] = ()


WHERE = "client_id = %(client_id)s AND business_date = %(business_date)s"

EXPORTS: dict[str, Export] = {
    "portfolio-summary": Export(
        (
            "portfolio_reference",
            "client_reference",
            "account_number",
            "cash_balance",
            "number_of_transactions",
            "sum_of_deposits",
        ),
        f"""SELECT portfolio_reference, client_reference, account_number,
                   cash_balance::text, number_of_transactions, sum_of_deposits::text
            FROM etl.portfolio_summary WHERE {WHERE}
            ORDER BY portfolio_reference""",
        frozenset(("account_number", "cash_balance", "number_of_transactions", "sum_of_deposits")),
    ),
    "client-tax": Export(
        ("client_reference", "tax_free_allowance", "taxes_paid"),
        f"""SELECT client_reference, tax_free_allowance::text, taxes_paid::text
            FROM etl.client_tax_summary WHERE {WHERE}
            ORDER BY client_reference""",
        frozenset(("tax_free_allowance", "taxes_paid")),
    ),
    "rejections": Export(
        (
            "entity",
            "source_key",
            "source_version",
            "line_number",
            "column_name",
            "value",
            "reason",
        ),
        f"""SELECT entity, source_key, source_version, line_number, column_name, value, reason
            FROM audit.rejections WHERE {WHERE}
            ORDER BY entity, line_number NULLS FIRST, column_name NULLS FIRST, rejection_id""",
        frozenset(("line_number",)),
    ),
    "quality-issues": Export(
        ("issue", "entity", "reference", "detail"),
        f"""SELECT issue, entity, reference, detail
            FROM audit.data_quality_issues WHERE {WHERE}
            ORDER BY issue, entity, reference, detail""",
    ),
    "messages": Export(
        ("message_type", "message_group_id", "deduplication_id", "body"),
        # The publisher's messages and the partner notices (dataharvest.ops.notices).
        f"""SELECT message_type, message_group_id, deduplication_id, body::text
            FROM etl.partner_messages WHERE {WHERE}
            UNION ALL
            SELECT message_type, client_id, deduplication_id, body::text
            FROM audit.partner_notices WHERE {WHERE}
            ORDER BY 1, 4""",
    ),
    # The clients file as stored, names decrypted (UNAVAILABLE once the client is forgotten).
    "clients": Export(
        ("client_reference", "first_name", "last_name", "tax_free_allowance"),
        f"""SELECT client_reference, first_name, last_name, tax_free_allowance::text,
                   personal_key_id
            FROM raw_store.clients WHERE {WHERE}
            ORDER BY client_reference""",
        frozenset(("tax_free_allowance",)),
        personal=("first_name", "last_name"),
    ),
}


def rows(
    conn: psycopg.Connection, table: str, client_id: str, business_date: date
) -> list[dict[str, Any]]:
    """The export `table` of one client and date as dicts keyed by SPEC's columns.

    Decimals are exact strings; `body` of a message is its JSON text.
    """
    export = EXPORTS[table]
    params = {"client_id": client_id, "business_date": business_date}
    names = (*export.columns, "personal_key_id") if export.personal else export.columns
    records = [
        dict(zip(names, row, strict=True)) for row in conn.execute(export.query, params).fetchall()
    ]
    if export.personal:
        from dataharvest.security import personal

        records = personal.decrypt_rows(conn, client_id, records, export.personal)
    return records


def neutralize(cell: str) -> str:
    """A text cell a spreadsheet shows as the text it is: one that would start a formula gets
    a leading `'` (which spreadsheets hide)."""
    return f"'{cell}" if cell.startswith(FORMULA_STARTS) else cell


def to_csv(table: str, records: list[dict[str, Any]], raw: bool = False) -> str:
    """CSV with SPEC's header; text cells neutralised unless `raw`."""
    export = EXPORTS[table]
    if not raw:
        records = [
            {
                column: neutralize(value)
                if isinstance(value, str) and column not in export.numbers
                else value
                for column, value in record.items()
            }
            for record in records
        ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=export.columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def to_json(table: str, records: list[dict[str, Any]]) -> str:
    """An array of objects; a message's body is embedded as the JSON object it is."""
    if table == "messages":
        records = [{**r, "body": json.loads(r["body"])} for r in records]
    return json.dumps(records, indent=2, ensure_ascii=False)


def output_counts(conn: psycopg.Connection, client_id: str) -> list[dict[str, Any]]:
    """Rows per export per business date of a client: the summary `dataharvest run` ends with."""
    query = """
    SELECT to_char(d.business_date, 'YYYYMMDD') AS business_date,
        (SELECT count(*) FROM etl.portfolio_summary s
         WHERE s.client_id = %(c)s AND s.business_date = d.business_date) AS portfolio_summary,
        (SELECT count(*) FROM etl.client_tax_summary t
         WHERE t.client_id = %(c)s AND t.business_date = d.business_date) AS client_tax,
        (SELECT count(*) FROM audit.rejections r
         WHERE r.client_id = %(c)s AND r.business_date = d.business_date) AS rejections,
        (SELECT count(*) FROM audit.data_quality_issues q
         WHERE q.client_id = %(c)s AND q.business_date = d.business_date) AS quality_issues,
        (SELECT count(*) FROM etl.partner_messages m
         WHERE m.client_id = %(c)s AND m.business_date = d.business_date) AS messages
    FROM (SELECT DISTINCT business_date FROM audit.file_loads
          WHERE client_id = %(c)s AND business_date IS NOT NULL) d
    ORDER BY d.business_date
    """
    cursor = conn.execute(query, {"c": client_id})
    names = [column.name for column in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
