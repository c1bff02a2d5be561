"""Retention: inputs past their client's retention leave raw storage whole, and only they."""

from __future__ import annotations

import json
from datetime import date

import pytest
from persistence_support import accounts_file, input_state, key, put, raw_rows

from dataharvest.persistence import storage
from dataharvest.persistence.retention import apply_retention
from dataharvest.persistence.settings import set_retention_days
from dataharvest_local import cli

pytestmark = pytest.mark.integration


def client_partition_exists(db, client_id: str, day: date) -> bool:
    name = storage.client_partition("accounts", day, client_id)
    row = db.execute("SELECT to_regclass(%s)", (f"raw_store.{name}",)).fetchone()
    return row[0] is not None


def test_retention_drops_only_expired_inputs(client_id, db, wait_quiet) -> None:
    put(key(client_id, "accounts", "20240102"), accounts_file(3))
    put(key(client_id, "accounts", "20240103"), accounts_file(4))
    wait_quiet()
    assert len(raw_rows(db, "accounts", client_id)) == 7
    assert client_partition_exists(db, client_id, date(2024, 1, 2))

    # 2024-01-02 + 400 days = 2025-02-05: on that day both dates are still kept.
    assert apply_retention(db, date(2025, 2, 5), client_id) == []
    expired = apply_retention(db, date(2025, 2, 6), client_id)
    assert [(e.entity, e.business_date, e.retention_days) for e in expired] == [
        ("accounts", date(2024, 1, 2), 400)
    ]
    wait_quiet()

    rows = db.execute(
        "SELECT business_date, count(*) FROM raw.accounts WHERE client_id = %s GROUP BY 1",
        (client_id,),
    ).fetchall()
    assert rows == [(date(2024, 1, 3), 4)]
    assert not client_partition_exists(db, client_id, date(2024, 1, 2))
    assert client_partition_exists(db, client_id, date(2024, 1, 3))
    current = db.execute(
        "SELECT status, reason FROM audit.file_loads WHERE client_id = %s "
        "AND business_date = '2024-01-02' AND is_current",
        (client_id,),
    ).fetchall()
    assert current == [
        (
            "retracted",
            "expired: business date 2024-01-02 is more than 400 days before 2025-02-06 "
            "(the client's retention)",
        )
    ]
    assert input_state(client_id, "account", "20240102")["persisted"] is False
    assert input_state(client_id, "account", "20240103")["persisted"] is True
    # A second run finds nothing more to do.
    assert apply_retention(db, date(2025, 2, 6), client_id) == []


def test_retention_is_per_client(client_id, db, wait_quiet, capsys) -> None:
    set_retention_days(db, client_id, "1000")
    put(key(client_id, "accounts", "20240102"), accounts_file(2))
    wait_quiet()
    assert apply_retention(db, date(2025, 2, 6), client_id) == []
    assert len(raw_rows(db, "accounts", client_id)) == 2

    capsys.readouterr()
    args = ["retention", "apply", "--client", client_id, "--as-of", "2026-09-29", "--json"]
    assert cli.main(args) == 0
    assert json.loads(capsys.readouterr().out) == [
        {
            "client_id": client_id,
            "entity": "accounts",
            "business_date": "2024-01-02",
            "retention_days": 1000,
        }
    ]
    assert raw_rows(db, "accounts", client_id) == []
