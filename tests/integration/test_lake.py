"""The lake exporter on the real local stack: uploads through S3 -> persistence -> catapult ->
lake_exporter -> Iceberg tables on the local S3 endpoint with the SQL catalog in PostgreSQL."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import boto3
import psycopg
import pyarrow.parquet as pq
import pytest
from drops import delete_upload
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.expressions import And, EqualTo

from dataharvest import metastore
from dataharvest.lake import catalog as lake_catalog
from dataharvest.lake.export import export_work
from dataharvest.lake.location import read_lake_location
from dataharvest.lake.tables import LAKE_TABLES
from dataharvest.transformers import runtime
from dataharvest.work import WorkMessage
from dataharvest_local import cli

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "examples" / "acme-bank"
DAY = date(2024, 1, 2)
KEY = "20240102"
NAMES = ("clients", "portfolios", "accounts", "transactions")
EXPORTER = runtime.Transformer(name="lake_exporter", output_tables=(), write_outside=export_work)


@pytest.fixture(autouse=True, scope="module")
def lake_exporter_enabled(local_stack):
    """The session stack keeps the exporter off (tests/conftest.py); these tests need it on."""
    from dataharvest import registry

    registry.set_enabled("lake_exporter", True)
    yield
    registry.set_enabled("lake_exporter", False)
    # Later modules move the schedule clock by days, which runs the exporter's daily
    # maintenance over every lake table: without the hundreds of commits made here it has
    # nothing to read (tables are created again by the next export).
    assert local_stack.runner.wait_quiet(120), local_stack.runner.status()
    lake = read_lake_location()
    cat = lake_catalog.open_catalog(lake)
    for name in LAKE_TABLES:
        try:
            cat.drop_table(lake_catalog.identifier(lake, name))
        except NoSuchTableError:
            continue


def upload(stack_info, client_id: str, name: str, content: bytes) -> None:
    boto3.client("s3").put_object(
        Bucket=stack_info.export("LandingBucketName"), Key=f"{client_id}/{name}", Body=content
    )


def upload_example(stack_info, client_id: str) -> None:
    for name in NAMES:
        upload(
            stack_info, client_id, f"{name}_{KEY}.csv", (EXAMPLE / f"{name}_{KEY}.csv").read_bytes()
        )


def lake_table(pg_name: str):
    lake = read_lake_location()
    return lake_catalog.open_catalog(lake).load_table(lake_catalog.identifier(lake, pg_name))


def lake_rows(pg_name: str, client_id: str, snapshot_id: int | None = None) -> list[tuple]:
    where = And(EqualTo("client_id", client_id), EqualTo("business_date", DAY.isoformat()))
    arrow = lake_table(pg_name).scan(row_filter=where, snapshot_id=snapshot_id).to_arrow()
    return sorted(tuple(r.values()) for r in arrow.to_pylist())


def lake_amounts(client_id: str) -> dict[str, Decimal]:
    """transaction_reference -> amount of the client's lake slice of raw.transactions."""
    where = And(EqualTo("client_id", client_id), EqualTo("business_date", DAY.isoformat()))
    arrow = lake_table("raw.transactions").scan(row_filter=where).to_arrow()
    return {r["transaction_reference"]: r["amount"] for r in arrow.to_pylist()}


def pg_rows(db, pg_name: str, client_id: str) -> list[tuple]:
    columns = [f.name for f in lake_table(pg_name).schema().fields]
    rows = db.execute(
        f"SELECT {', '.join(columns)} FROM {pg_name} WHERE client_id = %s AND business_date = %s",
        (client_id, DAY),
    ).fetchall()
    return sorted(rows)


def test_upload_exports_every_table_slice_exactly(stack_info, db, client_id, wait_quiet):
    upload_example(stack_info, client_id)
    wait_quiet()

    counts = {}
    for pg_name in LAKE_TABLES:
        assert lake_rows(pg_name, client_id) == pg_rows(db, pg_name, client_id), pg_name
        counts[pg_name] = len(pg_rows(db, pg_name, client_id))
    assert counts == {
        "raw.clients": 3,
        "raw.portfolios": 6,
        "raw.accounts": 4,
        "raw.transactions": 9,
        "etl.portfolio_summary": 4,
        "etl.client_tax_summary": 3,
        "audit.rejections": 1,
        "audit.data_quality_issues": 3,
    }
    # Money is exact: the lake's decimal(38, 18) holds PostgreSQL's NUMERIC value unchanged.
    taxes = {r[2]: r[4] for r in lake_rows("etl.client_tax_summary", client_id)}
    assert taxes == {"C-1001": Decimal("120.50"), "C-1002": Decimal("310.00"), "C-1003": 0}
    # Parquet data files, zstd, partitioned by day and client.
    table = lake_table("raw.transactions")
    files = [
        f for f in table.inspect.files().to_pylist() if f"client_id={client_id}" in f["file_path"]
    ]
    assert len(files) == 1
    assert files[0]["file_format"] == "PARQUET"
    assert files[0]["partition"] == {"business_date_day": DAY, "client_id": client_id}
    with table.io.new_input(files[0]["file_path"]).open() as stream:
        metadata = pq.ParquetFile(stream).metadata
        assert metadata.row_group(0).column(0).compression == "ZSTD"
    assert [str(f) for f in table.spec().fields] == [
        "1000: business_date_day: day(2)",
        "1001: client_id: identity(1)",
    ]


