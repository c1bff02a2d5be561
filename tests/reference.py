"""A reference implementation of docs/SPEC.md §2-§3, for tests only.

Plain Python and `decimal`, written from the specification text rather than from our SQL: it reads
the same CSV bytes that are uploaded, applies the row rules and the whole-file rejection
threshold, links, and computes the summaries, the data-quality issues and the partner message
bodies. Tests compare the system's exports with it exactly.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from decimal import Decimal, localcontext

INTEGER = re.compile(r"[+-]?[0-9]+")
DECIMAL = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")
CURRENCY = re.compile(r"[A-Z]{3}")
WHITE_SPACE = " \t\r\n"
BIGINT = 2**63

# entity -> (column, type, required, unique, non_negative, currency), SPEC §2.2 table.
SCHEMA: dict[str, tuple[tuple[str, str, bool, bool, bool, bool], ...]] = {
    "clients": (
        ("record_id", "integer", True, False, False, False),
        ("first_name", "text", False, False, False, False),
        ("last_name", "text", False, False, False, False),
        ("client_reference", "text", True, True, False, False),
        ("tax_free_allowance", "decimal", True, False, True, False),
    ),
    "portfolios": (
        ("record_id", "integer", True, False, False, False),
        ("account_number", "integer", True, False, False, False),
        ("portfolio_reference", "text", True, True, False, False),
        ("client_reference", "text", True, False, False, False),
        ("agent_code", "text", False, False, False, False),
    ),
    "accounts": (
        ("record_id", "integer", True, False, False, False),
        ("account_number", "integer", True, True, False, False),
        ("cash_balance", "decimal", True, False, False, False),
        ("currency", "text", True, False, False, True),
        ("taxes_paid", "decimal", True, False, True, False),
    ),
    "transactions": (
        ("record_id", "integer", True, False, False, False),
        ("account_number", "integer", True, False, False, False),
        ("transaction_reference", "text", True, True, False, False),
        ("amount", "decimal", True, False, False, False),
        ("keyword", "text", True, False, False, False),
    ),
}


def text(value: Decimal) -> str:
    """A NUMERIC's text form as PostgreSQL prints it: plain notation, no negative zero."""
    if value == 0:
        value = value.copy_abs()
    return format(value, "f")


@dataclass
class LoadedFile:
    """The outcome of loading one file: kept rows (typed) and rejected line numbers."""

    rows: list[dict[str, object]] = field(default_factory=list)
    rejected_lines: set[int] = field(default_factory=set)
    whole_file_rejected: bool = False

    @property
    def persisted(self) -> bool:
        return not self.whole_file_rejected


def _broken(column: tuple[str, str, bool, bool, bool, bool], value: str | None) -> bool:
    _, kind, required, _, non_negative, currency = column
    if value is None:
        return required
    if kind == "integer" and (not INTEGER.fullmatch(value) or not -BIGINT <= int(value) < BIGINT):
        return True
    if kind == "decimal" and not DECIMAL.fullmatch(value):
        return True
    if non_negative and Decimal(value) < 0:
        return True
    return bool(currency and not CURRENCY.fullmatch(value))


def _typed(kind: str, value: str | None) -> object:
    if value is None:
        return None
    if kind == "integer":
        return int(value)
    if kind == "decimal":
        return Decimal(value)
    return value


def load_file(
    entity: str, content: bytes, max_reject_ratio: Decimal = Decimal("0.10")
) -> LoadedFile:
    """SPEC §2 for one file: rules per row, first of a unique key kept, ratio threshold."""
    schema = SCHEMA[entity]
    try:
        decoded = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        return LoadedFile(whole_file_rejected=True)
    records = list(csv.reader(io.StringIO(decoded, newline="")))
    if not records:
        return LoadedFile(whole_file_rejected=True)
    header = [name.strip(WHITE_SPACE).lower() for name in records[0]]
    if any(c[0] not in header for c in schema if c[2]):
        return LoadedFile(whole_file_rejected=True)
    index = {name: header.index(name) for name in header}
    loaded = LoadedFile()
    seen_keys: set[object] = set()
    data = records[1:]
    for offset, record in enumerate(data):
        line = offset + 2  # the header is line 1; generated values hold no line breaks
        values = {}
        for column in schema:
            raw = record[index[column[0]]] if column[0] in index else ""
            values[column[0]] = raw.strip(WHITE_SPACE) or None
        if any(_broken(column, values[column[0]]) for column in schema):
            loaded.rejected_lines.add(line)
            continue
        typed = {column[0]: _typed(column[1], values[column[0]]) for column in schema}
        if entity == "transactions":
            typed["keyword"] = str(typed["keyword"]).upper()
        unique = next(column[0] for column in schema if column[3])
        if typed[unique] in seen_keys:
            loaded.rejected_lines.add(line)
            continue
        seen_keys.add(typed[unique])
        loaded.rows.append(typed)
    if data and Decimal(len(loaded.rejected_lines)) / len(data) > max_reject_ratio:
        return LoadedFile(rejected_lines=loaded.rejected_lines, whole_file_rejected=True)
    return loaded


