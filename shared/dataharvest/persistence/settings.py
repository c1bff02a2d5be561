"""Per-client persistence settings, stored durably in config.client_settings.

`header_aliases` is {entity: {alias: column}} with aliases kept normalized (trimmed, lower
case), the same normalization header names get before matching.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from dataharvest.config import (
    DEFAULT_MAX_INFLATED_BYTES,
    DEFAULT_MAX_INFLATION_RATIO,
    DEFAULT_MAX_REJECT_RATIO,
    DEFAULT_RETENTION_DAYS,
)
from dataharvest.persistence.source import InflationLimits
from dataharvest.schemas import ENTITIES


@dataclass(frozen=True)
class ClientSettings:
    client_id: str
    max_reject_ratio: Decimal = Decimal(DEFAULT_MAX_REJECT_RATIO)
    header_aliases: dict[str, dict[str, str]] = field(default_factory=dict)
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES
    max_inflation_ratio: Decimal = Decimal(DEFAULT_MAX_INFLATION_RATIO)
    retention_days: int = DEFAULT_RETENTION_DAYS
    # When a setting that changes what a file loads as last changed (aliases, ratio,
    # inflation limits); None: the client never changed them. Retention does not count: it
    # never changes what a file loads as.
    updated_at: datetime | None = None

    def aliases(self, entity: str) -> dict[str, str]:
        return self.header_aliases.get(entity, {})

    @property
    def inflation_limits(self) -> InflationLimits:
        return InflationLimits(self.max_inflated_bytes, self.max_inflation_ratio)

    def as_dict(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "max_reject_ratio": str(self.max_reject_ratio),
            "header_aliases": self.header_aliases,
            "max_inflated_bytes": self.max_inflated_bytes,
            "max_inflation_ratio": str(self.max_inflation_ratio),
            "retention_days": self.retention_days,
        }


def normalize_header(name: str) -> str:
    """Header names match case-insensitively after trimming (docs/SPEC.md §2.2)."""
    return name.strip().lower()


def get_settings(conn: psycopg.Connection, client_id: str) -> ClientSettings:
    row = conn.execute(
        "SELECT max_reject_ratio, header_aliases, max_inflated_bytes, max_inflation_ratio, "
        "retention_days, updated_at FROM config.client_settings WHERE client_id = %s",
        (client_id,),
    ).fetchone()
    if row is None:
        return ClientSettings(client_id)
    return ClientSettings(
        client_id,
        max_reject_ratio=row[0],
        header_aliases=row[1],
        max_inflated_bytes=row[2],
        max_inflation_ratio=row[3],
        retention_days=row[4],
        updated_at=row[5],
    )


def set_alias(
    conn: psycopg.Connection, client_id: str, entity: str, alias: str, column: str
) -> None:
    """Make header `alias` mean `column` in this client's `entity` files."""
    if entity not in ENTITIES:
        raise ValueError(f"unknown entity {entity!r}: expected one of {', '.join(ENTITIES)}")
    if column not in ENTITIES[entity].column_names:
        raise ValueError(
            f"{entity} has no column {column!r}: expected one of "
            f"{', '.join(ENTITIES[entity].column_names)}"
        )
    alias = normalize_header(alias)
    if not alias:
        raise ValueError("the alias is empty")
    if alias in ENTITIES[entity].column_names:
        raise ValueError(f"{alias!r} is already a column of {entity}; it cannot be an alias")
    conn.execute(
        """
        INSERT INTO config.client_settings AS s (client_id, header_aliases)
        VALUES (%(client)s, jsonb_build_object(%(entity)s::text, %(pair)s::jsonb))
        ON CONFLICT (client_id) DO UPDATE SET
            header_aliases = jsonb_set(
                s.header_aliases, ARRAY[%(entity)s::text],
                coalesce(s.header_aliases -> %(entity)s::text, '{}'::jsonb) || %(pair)s::jsonb),
            updated_at = now()
        """,
        {"client": client_id, "entity": entity, "pair": Jsonb({alias: column})},
    )


