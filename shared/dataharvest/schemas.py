"""The input file schemas of docs/SPEC.md §2: per entity, its columns, types and rules.

One table, read by persistence (header matching, validation SQL, raw insert) and the CLI
(alias targets). The raw.<entity> tables mirror it (migrations/versions/0001).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ColumnType = Literal["integer", "decimal", "text"]

# docs/SPEC.md §2.3, verbatim: no exponent, no thousands separator, '.' as decimal separator.
INTEGER_PATTERN = r"^[+-]?[0-9]+$"
DECIMAL_PATTERN = r"^[+-]?[0-9]+(\.[0-9]+)?$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    required: bool = True
    unique: bool = False  # within one file: the first row with a key is kept
    non_negative: bool = False
    currency: bool = False  # three upper-case letters
    upper: bool = False  # upper-cased on load


@dataclass(frozen=True)
class Entity:
    name: str
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    @property
    def unique_column(self) -> Column:
        return next(c for c in self.columns if c.unique)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


ENTITIES: dict[str, Entity] = {
    entity.name: entity
    for entity in (
        Entity(
            "clients",
            (
                Column("record_id", "integer"),
                Column("first_name", "text", required=False),
                Column("last_name", "text", required=False),
                Column("client_reference", "text", unique=True),
                Column("tax_free_allowance", "decimal", non_negative=True),
            ),
        ),
        Entity(
            "portfolios",
            (
                Column("record_id", "integer"),
                Column("account_number", "integer"),
                Column("portfolio_reference", "text", unique=True),
                Column("client_reference", "text"),
                Column("agent_code", "text", required=False),
            ),
        ),
        Entity(
            "accounts",
            (
                Column("record_id", "integer"),
                Column("account_number", "integer", unique=True),
                Column("cash_balance", "decimal"),
                Column("currency", "text", currency=True),
                Column("taxes_paid", "decimal", non_negative=True),
            ),
        ),
        Entity(
            "transactions",
            (
                Column("record_id", "integer"),
                Column("account_number", "integer"),
                Column("transaction_reference", "text", unique=True),
                Column("amount", "decimal"),
                Column("keyword", "text", upper=True),
            ),
        ),
    )
}