def test_the_daily_maintenance_runs_on_its_schedule(local_stack, db, client_id, wait_quiet):
    """The exporter's `maintenance` function, on the local runner's schedule clock: it runs
    `maintain` over every lake table without a failure record; young orphans stay. Early in
    the module, while the tables' histories are short: the daily run reads every manifest of
    every table, which the later tests' hundreds of commits make minutes here."""
    from dataharvest_local.schedule import ScheduleMapping

    upload_example(local_stack.info, client_id)
    wait_quiet()
    (mapping,) = [
        m
        for m in local_stack.runner.mappings
        if isinstance(m, ScheduleMapping)
        and m.worker.spec.name == "dataharvest-lake-exporter-local-maintenance"
    ]
    assert mapping.schedule.expression == "rate(1 day)" and mapping.on_failure_queue_url
    table = lake_table("raw.portfolios")
    young = f"{table.location()}/data/young-{client_id}.parquet"
    with table.io.new_output(young).create(overwrite=True) as out:
        out.write(b"an export about to commit")
    sqs = boto3.client("sqs")
    sqs.purge_queue(QueueUrl=mapping.on_failure_queue_url)
    fired = len(mapping.fired)

    local_stack.schedule_clock.set(mapping.next_due)
    wait_quiet()
    assert len(mapping.fired) == fired + 1
    log = Path(mapping.worker.log_path).read_text()
    assert "Traceback" not in log, log[-4000:]
    failures = sqs.receive_message(QueueUrl=mapping.on_failure_queue_url, WaitTimeSeconds=0)
    assert "Messages" not in failures
    assert table.io.new_input(young).exists()
    table.io.delete(young)
    assert lake_rows("raw.portfolios", client_id) == pg_rows(db, "raw.portfolios", client_id)


def test_orphan_files_are_deleted_once_old_and_nothing_the_metadata_reaches_is(
    stack_info, db, client_id, wait_quiet
):
    """Orphans: a data file of an export killed before its commit, and a metadata file of a
    refused commit. Young, they are left alone (an export may be about to commit them); a day
    old, they are deleted, and every file the table's metadata reaches stays."""
    from datetime import UTC, datetime, timedelta

    from dataharvest.lake import maintenance, tables
    from dataharvest.lake.export import write_slice

    upload_example(stack_info, client_id)
    wait_quiet()
    table = lake_table("raw.transactions")
    everything = whole_table(table)
    db.execute("SET search_path TO public")
    killed = write_slice(db, table, tables.describe(db, "raw.transactions"), client_id, DAY)
    refused = f"{table.location()}/metadata/99999-{client_id}.metadata.json"
    with table.io.new_output(refused).create(overwrite=True) as out:
        out.write(b"{}")
    orphans = {*killed.paths, refused}
    lister = maintenance.s3_lister(read_lake_location())
    now = datetime.now(UTC)

    assert maintenance.remove_orphans(table, now, lister).paths == ()
    later = now + maintenance.ORPHAN_MIN_AGE + timedelta(minutes=1)
    found = maintenance.remove_orphans(table, later, lister, dry_run=True)
    # Other tests' killed exports may have left theirs in the same table: ours are among them.
    assert orphans <= set(found.paths) and found.deleted == 0
    assert all(table.io.new_input(path).exists() for path in orphans)

    removed = maintenance.remove_orphans(table, later, lister)
    assert orphans <= set(removed.paths) and removed.deleted == len(removed.paths)
    assert not any(table.io.new_input(path).exists() for path in orphans)
    # What the metadata reaches is all there: the table reads as before, at every snapshot.
    table = lake_table("raw.transactions")
    assert whole_table(table) == everything
    for snapshot in table.metadata.snapshots:
        table.scan(snapshot_id=snapshot.snapshot_id).to_arrow()
    for entry in table.metadata.metadata_log:
        assert table.io.new_input(entry.metadata_file).exists()
    assert maintenance.remove_orphans(table, later, lister).paths == ()


