"""Personal data at the field level (migration 0011_personal_data, security/personal.py): what
persistence stores is ciphertext under the client's data key, exports decrypt it, the columns a
client marks personal are encrypted too, and `dataharvest client forget` shreds the key."""

from __future__ import annotations

import csv
import uuid
from datetime import date
from pathlib import Path

import pytest
from drops import upload_examples

from dataharvest import exports
from dataharvest.security import personal
from dataharvest_local import cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "acme-bank"
DAY = date(2024, 1, 2)


def clients_file() -> list[dict[str, str]]:
    with (EXAMPLES / "clients_20240102.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def loaded(stack_info, wait_quiet_module) -> str:
    client_id = f"t-{uuid.uuid4().hex[:10]}"
    upload_examples(stack_info, client_id)
    wait_quiet_module()
    return client_id


@pytest.fixture(scope="module")
def wait_quiet_module(local_stack):
    def wait(timeout: float = 120.0) -> None:
        assert local_stack.runner.wait_quiet(timeout), local_stack.runner.status()

    return wait


def test_names_are_stored_only_as_ciphertext_with_the_key_id(db, loaded):
    rows = db.execute(
        "SELECT client_reference, first_name, last_name, personal_key_id "
        "FROM raw_store.clients WHERE client_id = %s AND business_date = %s",
        (loaded, DAY),
    ).fetchall()
    (key_id,) = db.execute(
        "SELECT key_id FROM vault.client_keys WHERE client_id = %s", (loaded,)
    ).fetchone()
    expected = {r["client_reference"]: r for r in clients_file()}
    assert len(rows) == len(expected)
    clear = {v for r in expected.values() for v in (r["first_name"], r["last_name"]) if v}
    for _reference, first, last, row_key in rows:
        assert row_key == (key_id if first or last else None)
        assert first not in clear and last not in clear
    # What the lake exporter and the transformers read (raw.clients) is the same ciphertext.
    view = db.execute(
        "SELECT first_name FROM raw.clients WHERE client_id = %s", (loaded,)
    ).fetchall()
    assert {v for (v,) in view}.isdisjoint(clear)
    # The wrapped key is no data key in clear: 32 bytes of AES-256 are not what is stored.
    (wrapped,) = db.execute(
        "SELECT wrapped_key FROM vault.client_keys WHERE client_id = %s", (loaded,)
    ).fetchone()
    assert len(bytes(wrapped)) > 32


def test_the_clients_export_decrypts_and_the_outputs_are_unchanged(db, loaded):
    records = exports.rows(db, "clients", loaded, DAY)
    assert [(r["client_reference"], r["first_name"], r["last_name"]) for r in records] == sorted(
        (r["client_reference"], r["first_name"] or None, r["last_name"] or None)
        for r in clients_file()
    )
    assert exports.rows(db, "client-tax", loaded, DAY)  # the transformers still ran


def test_a_value_under_another_clients_key_does_not_decrypt(db, loaded):
    (token,) = db.execute(
        "SELECT first_name FROM raw_store.clients WHERE client_id = %s LIMIT 1", (loaded,)
    ).fetchone()
    other = f"t-{uuid.uuid4().hex[:10]}"
    with db.transaction():
        key = personal.data_key(db, other)
        db.execute("DELETE FROM vault.client_keys WHERE client_id = %s", (other,))
    with pytest.raises(personal.PersonalDataError):
        key.decrypt("first_name", token)


def test_a_column_the_client_marks_personal_is_encrypted_too(stack_info, db, wait_quiet):
    client_id = f"t-{uuid.uuid4().hex[:10]}"
    assert cli.main(["client", "personal", client_id, "portfolios.agent_code"]) == 0
    upload_examples(stack_info, client_id)
    wait_quiet()
    agents = db.execute(
        "SELECT agent_code, personal_key_id FROM raw_store.portfolios WHERE client_id = %s",
        (client_id,),
    ).fetchall()
    assert agents and all(code != "AG7" and key for code, key in agents if code)
    assert exports.rows(db, "portfolio-summary", client_id, DAY)


def test_bad_personal_column_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["client", "personal", "acme", "accounts.cash_balance"])
    assert exit_.value.code == 2
    assert "cannot be personal" in capsys.readouterr().err


def test_forget_shreds_the_key_records_it_and_exports_show_unavailable(db, loaded, capsys):
    assert cli.main(["client", "forget", loaded, "--json"]) == 0
    assert '"forgotten": true' in capsys.readouterr().out
    assert db.execute(
        "SELECT count(*) FROM vault.client_keys WHERE client_id = %s", (loaded,)
    ).fetchone() == (0,)
    erasures = db.execute(
        "SELECT key_id, requested_by FROM audit.erasures WHERE client_id = %s", (loaded,)
    ).fetchall()
    assert len(erasures) == 1 and erasures[0][0]
    records = exports.rows(db, "clients", loaded, DAY)
    named = [r for r in records if r["first_name"] is not None]
    assert named and all(r["first_name"] == personal.UNAVAILABLE for r in named)
    assert all(r["last_name"] in (None, personal.UNAVAILABLE) for r in records)
    # The rest of the client's data is untouched.
    assert exports.rows(db, "client-tax", loaded, DAY)
