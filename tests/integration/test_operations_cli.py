"""The CLI that explains (issue 17): `run` / `remove` say what became of each key, `uploads`
lists the load history, bad arguments are one line and exit code 2, `config set-expectations`
and `late check`, and `--stage NAME` against the local endpoint configured as a stage."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlparse

import boto3
import pytest
from persistence_support import accounts_file, key, put

from dataharvest import config, metastore
from dataharvest_local import cli
from dataharvest_local import ops_stage as stage

pytestmark = pytest.mark.integration


def one_line_exit_2(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as raised:
        cli.main(argv)
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_run_says_what_became_of_each_key(client_id, tmp_path, capsys, local_stack) -> None:
    good = tmp_path / "accounts_20240102.csv"
    good.write_text(accounts_file(4))
    misnamed = tmp_path / "acounts_20240102.csv"
    misnamed.write_text(accounts_file(2))
    assert cli.main(["run", str(good), str(misnamed), "--client", client_id]) == 0
    out = capsys.readouterr().out
    assert f"{client_id}/acounts_20240102.csv" in out and "unroutable" in out
    assert "not processed: unknown entity 'acounts': expected one of clients" in out
    assert "{client_id}/{entity}_{YYYYMMDD}.csv[.gz]" in out
    assert f"{client_id}/accounts_20240102.csv" in out and "4 rows loaded, 0 rejected" in out

    # The same file again: unchanged.
    assert cli.main(["run", str(good), "--client", client_id]) == 0
    assert "same content as the current load" in capsys.readouterr().out

    # A whole-file rejection says why.
    bad = tmp_path / "sub" / "accounts_20240103.csv"
    bad.parent.mkdir()
    bad.write_text("record_id,account_number\n1,2\n")
    assert cli.main(["run", str(bad), "--client", client_id]) == 0
    out = capsys.readouterr().out
    assert "rejected whole: the header lacks required column(s)" in out

    # `remove` says what became of each key too.
    argv = ["remove", "accounts_20240102.csv", "acounts_20240102.csv", "--client", client_id]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"{client_id}/accounts_20240102.csv: retracted" in out
    assert f"{client_id}/acounts_20240102.csv: unchanged: nothing was loaded from this key" in out


def test_uploads_lists_the_load_history(client_id, capsys, wait_quiet) -> None:
    put(key(client_id, "accounts"), accounts_file(3))
    put(key(client_id, "accounts", "20240103"), accounts_file(2))
    wait_quiet()
    capsys.readouterr()
    assert cli.main(["uploads", "--client", client_id, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["business_date"], r["status"], r["rows_loaded"]) for r in rows] == [
        ("2024-01-02", "loaded", 3),
        ("2024-01-03", "loaded", 2),
    ]
    assert cli.main(["uploads", "--client", client_id, "--date", "2024-01-03", "--json"]) == 0
    assert [r["business_date"] for r in json.loads(capsys.readouterr().out)] == ["2024-01-03"]
    assert cli.main(["uploads", "--client", client_id]) == 0
    assert "accounts_20240103.csv" in capsys.readouterr().out


def test_bad_arguments_are_one_line_and_exit_2(client_id, capsys, local_stack) -> None:
    err = one_line_exit_2(capsys, ["uploads", "--client", client_id, "--date", "2024-02-30"])
    assert "'2024-02-30' is not a date" in err
    assert "unknown client" in one_line_exit_2(capsys, ["uploads", "--client", client_id])
    err = one_line_exit_2(
        capsys, ["export", "portfolio-summary", "--client", client_id, "--date", "2024-01-02"]
    )
    assert "unknown client" in err
    err = one_line_exit_2(capsys, ["export", "nope", "--client", client_id, "--date", "20240102"])
    assert "invalid choice: 'nope'" in err
    assert "--client" in one_line_exit_2(capsys, ["run", "x.csv", "--client", "Not_A_Client"])
    err = one_line_exit_2(
        capsys,
        [
            "config",
            "set-expectations",
            "--client",
            client_id,
            "--entities",
            "accounts",
            "--by",
            "6am",
            "--tz",
            "Europe/Berlin",
        ],
    )
    assert "--by '6am'" in err
    err = one_line_exit_2(
        capsys,
        [
            "config",
            "set-expectations",
            "--client",
            client_id,
            "--entities",
            "acounts",
            "--by",
            "06:00",
            "--tz",
            "Europe/Berlin",
        ],
    )
    assert "--entities" in err
    err = one_line_exit_2(
        capsys,
        [
            "config",
            "set-expectations",
            "--client",
            client_id,
            "--entities",
            "accounts",
            "--by",
            "06:00",
            "--tz",
            "Mars/Olympus",
        ],
    )
    assert "--tz" in err


def test_set_expectations_and_late_check(client_id, capsys, local_stack) -> None:
    argv = [
        "config",
        "set-expectations",
        "--client",
        client_id,
        "--entities",
        "clients,portfolios,accounts,transactions",
        "--by",
        "06:00",
        "--tz",
        "Europe/Berlin",
        "--days",
        "mon-fri",
    ]
    assert cli.main(argv) == 0
    stored = json.loads(capsys.readouterr().out)
    assert stored["entities"] == ["clients", "portfolios", "accounts", "transactions"]
    assert stored["days"] == ["mon", "tue", "wed", "thu", "fri"] and stored["by"] == "06:00"
    # Set today: nothing before today is ever late; today's inputs are due at 06:00 Berlin.
    today = datetime.now(UTC).date()
    early = f"{today.isoformat()}T00:30:00+00:00"
    assert cli.main(["late", "check", "--client", client_id, "--at", early, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["late"] == []
    evening = f"{today.isoformat()}T22:00:00+00:00"
    assert cli.main(["late", "check", "--client", client_id, "--at", evening, "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["late"]
    expected = 4 if today.isoweekday() <= 5 else 0
    assert len(found) == expected
    assert all(f["business_date"] == today.isoformat() for f in found)
    # Once per input and date.
    assert cli.main(["late", "check", "--client", client_id, "--at", evening, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["late"] == []
    one_line_exit_2(capsys, ["late", "check", "--at", "yesterday"])


@pytest.fixture
def as_a_stage(stack_info, monkeypatch):
    """The local endpoint configured as a deployed stage: the stage's database secret exists
    (CloudFormation creates it in the cloud), and the CLI is given nothing but the endpoint,
    region and credentials."""
    url = urlparse(stack_info.database_url)
    query = parse_qs(url.query)
    secret = {
        "username": url.username or "postgres",
        "password": url.password or "",
        "host": query.get("host", [url.hostname])[0],
        "port": url.port or 5432,
        "dbname": url.path.lstrip("/"),
        "sslmode": "disable",
    }
    name = stage.resources(stack_info.stage).database_secret
    secrets = boto3.client("secretsmanager")
    try:
        secrets.create_secret(Name=name, SecretString=json.dumps(secret))
    except secrets.exceptions.ResourceExistsException:
        secrets.put_secret_value(SecretId=name, SecretString=json.dumps(secret))
    for variable in ("DATABASE_URL", "METASTORE_TABLE", "RESULT_QUEUE_URL", "DATAHARVEST_STAGE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv(stage.ENV_FLAG, raising=False)
    yield stack_info.stage
    config.environment.cache_clear()
    metastore.table.cache_clear()


def test_stage_commands_against_the_local_endpoint_as_a_stage(
    client_id, capsys, wait_quiet, as_a_stage
) -> None:
    put(key(client_id, "accounts"), accounts_file(3))
    wait_quiet()
    capsys.readouterr()
    assert cli.main(["--stage", as_a_stage, "uploads", "--client", client_id, "--json"]) == 0
    assert [r["status"] for r in json.loads(capsys.readouterr().out)] == ["loaded"]
    assert cli.main(["--stage", as_a_stage, "status", "--client", client_id, "--json"]) == 0
    (found,) = json.loads(capsys.readouterr().out)
    assert found["account_persisted"] is True and found["account_rows"] == 3
    assert (
        cli.main(
            [
                "--stage",
                as_a_stage,
                "export",
                "rejections",
                "--client",
                client_id,
                "--date",
                "20240102",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("entity,source_key")
    assert cli.main(["--stage", as_a_stage, "transformers", "list", "--json"]) == 0
    assert "partner_publisher" in {e["name"] for e in json.loads(capsys.readouterr().out)}
    assert cli.main(["--stage", as_a_stage, "dlq", "list", "--json"]) == 0
    json.loads(capsys.readouterr().out)
    # The database really came from the stage's secret.
    import os

    assert "sslmode=disable" in os.environ["DATABASE_URL"]
    err = one_line_exit_2(capsys, ["--stage", as_a_stage, "run", "x.csv", "--client", client_id])
    assert "local stack only" in err
    assert "local stack only" in one_line_exit_2(capsys, ["--stage", as_a_stage, "up"])