def test_lake_expire_dry_run_lists_orphans_and_changes_nothing(
    stack_info, db, client_id, wait_quiet, capsys, monkeypatch
):
    from datetime import timedelta

    from dataharvest.lake import maintenance

    upload_example(stack_info, client_id)
    wait_quiet()
    table = lake_table("raw.clients")
    orphan = f"{table.location()}/data/orphan-{client_id}.parquet"
    with table.io.new_output(orphan).create(overwrite=True) as out:
        out.write(b"not committed")
    snapshots = len(table.metadata.snapshots)
    # Every orphan counts at once (the stack is quiet: no export is about to commit).
    monkeypatch.setattr(maintenance, "ORPHAN_MIN_AGE", timedelta(0))
    capsys.readouterr()

    assert cli.main(["lake", "expire", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and f"orphan: {orphan}" in out
    assert table.io.new_input(orphan).exists()
    assert len(lake_table("raw.clients").metadata.snapshots) == snapshots

    assert cli.main(["lake", "expire"]) == 0
    out = capsys.readouterr().out
    assert "orphans deleted" in out
    assert not table.io.new_input(orphan).exists()
    assert lake_rows("raw.clients", client_id) == pg_rows(db, "raw.clients", client_id)


def current_snapshots() -> dict[str, int]:
    return {name: lake_table(name).current_snapshot().snapshot_id for name in LAKE_TABLES}


def exporter_entry():
    from dataharvest import registry

    return registry.get("lake_exporter")


def test_reupload_replaces_the_slice_and_history_keeps_the_old_one(
    stack_info, db, client_id, wait_quiet
):
    upload_example(stack_info, client_id)
    wait_quiet()
    before = lake_rows("raw.transactions", client_id)
    old_snapshot = lake_table("raw.transactions").current_snapshot().snapshot_id
    content = (EXAMPLE / f"transactions_{KEY}.csv").read_text()
    changed = content.replace("T-9001,1000.00,", "T-9001,1500.25,")
    assert changed != content
    upload(stack_info, client_id, f"transactions_{KEY}.csv", changed.encode())
    wait_quiet()

    after = lake_rows("raw.transactions", client_id)
    assert after == pg_rows(db, "raw.transactions", client_id)
    assert len(before) == 9 and len(after) == 9 and after != before
    assert lake_amounts(client_id)["T-9001"] == Decimal("1500.25")
    # The replaced version is still readable at the snapshot that held it.
    assert lake_rows("raw.transactions", client_id, snapshot_id=old_snapshot) == before
    # Each table's slice is summed up again from the new version, everywhere.
    for pg_name in LAKE_TABLES:
        assert lake_rows(pg_name, client_id) == pg_rows(db, pg_name, client_id), pg_name
    summary = lake_table("raw.transactions").current_snapshot().summary
    assert summary["dataharvest.client_id"] == client_id
    assert summary["dataharvest.business_date"] == KEY


def test_delete_retracts_the_slice(stack_info, db, client_id, wait_quiet):
    upload_example(stack_info, client_id)
    wait_quiet()
    assert len(lake_rows("raw.transactions", client_id)) == 9

    delete_upload(stack_info, f"{client_id}/transactions_{KEY}.csv")
    wait_quiet()

    assert lake_rows("raw.transactions", client_id) == []
    assert pg_rows(db, "raw.transactions", client_id) == []
    # The portfolio summary needs the transaction counts: retracted with them.
    assert lake_rows("etl.portfolio_summary", client_id) == []
    assert len(lake_rows("raw.clients", client_id)) == 3
    for pg_name in LAKE_TABLES:
        assert lake_rows(pg_name, client_id) == pg_rows(db, pg_name, client_id), pg_name


def test_a_stale_message_does_not_overwrite_a_newer_slice(stack_info, db, client_id, wait_quiet):
    from dataharvest.due import watched_versions

    upload_example(stack_info, client_id)
    wait_quiet()
    old_item = metastore.get_item(client_id, KEY)
    upload(
        stack_info,
        client_id,
        f"transactions_{KEY}.csv",
        b"record_id,account_number,"
        b"transaction_reference,amount,keyword\n1,50001,T-1,7.00,DEPOSIT\n",
    )
    wait_quiet()
    newer = lake_rows("raw.transactions", client_id)
    assert lake_amounts(client_id) == {"T-1": Decimal("7.00")}
    snapshots = current_snapshots()

    stale = WorkMessage(
        client_id=client_id,
        business_date=KEY,
        transformer="lake_exporter",
        action="APPLY",
        input_versions=watched_versions(exporter_entry(), old_item),
    )
    assert runtime.run(EXPORTER, stale).outcome == "superseded"
    assert current_snapshots() == snapshots
    assert lake_rows("raw.transactions", client_id) == newer


def test_work_that_goes_stale_while_streaming_commits_nothing(
    stack_info, db, client_id, wait_quiet
):
    from dataharvest.lake.export import export_slice

    upload_example(stack_info, client_id)
    wait_quiet()
    snapshots = current_snapshots()
    db.execute("SET search_path TO public")
    asked = []

    def still_current() -> bool:
        asked.append(True)
        return False

    objects = lake_objects()
    written = export_slice(db, read_lake_location(), client_id, DAY, still_current, {}, force=True)
    assert written is None
    assert current_snapshots() == snapshots
    # Asked after the first table streamed: the other seven were not streamed for nothing.
    assert len(asked) == 1
    # And the file it wrote, which no commit will add, is gone again.
    assert lake_objects() == objects


def lake_objects() -> set[str]:
    """The lake bucket's files. Not its directory markers (empty keys ending in "/"): pyarrow's
    S3 filesystem leaves one where it deleted a folder's last file."""
    lake = read_lake_location()
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=lake.bucket)
    keys = {o["Key"] for page in pages for o in page.get("Contents", [])}
    return {k for k in keys if not k.endswith("/")}


def test_an_export_rewrites_only_the_raw_slices_whose_load_changed(
    stack_info, db, client_id, wait_quiet
):
    from dataharvest.lake.export import FINGERPRINT, SNAPSHOT_PREFIX, export_slice

    upload_example(stack_info, client_id)
    wait_quiet()
    raw = [name for name in LAKE_TABLES if name.startswith("raw.")]
    before = current_snapshots()
    db.execute("SET search_path TO public")

    # Nothing changed: the raw slices (one immutable load each) are left alone, the outputs
    # (no cheap fingerprint) are written again, and every slice still equals PostgreSQL.
    written = export_slice(db, read_lake_location(), client_id, DAY, lambda: True, {})
    after = current_snapshots()
    assert {name for name in LAKE_TABLES if after[name] == before[name]} == set(raw)
    assert written == sum(len(pg_rows(db, name, client_id)) for name in LAKE_TABLES[len(raw) :])
    for pg_name in LAKE_TABLES:
        assert lake_rows(pg_name, client_id) == pg_rows(db, pg_name, client_id), pg_name

    # A new transactions version: that raw slice is rewritten, the other inputs' are not.
    old_fingerprint = (
        lake_table("raw.transactions").current_snapshot().summary[SNAPSHOT_PREFIX + FINGERPRINT]
    )
    content = (EXAMPLE / f"transactions_{KEY}.csv").read_text()
    upload(stack_info, client_id, f"transactions_{KEY}.csv", content.replace("1000.00", "999.99"))
    wait_quiet()
    replaced = current_snapshots()
    assert replaced["raw.transactions"] != after["raw.transactions"]
    for name in ("raw.clients", "raw.portfolios", "raw.accounts"):
        assert replaced[name] == after[name], name
    summary = lake_table("raw.transactions").current_snapshot().summary
    assert summary[SNAPSHOT_PREFIX + FINGERPRINT] != old_fingerprint
    assert summary[SNAPSHOT_PREFIX + "client_id"] == client_id
    for pg_name in LAKE_TABLES:
        assert lake_rows(pg_name, client_id) == pg_rows(db, pg_name, client_id), pg_name

    # Deleted: the slice's fingerprint becomes the empty one and the slice is deleted.
    delete_upload(stack_info, f"{client_id}/transactions_{KEY}.csv")
    wait_quiet()
    assert lake_rows("raw.transactions", client_id) == []
    assert (
        lake_table("raw.transactions").current_snapshot().snapshot_id
        != (replaced["raw.transactions"])
    )


def test_the_exporter_registered_after_data_exists_backfills_it(
    stack_info, db, client_id, wait_quiet
):
    assert cli.main(["transformers", "disable", "lake_exporter"]) == 0
    try:
        upload_example(stack_info, client_id)
        wait_quiet()
        assert lake_rows("raw.transactions", client_id) == []
    finally:
        exporter = Path(__file__).parents[2] / "services" / "lake_exporter"
        assert cli.main(["transformers", "register", str(exporter)]) == 0
    for pg_name in LAKE_TABLES:
        assert lake_rows(pg_name, client_id) == pg_rows(db, pg_name, client_id), pg_name
    assert len(lake_rows("raw.transactions", client_id)) == 9


def test_lake_backfill_exports_a_client_and_date_range(stack_info, db, client_id, wait_quiet):
    assert cli.main(["transformers", "disable", "lake_exporter"]) == 0
    try:
        upload_example(stack_info, client_id)
        wait_quiet()
    finally:
        assert cli.main(["transformers", "enable", "lake_exporter", "--no-backfill"]) == 0
    assert lake_rows("raw.clients", client_id) == []

    args = ["lake", "backfill", "--from", "2024-01-01", "--to", "2024-01-02"]
    assert cli.main([*args, "--client", client_id]) == 0

    for pg_name in LAKE_TABLES:
        assert lake_rows(pg_name, client_id) == pg_rows(db, pg_name, client_id), pg_name
    assert len(lake_rows("raw.clients", client_id)) == 3


def test_query_reads_the_lake_by_postgresql_names(stack_info, client_id, wait_quiet, capsys):
    upload_example(stack_info, client_id)
    wait_quiet()
    capsys.readouterr()
    sql = (
        "SELECT client_id, business_date, sum(amount) AS deposits, count(*) AS n "
        f"FROM raw.transactions WHERE client_id = '{client_id}' "
        "AND upper(keyword) = 'DEPOSIT' GROUP BY 1, 2"
    )
    assert cli.main(["query", sql, "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == [
        {"client_id": client_id, "business_date": "2024-01-02", "deposits": 1863.09, "n": 6}
    ]
    assert '"deposits": 1863.09,' in out  # the exact digits, not a float's
    assert cli.main(["query", sql, "--format", "csv"]) == 0
    assert capsys.readouterr().out == (
        f"client_id,business_date,deposits,n\n{client_id},2024-01-02,1863.09,6\n"
    )
    assert cli.main(["query", "SELECT * FROM raw.nothing_here"]) == 1
    assert "raw.nothing_here is not in the lake" in capsys.readouterr().err


def upload_both_dates(stack_info, client_id: str) -> None:
    for key in ("20240102", "20240103"):
        for name in NAMES:
            content = (EXAMPLE / f"{name}_{key}.csv").read_bytes()
            upload(stack_info, client_id, f"{name}_{key}.csv", content)


def test_a_filtered_query_returns_what_postgresql_returns(stack_info, db, client_id, wait_quiet):
    from dataharvest_local import lake_query

    clients = [f"{client_id}-{i}" for i in range(3)]
    for client in clients:
        upload_both_dates(stack_info, client)
    wait_quiet()
    lake = read_lake_location()
    queries = [
        # Two of three clients, one of two dates: sums of decimals, grouped.
        "SELECT client_id, business_date, keyword, sum(amount) AS total, count(*) AS n "
        f"FROM raw.transactions WHERE client_id IN ('{clients[0]}', '{clients[2]}') "
        "AND business_date = '2024-01-03' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        # One client, a date range over both dates, a filter on a non-partition column.
        "SELECT business_date, transaction_reference, amount FROM raw.transactions "
        f"WHERE client_id = '{clients[1]}' AND business_date BETWEEN '2024-01-01' AND "
        "'2024-01-31' AND amount < 0 ORDER BY 1, 2",
        # A join of two lake tables, every client of the test.
        "SELECT t.client_id, t.business_date, a.account_number, sum(t.amount) AS total "
        "FROM raw.transactions t JOIN raw.accounts a ON a.client_id = t.client_id "
        "AND a.business_date = t.business_date AND a.account_number = t.account_number "
        f"WHERE t.client_id LIKE '{client_id}-%' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    ]
    for sql in queries:
        result = lake_query.run_query(sql, lake)
        expected = db.execute(sql).fetchall()
        assert expected, sql
        # Exact digits on both sides (text drops the lake's trailing zeros of scale 18).
        assert [tuple(lake_query.text(v) for v in row) for row in result.rows] == [
            tuple(lake_query.text(v) for v in row) for row in expected
        ], sql
        # Decimals come back as Decimal (not float), dates as date, like psycopg's.
        assert [tuple(type(v) for v in row) for row in result.rows] == [
            tuple(type(v) for v in row) for row in expected
        ], sql


def test_a_query_opens_only_the_files_of_the_slices_it_filters_on(
    stack_info, db, client_id, wait_quiet
):
    from dataharvest_local import lake_query, lake_scan

    clients = [f"{client_id}-{i}" for i in range(2)]
    for client in clients:
        upload_both_dates(stack_info, client)
    wait_quiet()
    lake = read_lake_location()
    table = lake_table("raw.transactions")
    wanted = And(EqualTo("client_id", clients[1]), EqualTo("business_date", "2024-01-03"))
    slice_files = {
        lake_scan.bucket_path(t.file.file_path) for t in table.scan(row_filter=wanted).plan_files()
    }
    all_files = {lake_scan.bucket_path(t.file.file_path) for t in table.scan().plan_files()}
    assert slice_files and len(all_files) >= len(slice_files) + 3  # this test's other slices

    counter = lake_scan.ScanCounter()
    sql = (
        "SELECT count(*), sum(amount) FROM raw.transactions "
        f"WHERE client_id = '{clients[1]}' AND business_date BETWEEN '2024-01-03' AND '2024-02-01'"
    )
    result = lake_query.run_query(sql, lake, counter=counter)
    assert set(counter.paths) == slice_files
    expected = db.execute(sql).fetchone()
    assert expected[0] > 0
    assert result.rows == [(expected[0], expected[1])]

    # Without a filter on the partition columns every current file is opened: the counter
    # counts what is read, the pruning above is the filter's doing.
    counter = lake_scan.ScanCounter()
    lake_query.run_query(
        "SELECT count(*) FROM raw.transactions WHERE amount < 0", lake, counter=counter
    )
    assert set(counter.paths) == all_files


def test_slice_stream_hands_over_in_blocks_and_frees_the_connection_when_abandoned(
    stack_info, db, client_id, wait_quiet, monkeypatch
):
    from dataharvest.lake import stream, tables

    upload_example(stack_info, client_id)
    wait_quiet()
    # Blocks of a few rows and a queue of one: the reader thread waits on the writer, the
    # reader asks again after the end, and a slice spans many handovers.
    monkeypatch.setattr(stream, "HANDOVER_BYTES", 64)
    monkeypatch.setattr(stream, "QUEUED_BLOCKS", 1)
    table = tables.describe(db, "raw.transactions")
    batches = list(stream.slice_batches(db, table, client_id, DAY))
    streamed = sorted(tuple(r.values()) for b in batches for r in b.to_pylist())
    assert streamed == pg_rows(db, "raw.transactions", client_id)
    # One load: the lineage columns were not copied, yet every row carries them.
    assert {r[2:4] for r in streamed} == set(
        db.execute(
            "SELECT source_key, source_version FROM raw.transactions"
            " WHERE client_id = %s AND business_date = %s",
            (client_id, DAY),
        ).fetchall()
    )
    # A caller that stops after the first batch: the COPY is ended and the connection answers.
    monkeypatch.setattr(stream, "BLOCK_BYTES", 128)
    abandoned = stream.slice_batches(db, table, client_id, DAY)
    next(abandoned)
    abandoned.close()
    assert db.execute("SELECT 1").fetchone() == (1,)


def test_slice_stream_keeps_per_row_lineage_when_a_slice_holds_several_loads(db):
    """The lineage columns are sent once only when one load holds the whole slice; with two
    (or a row of none) every row keeps its own."""
    from dataharvest.lake import stream, tables

    db.execute(
        """
        CREATE TEMP VIEW lake_two_loads AS
        SELECT 'two-loads'::text AS client_id, DATE '2024-01-02' AS business_date,
               'k' || (g % 2) AS source_key, g % 2 AS source_version,
               CASE WHEN g = 7 THEN NULL ELSE (g % 2)::bigint END AS load_id,
               g AS line_number
        FROM generate_series(1, 20) AS g
        """
    )
    try:
        table = tables.describe(db, "pg_temp.lake_two_loads")
        # No single load names the rows: no fingerprint, the slice is always exported.
        lineage = stream.slice_lineage(db, table, "two-loads", DAY)
        assert stream.slice_fingerprint(table, lineage) is None
        rows = [r for b in stream.slice_batches(db, table, "two-loads", DAY) for r in b.to_pylist()]
        assert len(rows) == 20
        for row in rows:
            g = row["line_number"]
            assert (row["source_key"], row["source_version"]) == (f"k{g % 2}", g % 2)
            assert row["load_id"] == (None if g == 7 else g % 2)
    finally:
        db.execute("DROP VIEW lake_two_loads")


def test_slice_stream_raises_an_error_the_server_sends_in_the_middle_of_the_copy(db, monkeypatch):
    """A COPY that fails after rows went out raises the server's error to the caller (not a
    short slice), and the connection stays usable."""
    from dataharvest.lake import stream, tables

    monkeypatch.setattr(stream, "HANDOVER_BYTES", 64)
    db.execute(
        """
        CREATE TEMP VIEW lake_failing AS
        SELECT 'failing'::text AS client_id, DATE '2024-01-02' AS business_date,
               (100 / (5000 - g))::integer AS quotient
        FROM generate_series(1, 10000) AS g
        """
    )
    try:
        table = tables.describe(db, "pg_temp.lake_failing")
        seen = 0
        with pytest.raises(psycopg.errors.DivisionByZero):
            for batch in stream.slice_batches(db, table, "failing", DAY):
                seen += batch.num_rows
        assert seen < 5000
        assert db.execute("SELECT 1").fetchone() == (1,)
    finally:
        db.execute("DROP VIEW lake_failing")


def test_a_slice_larger_than_a_data_file_is_written_as_several_and_read_back_whole(
    stack_info, db, client_id, wait_quiet, monkeypatch
):
    """Files roll over at FILE_ROWS while the encoder thread writes batch after batch; the
    slice reads back exactly, whatever file and row group a row landed in."""
    from dataharvest.lake import export, stream, tables

    upload_example(stack_info, client_id)
    wait_quiet()
    monkeypatch.setattr(stream, "BLOCK_BYTES", 64)  # batches of a row or two
    monkeypatch.setattr(export, "FILE_ROWS", 3)
    table = tables.describe(db, "raw.transactions")
    iceberg = lake_table("raw.transactions")
    files = export.write_slice(db, iceberg, table, client_id, DAY)
    assert files.rows == 9
    assert len(files.paths) == 3
    export.commit_slice(iceberg, files, client_id, DAY, {"test": "several files"})
    assert lake_rows("raw.transactions", client_id) == pg_rows(db, "raw.transactions", client_id)


def test_an_encoder_failure_fails_the_slice_and_frees_the_connection(
    stack_info, db, client_id, wait_quiet, monkeypatch
):
    from dataharvest.lake import export, stream, tables

    upload_example(stack_info, client_id)
    wait_quiet()
    monkeypatch.setattr(stream, "BLOCK_BYTES", 64)
    write = pq.ParquetWriter.write_batch
    calls = []

    def failing_write(self, batch, *args, **kwargs):  # the library's writer, on the 2nd batch:
        calls.append(batch.num_rows)  # a full disk or a lost S3 connection
        if len(calls) == 2:
            raise OSError("injected: the data file could not be written")
        return write(self, batch, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_batch", failing_write)
    table = tables.describe(db, "raw.transactions")
    before = lake_table("raw.transactions").current_snapshot().snapshot_id
    objects = lake_objects()
    with pytest.raises(OSError, match="injected"):
        export.write_slice(db, lake_table("raw.transactions"), table, client_id, DAY)
    assert db.execute("SELECT 1").fetchone() == (1,)
    assert lake_table("raw.transactions").current_snapshot().snapshot_id == before
    # The partial data file, which no commit will add, is not left behind.
    assert lake_objects() == objects


def slice_data_files(table, client_id: str, snapshot_id: int | None = None) -> set[str]:
    where = And(EqualTo("client_id", client_id), EqualTo("business_date", DAY.isoformat()))
    tasks = table.scan(row_filter=where, snapshot_id=snapshot_id).plan_files()
    return {task.file.file_path for task in tasks}


def whole_table(table) -> list[tuple]:
    return sorted(tuple(r.values()) for r in table.scan().to_arrow().to_pylist())


def test_expiry_deletes_only_what_no_remaining_snapshot_reaches(
    stack_info, db, client_id, wait_quiet
):
    from datetime import UTC, datetime, timedelta

    from dataharvest.lake import maintenance

    upload_example(stack_info, client_id)
    wait_quiet()
    table = lake_table("raw.transactions")
    first = table.current_snapshot().snapshot_id
    replaced_files = slice_data_files(table, client_id)
    content = (EXAMPLE / f"transactions_{KEY}.csv").read_text()
    upload(stack_info, client_id, f"transactions_{KEY}.csv", content.replace("1000.00", "1.00"))
    wait_quiet()
    table = lake_table("raw.transactions")
    current_files = slice_data_files(table, client_id)
    assert replaced_files and current_files and not replaced_files & current_files
    everything = whole_table(table)
    now = datetime.now(UTC)
    assert not maintenance.expiry_due(table, now)
    later = now + maintenance.MAX_SNAPSHOT_AGE + maintenance.DUE_SLACK + timedelta(minutes=1)
    assert maintenance.expiry_due(table, later)

    # Another process at it (the lock is held elsewhere): an export's call leaves it alone.
    with psycopg.connect(stack_info.database_url) as other, other.transaction():
        assert maintenance.try_expiry_lock(other, table)
        with db.transaction():
            assert maintenance.expire_if_due(db, table, later) == maintenance.Expired(0, 0)
    assert len(table.metadata.snapshots) > 1

    with db.transaction():
        expired = maintenance.expire_if_due(db, table, later)
    assert expired.snapshots > 0 and expired.files_deleted > 0
    table = lake_table("raw.transactions")
    assert [s.snapshot_id for s in table.metadata.snapshots] == [
        table.current_snapshot().snapshot_id
    ]
    # The replaced slice's files are gone; every file the current snapshot reads is there,
    # and the table reads exactly as before, this slice and every other.
    assert not any(table.io.new_input(path).exists() for path in replaced_files)
    assert all(table.io.new_input(path).exists() for path in current_files)
    assert whole_table(table) == everything
    for pg_name in LAKE_TABLES:
        assert lake_rows(pg_name, client_id) == pg_rows(db, pg_name, client_id), pg_name
    with pytest.raises(ValueError):
        table.scan(snapshot_id=first).to_arrow()
    # Nothing left to expire. The current snapshot is this slice's last commit, so an export
    # after the expiry still finds its fingerprint and writes nothing.
    assert maintenance.expire(table, later) == maintenance.Expired(0, 0)
    from dataharvest.lake.export import export_slice

    db.execute("SET search_path TO public")
    written = export_slice(
        db, read_lake_location(), client_id, DAY, lambda: True, {}, ("raw.transactions",)
    )
    assert written == 0
    assert lake_rows("raw.transactions", client_id) == pg_rows(db, "raw.transactions", client_id)


def test_lake_expire_command_reports_every_exported_table(
    stack_info, client_id, wait_quiet, capsys
):
    upload_example(stack_info, client_id)
    wait_quiet()
    capsys.readouterr()
    assert cli.main(["lake", "expire"]) == 0
    out = capsys.readouterr().out
    for pg_name in LAKE_TABLES:
        assert pg_name in out
    assert "5 days" in out


def test_expiry_keeps_at_most_the_tables_snapshot_count(stack_info, db, client_id, wait_quiet):
    from datetime import UTC, datetime, timedelta

    from dataharvest.lake import maintenance

    upload_example(stack_info, client_id)
    wait_quiet()
    content = (EXAMPLE / f"clients_{KEY}.csv").read_text()
    for name in ("Augusta", "Countess"):  # two new versions: a delete and an append each
        upload(stack_info, client_id, f"clients_{KEY}.csv", content.replace("Ada", name).encode())
        wait_quiet()
    table = lake_table("raw.clients")
    with table.transaction() as tx:
        tx.set_properties({maintenance.MAX_SNAPSHOTS_PROPERTY: "2"})
    try:
        now = datetime.now(UTC)
        held = len(table.metadata.snapshots)
        assert held > 3
        # Over the count, but every snapshot younger than the floor: nothing to expire yet.
        assert not maintenance.expiry_due(table, now)
        assert maintenance.expire(table, now) == maintenance.Expired(0, 0)
        # Past the floor (and far inside the age limit): the count makes it due.
        now += maintenance.MIN_SNAPSHOT_AGE + timedelta(seconds=1)
        assert maintenance.expiry_due(table, now)
        expired = maintenance.expire(table, now)
        assert expired.snapshots == held - 3
        assert len(table.metadata.snapshots) == 3  # the current one and the two newest before it
        assert not maintenance.expiry_due(table, now)
        assert lake_rows("raw.clients", client_id) == pg_rows(db, "raw.clients", client_id)
    finally:
        with table.transaction() as tx:
            tx.remove_properties(maintenance.MAX_SNAPSHOTS_PROPERTY)


@pytest.mark.parametrize(
    ("error", "files_kept"),
    [
        # Every attempt refused by the catalog: nothing committed, the run's files deleted.
        (lambda: CommitFailedException("injected: another writer won"), False),
        # The response lost: the commit may have landed, so its files must stay.
        (lambda: ConnectionResetError("injected: connection reset"), True),
    ],
)
def test_a_failed_commit_deletes_its_files_only_when_it_surely_did_not_land(
    stack_info, db, client_id, wait_quiet, monkeypatch, error, files_kept
):
    from pyiceberg.table import Transaction

    from dataharvest.lake.exceptions import LakeCommitConflict
    from dataharvest.lake.export import export_slice

    upload_example(stack_info, client_id)
    wait_quiet()
    before = lake_objects()

    def failing_commit(self):  # the library's commit, as the catalog would fail it
        raise error()

    monkeypatch.setattr(Transaction, "commit_transaction", failing_commit)
    db.execute("SET search_path TO public")
    with pytest.raises((LakeCommitConflict, ConnectionResetError)) as raised:
        export_slice(
            db, read_lake_location(), client_id, DAY, lambda: True, {}, ("raw.clients",), force=True
        )
    # Data files only: pyiceberg leaves the manifests a refused attempt wrote (metadata/).
    new_files = {k for k in lake_objects() - before if k.endswith(".parquet")}
    if files_kept:
        assert isinstance(raised.value, ConnectionResetError)
        assert len(new_files) == 1 and next(iter(new_files)).endswith(".parquet")
    else:
        assert "commits lost to other writers" in str(raised.value)
        assert new_files == set()
