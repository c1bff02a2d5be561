"""Snapshot deltas (issue 15) on the local stack: full exports uploaded to the landing bucket,
deltas in PostgreSQL, changes on the Kinesis stream, applied by services/snapshot_applier into
replica.<table> (moto's Kinesis driven by the local runner's Kinesis mapping)."""

from __future__ import annotations

import gzip
import json
import os
import threading
import time
from decimal import Decimal

import boto3
import psycopg
import pytest

from dataharvest import metastore
from dataharvest.persistence.load import load_upload
from dataharvest.snapshots import ingest, publish, tables
from dataharvest.snapshots.apply import Change, apply_changes
from dataharvest.snapshots.routing import route_snapshot
from dataharvest_local import cli

pytestmark = pytest.mark.integration

# One shape per table name (replica.<table> is one relation): every test registers these.
SIMPLE = "snap_accounts"
SIMPLE_COLUMNS = "id:integer,name,balance:decimal,opened:date"
COMPOSITE = "snap_positions"
COMPOSITE_COLUMNS = "pk:integer,n:integer,v1,v2:decimal"


def register(conn, client_id: str, table: str = SIMPLE, **options) -> tables.SnapshotTable:
    columns = SIMPLE_COLUMNS if table == SIMPLE else COMPOSITE_COLUMNS
    key = options.pop("key", "id" if table == SIMPLE else "pk,n")
    definition = tables.parse_definition(client_id, table, key, columns, **options)
    tables.register(conn, definition)
    return definition


def rows_file(rows: dict[int, tuple[str, str, str]], header: bool = True) -> str:
    lines = ["id,name,balance,opened\n"] if header else []
    lines += [f"{i},{name},{balance},{opened}\n" for i, (name, balance, opened) in rows.items()]
    return "".join(lines)


def base_rows(n: int = 20) -> dict[int, tuple[str, str, str]]:
    return {i: (f"name {i}", f"{i}.50", "2024-01-02") for i in range(1, n + 1)}


def snapshot_key(client_id: str, version: str, table: str = SIMPLE, name: str = "part.csv") -> str:
    return f"{client_id}/snapshots/{table}/{version}/{name}"


def upload(object_key: str, body: str, gz: bool = False) -> str:
    data = body.encode()
    if gz:
        data = gzip.compress(data)
    return boto3.client("s3").put_object(
        Bucket=os.environ["LANDING_BUCKET"], Key=object_key, Body=data
    )["VersionId"]


def exports(db, client_id: str, table: str = SIMPLE) -> list[ingest.ExportRecord]:
    return ingest.exports_of(db, client_id, table)


def replica(db, client_id: str, table: str = SIMPLE) -> dict:
    if table == SIMPLE:
        rows = db.execute(
            "SELECT id, name, balance, opened FROM replica.snap_accounts WHERE client_id = %s",
            (client_id,),
        ).fetchall()
        return {r[0]: (r[1], str(r[2]), r[3].isoformat()) for r in rows}
    rows = db.execute(
        "SELECT pk, n, v1, v2 FROM replica.snap_positions WHERE client_id = %s", (client_id,)
    ).fetchall()
    return {(r[0], r[1]): (r[2], str(r[3])) for r in rows}


def wait_replica(db, client_id: str, expected: dict, table: str = SIMPLE, timeout: float = 60):
    """The applier works asynchronously from the stream: wait until the replica matches."""
    deadline = time.monotonic() + timeout
    while True:
        got = replica(db, client_id, table)
        if got == expected or time.monotonic() > deadline:
            assert got == expected
            return
        time.sleep(0.2)


def changes(db, client_id: str, table: str = SIMPLE, version: str | None = None) -> list[tuple]:
    query = (
        "SELECT sequence, export_version, op, key, old_values, new_values FROM snapshots.changes "
        "WHERE client_id = %s AND table_name = %s"
    )
    params: list = [client_id, table]
    if version:
        query += " AND export_version = %s"
        params.append(version)
    return db.execute(query + " ORDER BY sequence", params).fetchall()


def stream_records(client_id: str) -> list[dict]:
    """Every record of the client on the snapshot stream, from its start."""
    kinesis = boto3.client("kinesis")
    name = os.environ["SNAPSHOT_STREAM_NAME"]
    out = []
    for shard in kinesis.list_shards(StreamName=name)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            response = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            for record in response["Records"]:
                data = json.loads(record["Data"])
                if data["client_id"] == client_id:
                    out.append({**data, "partition_key": record["PartitionKey"]})
            if not response["Records"]:
                break
            iterator = response["NextShardIterator"]
    return out


