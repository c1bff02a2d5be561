"""Client settings through the API: create/replace, read, delete, each in one transaction."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg

from dataharvest.persistence import settings


def exists(conn: psycopg.Connection, client_id: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM config.client_settings WHERE client_id = %s", (client_id,)
    ).fetchone()
    return row is not None


def read(conn: psycopg.Connection, client_id: str) -> dict[str, Any]:
    return {**settings.get_settings(conn, client_id).as_dict(), "stored": exists(conn, client_id)}


def write(
    conn: psycopg.Connection,
    client_id: str,
    *,
    header_aliases: dict[str, dict[str, str]] | None = None,
    max_reject_ratio: Decimal | None = None,
    retention_days: int | None = None,
    max_inflated_bytes: int | None = None,
    max_inflation_ratio: Decimal | None = None,
) -> tuple[bool, dict[str, Any]]:
    """Set the given settings (the others keep their value, or the default for a new client);
    `header_aliases` replaces the client's whole alias map. Returns (created, settings).
    ValueError (nothing changed) when a value breaks a rule of persistence.settings."""
    with conn.transaction():
        created = not exists(conn, client_id)
        if header_aliases is not None:
            conn.execute(
                """INSERT INTO config.client_settings (client_id) VALUES (%s)
                   ON CONFLICT (client_id) DO UPDATE SET header_aliases = '{}'::jsonb,
                   updated_at = now()""",
                (client_id,),
            )
            for entity, pairs in sorted(header_aliases.items()):
                for alias, column in sorted(pairs.items()):
                    settings.set_alias(conn, client_id, entity, alias, column)
        if max_reject_ratio is not None:
            settings.set_max_reject_ratio(conn, client_id, str(max_reject_ratio))
        if retention_days is not None:
            settings.set_retention_days(conn, client_id, str(retention_days))
        if max_inflated_bytes is not None or max_inflation_ratio is not None:
            settings.set_inflation_limits(
                conn,
                client_id,
                None if max_inflated_bytes is None else str(max_inflated_bytes),
                None if max_inflation_ratio is None else str(max_inflation_ratio),
            )
        if created and not exists(conn, client_id):
            conn.execute("INSERT INTO config.client_settings (client_id) VALUES (%s)", (client_id,))
        return created, read(conn, client_id)


def delete(conn: psycopg.Connection, client_id: str) -> bool:
    """Drop the client's settings (the defaults apply again); False when it had none."""
    with conn.transaction():
        gone = conn.execute(
            "DELETE FROM config.client_settings WHERE client_id = %s RETURNING client_id",
            (client_id,),
        ).fetchone()
    return gone is not None