@dataclass
class Outputs:
    portfolio_summary: list[dict[str, object]]
    client_tax: list[dict[str, object]]
    quality_issues: list[dict[str, object]]
    messages: list[tuple[str, dict[str, object]]]  # (type, body) of portfolio/client/issues


def outputs(files: dict[str, LoadedFile]) -> Outputs:
    """SPEC §3 for one client and date, from its loaded inputs (absent ones missing)."""
    with localcontext() as context:
        context.prec = 1000  # exact: NUMERIC has no precision limit at these sizes
        return _outputs({e: f for e, f in files.items() if f.persisted})


def _outputs(files: dict[str, LoadedFile]) -> Outputs:
    empty = Outputs([], [], [], [])
    if not {"clients", "portfolios", "accounts"} <= files.keys():
        return empty
    clients = {c["client_reference"]: c for c in files["clients"].rows}
    accounts = {a["account_number"]: a for a in files["accounts"].rows}
    portfolios = files["portfolios"].rows
    links = [
        p
        for p in portfolios
        if p["client_reference"] in clients and p["account_number"] in accounts
    ]
    issues = []
    for p in portfolios:
        reasons = []
        if p["client_reference"] not in clients:
            reasons.append(f"client_reference {p['client_reference']} is not in the clients file")
        if p["account_number"] not in accounts:
            reasons.append(f"account_number {p['account_number']} is not in the accounts file")
        if reasons:
            issues.append(
                {
                    "issue": "orphan_portfolio",
                    "entity": "portfolios",
                    "reference": p["portfolio_reference"],
                    "detail": "; ".join(reasons),
                    "_account": p["account_number"],
                    "_client": p["client_reference"],
                }
            )
    client_tax = []
    for reference, c in clients.items():
        linked_accounts = {p["account_number"] for p in links if p["client_reference"] == reference}
        taxes = sum((accounts[a]["taxes_paid"] for a in linked_accounts), Decimal(0))
        client_tax.append(
            {
                "client_reference": reference,
                "tax_free_allowance": text(c["tax_free_allowance"]),
                "taxes_paid": text(taxes),
            }
        )
    summary = []
    if "transactions" in files:
        transactions = files["transactions"].rows
        for t in transactions:
            if t["account_number"] not in accounts:
                issues.append(
                    {
                        "issue": "orphan_transaction",
                        "entity": "transactions",
                        "reference": t["transaction_reference"],
                        "detail": (
                            f"account_number {t['account_number']} is not in the accounts file"
                        ),
                        "_account": t["account_number"],
                        "_client": None,
                    }
                )
        for p in links:
            on_account = [t for t in transactions if t["account_number"] == p["account_number"]]
            deposits = [t["amount"] for t in on_account if t["keyword"] == "DEPOSIT"]
            summary.append(
                {
                    "portfolio_reference": p["portfolio_reference"],
                    "client_reference": p["client_reference"],
                    "account_number": p["account_number"],
                    "cash_balance": text(accounts[p["account_number"]]["cash_balance"]),
                    "number_of_transactions": len(on_account),
                    "sum_of_deposits": text(sum(deposits, Decimal(0))),
                }
            )
    messages: list[tuple[str, dict[str, object]]] = []
    for row in summary:
        messages.append(
            (
                "portfolio_message",
                {
                    k: row[k]
                    for k in (
                        "portfolio_reference",
                        "cash_balance",
                        "number_of_transactions",
                        "sum_of_deposits",
                    )
                },
            )
        )
    messages.extend(("client_message", dict(row)) for row in client_tax)
    for issue in issues:
        is_portfolio = issue["entity"] == "portfolios"
        messages.append(
            (
                "error_message",
                {
                    "client_reference": issue["_client"],
                    "portfolio_reference": issue["reference"] if is_portfolio else None,
                    "account_number": str(issue["_account"]),
                    "message": f"{issue['issue']} {issue['reference']}: {issue['detail']}",
                },
            )
        )
    public_issues = [{k: v for k, v in i.items() if not k.startswith("_")} for i in issues]
    return Outputs(
        portfolio_summary=sorted(summary, key=lambda r: str(r["portfolio_reference"])),
        client_tax=sorted(client_tax, key=lambda r: str(r["client_reference"])),
        quality_issues=public_issues,
        messages=messages,
    )