def test_first_second_and_identical_exports_reach_the_replica(
    client_id, db, wait_quiet, capsys
) -> None:
    register(db, client_id)
    first = base_rows()
    upload(snapshot_key(client_id, "20240102_V0001"), rows_file(first))
    wait_quiet()
    (e1,) = exports(db, client_id)
    assert (e1.status, e1.rows_in_export, e1.inserts, e1.updates, e1.deletes, e1.unchanged) == (
        "applied",
        20,
        20,
        0,
        0,
        0,
    )
    assert {c[2] for c in changes(db, client_id)} == {"INSERT"}
    assert e1.published_at is not None
    wait_replica(db, client_id, first)

    # Second export: 2 updates, 3 deletes, 4 inserts.
    second = dict(first)
    second[1] = ("name 1 renamed", "1.50", "2024-01-02")
    second[2] = ("name 2", "-7.25", "2024-01-02")
    for gone in (3, 4, 5):
        del second[gone]
    for new in range(21, 25):
        second[new] = (f"name {new}", "0", "2024-01-03")
    upload(snapshot_key(client_id, "20240103_V0001"), rows_file(second))
    wait_quiet()
    e2 = exports(db, client_id)[-1]
    assert (e2.status, e2.rows_in_export, e2.inserts, e2.updates, e2.deletes, e2.unchanged) == (
        "applied",
        21,
        4,
        2,
        3,
        15,
    )
    log = changes(db, client_id, version="20240103_V0001")
    assert [c[0] for c in log] == list(range(21, 30))  # sequences continue without a gap
    by_key = {c[3]["id"]: c for c in log}
    assert by_key["1"][2] == "UPDATE"
    assert by_key["1"][4]["name"] == "name 1" and by_key["1"][5]["name"] == "name 1 renamed"
    assert by_key["3"][2] == "DELETE" and by_key["3"][5] is None
    assert by_key["3"][4] == {
        "id": "3",
        "name": "name 3",
        "balance": "3.50",
        "opened": "2024-01-02",
    }
    assert by_key["21"][2] == "INSERT" and by_key["21"][4] is None
    wait_replica(db, client_id, second)
    assert db.execute(
        "SELECT balance FROM replica.snap_accounts WHERE client_id = %s AND id = 2", (client_id,)
    ).fetchone()[0] == Decimal("-7.25")

    # The metastore item of the business date has the version and the counts.
    item = metastore.get_item(client_id, "20240103")
    assert item["snap_accounts_snapshot_version"] == "20240103_V0001"
    assert (item["snap_accounts_snapshot_inserts"], item["snap_accounts_snapshot_updates"]) == (
        4,
        2,
    )
    assert (item["snap_accounts_snapshot_deletes"], item["snap_accounts_snapshot_unchanged"]) == (
        3,
        15,
    )

    # An identical re-export under a newer version: applied, zero changes.
    upload(snapshot_key(client_id, "20240103_V0002"), rows_file(second))
    wait_quiet()
    e3 = exports(db, client_id)[-1]
    assert (e3.status, e3.inserts, e3.updates, e3.deletes, e3.unchanged) == (
        "applied",
        0,
        0,
        0,
        21,
    )
    assert e3.first_sequence is None and len(changes(db, client_id)) == 29
    wait_replica(db, client_id, second)

    # The CLI: the change log of an export, and the counts in status.
    capsys.readouterr()
    argv = ["export", "snapshot-changes", "--client", client_id, "--table", SIMPLE]
    assert cli.main([*argv, "--version", "20240103_V0001", "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [(r["op"], r["id"]) for r in printed][:1] and len(printed) == 9
    assert {r["op"] for r in printed} == {"INSERT", "UPDATE", "DELETE"}
    assert cli.main([*argv, "--version", "20240103_V0001"]) == 0
    csv_out = capsys.readouterr().out.splitlines()
    assert csv_out[0] == (
        "sequence,export_version,op,id,old_name,old_balance,old_opened,"
        "new_name,new_balance,new_opened"
    )
    assert len(csv_out) == 10
    assert cli.main(["status", "--client", client_id, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    day = next(i for i in status if i["sort_key"] == "20240103")
    assert day["snap_accounts_snapshot_version"] == "20240103_V0002"
    assert day["snap_accounts_snapshot_unchanged"] == 21
    assert cli.main(["status", "--client", client_id]) == 0
    table_view = capsys.readouterr().out
    assert "snap_accounts 20240102_V0001: +20 ~0 -0 =0" in table_view
    assert "snap_accounts 20240103_V0002: +0 ~0 -0 =21" in table_view


def test_older_export_is_recorded_and_skipped(client_id, db, wait_quiet) -> None:
    register(db, client_id)
    newer = base_rows(5)
    upload(snapshot_key(client_id, "20201231_V0001"), rows_file(newer))
    wait_quiet()
    upload(snapshot_key(client_id, "20201230_V0002"), rows_file(base_rows(3)))
    wait_quiet()
    applied, skipped = exports(db, client_id)
    assert applied.status == "applied"
    assert skipped.status == "skipped"
    assert "not newer than the last applied 20201231_V0001" in skipped.reason
    assert len(changes(db, client_id)) == 5
    wait_replica(db, client_id, newer)


def test_redelivered_event_is_a_no_op(client_id, db, stack_info, wait_quiet) -> None:
    from persistence_support import s3_event, send_event

    register(db, client_id)
    object_key = snapshot_key(client_id, "20240102_V0001")
    version = upload(object_key, rows_file(base_rows(4)))
    wait_quiet()
    send_event(stack_info, s3_event(object_key, "ObjectCreated:Put", version))
    wait_quiet()
    assert [e.status for e in exports(db, client_id)] == ["applied"]
    assert len(changes(db, client_id)) == 4
    assert sorted(r["sequence"] for r in stream_records(client_id)) == [1, 2, 3, 4]


def test_duplicate_keys_and_bad_values_reject_the_export(client_id, db, wait_quiet) -> None:
    register(db, client_id)
    good = base_rows(3)
    upload(snapshot_key(client_id, "V1"), rows_file(good))
    wait_quiet()
    upload(snapshot_key(client_id, "V2"), rows_file(good) + "2,again,1,2024-01-01\n")
    upload(
        snapshot_key(client_id, "V3"), rows_file({**good, 4: ("x", "not a number", "2024-01-01")})
    )
    upload(snapshot_key(client_id, "V4"), "id,name\n1,a\n")
    upload(snapshot_key(client_id, "V5"), rows_file(good) + ",no key,1,2024-01-01\n")
    wait_quiet()
    records = {e.export_version: e for e in exports(db, client_id)}
    assert records["V2"].status == "rejected"
    assert (
        "appear more than once" in records["V2"].reason and "id=2 (2 rows)" in records["V2"].reason
    )
    assert records["V3"].status == "rejected" and "column balance" in records["V3"].reason
    assert (
        records["V4"].status == "rejected"
        and "lacks column(s) balance, opened" in records["V4"].reason
    )
    assert records["V5"].status == "rejected" and "empty key column (id)" in records["V5"].reason
    assert len(changes(db, client_id)) == 3  # the state stayed at V1
    wait_replica(db, client_id, good)


def test_composite_key_headerless_semicolon_gzip(client_id, db, wait_quiet) -> None:
    register(db, client_id, COMPOSITE, delimiter=";", header=False)
    first = {(1, 1): ("a", "1.5"), (1, 2): ("b", "2"), (2, 1): ("c", "3")}
    body = "".join(f"{pk};{n};{v1};{v2}\n" for (pk, n), (v1, v2) in first.items())
    upload(snapshot_key(client_id, "V0001", COMPOSITE, "export.csv.gz"), body, gz=True)
    wait_quiet()
    wait_replica(db, client_id, first, COMPOSITE)
    second = {(1, 1): ("a", "1.5"), (1, 2): ("b changed", "2"), (2, 2): ("d", "4")}
    body = "".join(f"{pk};{n};{v1};{v2}\r\n" for (pk, n), (v1, v2) in second.items())
    upload(snapshot_key(client_id, "V0002", COMPOSITE, "export.csv"), body)
    wait_quiet()
    e2 = exports(db, client_id, COMPOSITE)[-1]
    assert (e2.inserts, e2.updates, e2.deletes, e2.unchanged) == (1, 1, 1, 1)
    ops = {(c[3]["pk"], c[3]["n"]): c[2] for c in changes(db, client_id, COMPOSITE, "V0002")}
    assert ops == {("1", "2"): "UPDATE", ("2", "1"): "DELETE", ("2", "2"): "INSERT"}
    wait_replica(db, client_id, second, COMPOSITE)
    partition_keys = {r["partition_key"] for r in stream_records(client_id)}
    assert f"{client_id}/{COMPOSITE}/1/2" in partition_keys


def test_null_and_empty_string_differ_and_one_changed_column_is_an_update(
    client_id, db, wait_quiet
) -> None:
    """The delta compares columns (IS DISTINCT FROM): an unquoted empty field (NULL) becoming
    a quoted one ('') is a change, either way, and so is one value in the last column."""
    register(db, client_id)
    header = "id,name,balance,opened\n"
    upload(
        snapshot_key(client_id, "V0001"),
        header + '1,,1.00,2024-01-02\n2,"",2.00,2024-01-02\n3,x,3.00,2024-01-02\n4,y,4.00,\n',
    )
    wait_quiet()
    upload(
        snapshot_key(client_id, "V0002"),
        header + '1,"",1.00,2024-01-02\n2,,2.00,2024-01-02\n3,x,3.00,2024-01-03\n4,y,4.00,\n',
    )
    wait_quiet()
    e2 = exports(db, client_id)[-1]
    assert (e2.status, e2.inserts, e2.updates, e2.deletes, e2.unchanged) == (
        "applied",
        0,
        3,
        0,
        1,
    )
    by_key = {c[3]["id"]: c for c in changes(db, client_id, version="V0002")}
    assert set(by_key) == {"1", "2", "3"}
    assert (by_key["1"][4]["name"], by_key["1"][5]["name"]) == (None, "")
    assert (by_key["2"][4]["name"], by_key["2"][5]["name"]) == ("", None)
    assert (by_key["3"][4]["opened"], by_key["3"][5]["opened"]) == ("2024-01-02", "2024-01-03")


def test_a_table_of_key_columns_only_has_inserts_and_deletes(client_id, db, wait_quiet) -> None:
    definition = tables.parse_definition(client_id, "snap_keys", "k", "k:integer")
    tables.register(db, definition)
    upload(snapshot_key(client_id, "V0001", "snap_keys"), "k\n1\n2\n3\n")
    wait_quiet()
    upload(snapshot_key(client_id, "V0002", "snap_keys"), "k\n2\n3\n4\n")
    wait_quiet()
    e2 = exports(db, client_id, "snap_keys")[-1]
    assert (e2.status, e2.inserts, e2.updates, e2.deletes, e2.unchanged) == (
        "applied",
        1,
        0,
        1,
        2,
    )
    ops = {c[3]["k"]: c[2] for c in changes(db, client_id, "snap_keys", "V0002")}
    assert ops == {"1": "DELETE", "4": "INSERT"}


def test_malformed_snapshot_keys_and_unregistered_tables_are_unroutable(
    client_id, db, wait_quiet
) -> None:
    bad = [
        f"{client_id}/snapshots/{SIMPLE}/V1/x.txt",
        f"{client_id}/snapshots/{SIMPLE}/x.csv",
        f"{client_id}/snapshots/Bad-Table/V1/x.csv",
        f"{client_id}/snapshots/not_registered/V1/x.csv",
    ]
    for object_key in bad:
        upload(object_key, "id\n1\n")
    wait_quiet()
    reasons = dict(
        db.execute(
            "SELECT source_key, reason FROM audit.file_loads WHERE client_id = %s "
            "AND status = 'unroutable'",
            (client_id,),
        ).fetchall()
    )
    assert set(reasons) == set(bad)
    assert "does not match" in reasons[bad[0]]
    assert "five segments" in reasons[bad[1]]
    assert "must match" in reasons[bad[2]]
    assert "not registered" in reasons[bad[3]]


def test_two_tables_of_one_client_apply_concurrently(
    client_id, local_stack, quiet_bucket, db
) -> None:
    """Exports of one table wait for its lock; another table of the same client does not."""
    from persistence_support import put_quiet

    register(db, client_id)
    register(db, client_id, COMPOSITE)
    key_a = snapshot_key(client_id, "V1")
    key_b = snapshot_key(client_id, "V1", COMPOSITE)
    put_quiet(quiet_bucket, key_a, rows_file(base_rows(3)))
    put_quiet(quiet_bucket, key_b, "pk,n,v1,v2\n1,1,a,1\n")
    url = local_stack.info.database_url
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute(
            "SELECT pg_advisory_lock(hashtextextended(%s, 0))", (f"snapshot/{client_id}/{SIMPLE}",)
        )
        done = threading.Event()
        errors: list[BaseException] = []

        def apply_a() -> None:
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    load_upload(quiet_bucket, key_a, conn=conn)
            except BaseException as error:  # surfaced below
                errors.append(error)
            finally:
                done.set()

        worker = threading.Thread(target=apply_a)
        worker.start()
        with psycopg.connect(url, autocommit=True) as conn:
            load_upload(quiet_bucket, key_b, conn=conn)  # not blocked by table A's lock
        assert [e.status for e in exports(db, client_id, COMPOSITE)] == ["applied"]
        assert not done.wait(0.5), "table A applied while its lock was held"
        assert exports(db, client_id) == []
        holder.execute(
            "SELECT pg_advisory_unlock(hashtextextended(%s, 0))",
            (f"snapshot/{client_id}/{SIMPLE}",),
        )
        worker.join(60)
    assert not errors, errors
    assert [e.status for e in exports(db, client_id)] == ["applied"]
    wait_replica(db, client_id, base_rows(3))
    wait_replica(db, client_id, {(1, 1): ("a", "1")}, COMPOSITE)


@pytest.mark.parametrize("where", ["before_put", "after_put"])
def test_failure_while_publishing_resumes_without_loss(
    client_id, local_stack, quiet_bucket, db, where
) -> None:
    """A failure between batches (before a put, or after a put but before the cursor moved):
    the next delivery resumes at the cursor; every sequence is on the stream, only the batch
    in flight at an after-put failure twice, and the replica equals the export."""
    from persistence_support import put_quiet

    register(db, client_id)
    rows = base_rows(publish.MAX_RECORDS * 2 + 100)
    object_key = snapshot_key(client_id, "V1")
    put_quiet(quiet_bucket, object_key, rows_file(rows))
    calls = {"n": 0}

    def fault(point: str) -> None:
        if point == where:
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError(f"injected failure at {point} of batch 2")

    url = local_stack.info.database_url
    with (
        psycopg.connect(url, autocommit=True) as conn,
        pytest.raises(RuntimeError, match="injected failure"),
    ):
        ingest.handle_upload(
            quiet_bucket, object_key, route_snapshot(object_key), conn=conn, fault=fault
        )
    cursor = db.execute(
        "SELECT published_sequence, last_sequence FROM snapshots.table_state WHERE client_id = %s",
        (client_id,),
    ).fetchone()
    assert cursor == (publish.MAX_RECORDS, len(rows))
    (record,) = exports(db, client_id)
    assert record.status == "applied" and record.published_at is None
    # The redelivery resumes publishing; nothing is applied twice.
    with psycopg.connect(url, autocommit=True) as conn:
        again = ingest.handle_upload(
            quiet_bucket, object_key, route_snapshot(object_key), conn=conn
        )
    assert again.export_id == record.export_id
    assert exports(db, client_id)[0].published_at is not None
    sequences = [r["sequence"] for r in stream_records(client_id)]
    assert set(sequences) == set(range(1, len(rows) + 1))  # no gap
    duplicated = sorted(s for s in set(sequences) if sequences.count(s) > 1)
    if where == "before_put":
        assert duplicated == []
    else:  # the second batch went out, the cursor did not move: it is sent again, once
        assert duplicated == list(range(publish.MAX_RECORDS + 1, 2 * publish.MAX_RECORDS + 1))
    wait_replica(db, client_id, rows)


def test_applier_is_idempotent_and_keeps_deletes(client_id, db) -> None:
    """Duplicated, reordered and re-published changes leave the replica as the last one says."""
    register(db, client_id)

    def change(sequence: int, op: str, name: str | None = None) -> Change:
        new = None if op == "DELETE" else {"id": "7", "name": name, "balance": "1", "opened": None}
        return Change(client_id, SIMPLE, sequence, op, {"id": "7"}, new)

    apply_changes(db, [change(1, "INSERT", "a"), change(2, "UPDATE", "b")])
    assert db.execute(
        "SELECT name FROM replica.snap_accounts WHERE client_id = %s", (client_id,)
    ).fetchall() == [("b",)]
    apply_changes(db, [change(3, "DELETE")])
    apply_changes(db, [change(1, "INSERT", "a"), change(2, "UPDATE", "b")])  # late duplicates
    assert (
        db.execute(
            "SELECT count(*) FROM replica.snap_accounts WHERE client_id = %s", (client_id,)
        ).fetchone()[0]
        == 0
    )
    apply_changes(db, [change(4, "INSERT", "c"), change(3, "DELETE")])
    assert db.execute(
        "SELECT name FROM replica.snap_accounts WHERE client_id = %s", (client_id,)
    ).fetchall() == [("c",)]


def test_snapshots_cli_register_and_list(client_id, capsys, local_stack) -> None:
    argv = ["snapshots", "register", COMPOSITE, "--client", client_id, "--key", "pk,n"]
    assert cli.main([*argv, "--columns", COMPOSITE_COLUMNS, "--delimiter", ";", "--no-header"]) == 0
    # Registering the same again is a no-op; another definition of it is refused.
    assert cli.main([*argv, "--columns", COMPOSITE_COLUMNS, "--delimiter", ";", "--no-header"]) == 0
    assert cli.main([*argv, "--columns", COMPOSITE_COLUMNS]) == 1
    capsys.readouterr()
    assert cli.main(["snapshots", "list", "--client", client_id, "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["key"] == ["pk", "n"] and listed["delimiter"] == ";" and not listed["header"]
    assert listed["columns"] == ["pk:integer", "n:integer", "v1:text", "v2:decimal"]


@pytest.mark.parametrize(
    "argv",
    [
        ["snapshots", "register", "t", "--client", "x", "--key", "id", "--columns", "id:float"],
        ["snapshots", "register", "t", "--client", "x", "--key", "nope", "--columns", "id"],
        ["snapshots", "register", "Bad", "--client", "x", "--key", "id", "--columns", "id"],
        ["snapshots", "register", "t", "--client", "BAD", "--key", "id", "--columns", "id"],
        ["export", "snapshot-changes", "--client", "x", "--table", "t"],
        ["export", "client-tax", "--client", "x"],
    ],
)
def test_snapshot_cli_bad_arguments_exit_2(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_change_that_never_applies_goes_to_the_on_failure_queue_and_redrive_resyncs(
    client_id, db, wait_quiet, capsys
) -> None:
    """The applier bisects down to the bad record, retries it, then records the batch in its
    on-failure queue; `dlq redrive` re-applies the change logs from PostgreSQL."""
    import boto3

    from dataharvest import dlq

    register(db, client_id)
    rows = base_rows(3)
    upload(snapshot_key(client_id, "V1"), rows_file(rows))
    wait_quiet()
    wait_replica(db, client_id, rows)
    row = (1, "V1", "INSERT", {"id": "1"}, None, {"id": "1"})
    bogus = publish.record(client_id, "not_registered", row)
    boto3.client("kinesis").put_record(
        StreamName=os.environ["SNAPSHOT_STREAM_NAME"],
        Data=json.dumps(bogus).encode(),
        PartitionKey=f"{client_id}/not_registered/1",
    )
    wait_quiet()
    sqs = boto3.client("sqs")
    stage = os.environ.get("DATAHARVEST_STAGE", "local")
    (queue,) = dlq.select(dlq.queues(sqs, stage), dlq.SNAPSHOT_APPLIER_FAILURES, stage)
    letters = dlq.list_dead_letters(sqs, queue)
    assert any("1 snapshot change record(s)" in k for letter in letters for k in letter.keys)
    # The replica lost a row (someone deleted it by hand): the redrive puts it back.
    db.execute(
        "DELETE FROM replica_store.snap_accounts WHERE client_id = %s AND id = 2", (client_id,)
    )
    assert cli.main(["dlq", "redrive", "--queue", dlq.SNAPSHOT_APPLIER_FAILURES, "--no-wait"]) == 0
    assert "replicas re-applied from the change log" in capsys.readouterr().err
    assert dlq.list_dead_letters(sqs, queue) == []
    wait_replica(db, client_id, rows)