def set_max_reject_ratio(conn: psycopg.Connection, client_id: str, ratio: str) -> Decimal:
    """Set the share of rejected rows above which a file is rejected whole."""
    try:
        value = Decimal(ratio)
    except InvalidOperation:
        raise ValueError(f"{ratio!r} is not a number (e.g. 0.10)") from None
    if not Decimal(0) <= value <= Decimal(1):
        raise ValueError(f"max_reject_ratio must be between 0 and 1, got {ratio}")
    conn.execute(
        """
        INSERT INTO config.client_settings (client_id, max_reject_ratio) VALUES (%s, %s)
        ON CONFLICT (client_id) DO UPDATE SET
            max_reject_ratio = excluded.max_reject_ratio, updated_at = now()
        """,
        (client_id, value),
    )
    return value


def set_retention_days(conn: psycopg.Connection, client_id: str, days: str) -> int:
    """Keep this client's raw inputs for `days` days after their business date."""
    try:
        value = int(days)
    except ValueError:
        raise ValueError(f"{days!r} is not a whole number of days (e.g. 400)") from None
    if value < 1:
        raise ValueError(f"retention must be at least 1 day, got {days}")
    # Not `updated_at`: retention never changes what a file loads as.
    conn.execute(
        """
        INSERT INTO config.client_settings (client_id, retention_days, updated_at)
        VALUES (%s, %s, 'epoch')
        ON CONFLICT (client_id) DO UPDATE SET retention_days = excluded.retention_days
        """,
        (client_id, value),
    )
    return value


def set_inflation_limits(
    conn: psycopg.Connection,
    client_id: str,
    max_inflated_bytes: str | None = None,
    max_inflation_ratio: str | None = None,
) -> tuple[int, Decimal]:
    """Set how far this client's uploads may inflate; returns the limits now in force."""
    if max_inflated_bytes is None and max_inflation_ratio is None:
        raise ValueError("give --max-inflated-bytes, --max-inflation-ratio or both")
    size = ratio = None
    if max_inflated_bytes is not None:
        try:
            size = int(max_inflated_bytes)
        except ValueError:
            raise ValueError(
                f"{max_inflated_bytes!r} is not a whole number of bytes (e.g. 21474836480)"
            ) from None
        if size <= 0:
            raise ValueError(f"max_inflated_bytes must be positive, got {max_inflated_bytes}")
    if max_inflation_ratio is not None:
        try:
            ratio = Decimal(max_inflation_ratio)
        except InvalidOperation:
            raise ValueError(f"{max_inflation_ratio!r} is not a number (e.g. 100)") from None
        if not ratio.is_finite() or ratio < 1:
            raise ValueError(f"max_inflation_ratio must be at least 1, got {max_inflation_ratio}")
    row = conn.execute(
        """
        INSERT INTO config.client_settings AS s (client_id, max_inflated_bytes, max_inflation_ratio)
        VALUES (%(client)s, coalesce(%(size)s::bigint, %(default_size)s),
                coalesce(%(ratio)s::numeric, %(default_ratio)s))
        ON CONFLICT (client_id) DO UPDATE SET
            max_inflated_bytes = coalesce(%(size)s::bigint, s.max_inflated_bytes),
            max_inflation_ratio = coalesce(%(ratio)s::numeric, s.max_inflation_ratio),
            updated_at = now()
        RETURNING max_inflated_bytes, max_inflation_ratio
        """,
        {
            "client": client_id,
            "size": size,
            "ratio": ratio,
            "default_size": DEFAULT_MAX_INFLATED_BYTES,
            "default_ratio": Decimal(DEFAULT_MAX_INFLATION_RATIO),
        },
    ).fetchone()
    assert row is not None
    return row[0], row[1]
