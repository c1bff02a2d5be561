"""audit.api_calls: one row per mutating API call, refused or not."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from dataharvest.api.auth import Principal

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def record(
    conn: psycopg.Connection,
    *,
    principal: Principal | None,
    method: str,
    path: str,
    action: str,
    target: str | None,
    request: Any,
    status: int,
    result: str | None,
    request_id: str | None,
) -> None:
    with conn.transaction():
        conn.execute(
            """INSERT INTO audit.api_calls (request_id, subject, role, caller_client, method,
                   path, action, target, request, status, result)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (
                request_id,
                principal.subject if principal else None,
                principal.role if principal else None,
                principal.client_id if principal else None,
                method,
                path,
                action,
                target,
                None if request is None else Jsonb(request),
                status,
                None if result is None else result[:1000],
            ),
        )
