"""Snapshot deltas benchmark (issue 15): two generated full exports of one table, the delta of
the second against the first, against physical baselines measured on the same servers in the
same run.

    .venv/bin/python bench/bench_snapshots.py                 # 1,000,000 rows
    .venv/bin/python bench/bench_snapshots.py --rows 200000   # a busy machine

The exports have 10 columns (an integer key, text, decimals, dates, an integer); the second
has 1% of the rows updated (one value changed), 0.5% deleted and 0.5% inserted. Starts its
own local stack (embedded PostgreSQL + moto) with services/snapshot_applier running (the
runner drives it from moto's Kinesis), registers the table, uploads both files, then:

1. the first export is applied in a fresh child process (dataharvest.snapshots.ingest, what
   the persistence handler calls; its S3 and Kinesis clients created before the clock starts,
   as in a warm Lambda); its 1M INSERTs are not streamed through moto: the replica
   is bootstrapped from the state by SQL and the publish cursor set past them (a benchmark
   shortcut, said in the output);
2. the second export in a fresh child process: "delta" is from the start of the call (S3 HEAD
   and GET included) until the transaction with the change log committed; "publish" from then
   until every change is on the stream; the child's peak RSS;
3. baseline: a bare COPY of the second file into an unindexed table of its columns;
4. baseline: a bare PutRecords loop (500 per call, records of the same size) from a process
   of its own against the same endpoint;
5. the time from the publish's end until replica.<table> equals the second export (checked
   row by row at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "bench" / ".data"
TABLE = "bench_positions"
COLUMNS = (
    "id:integer,name,city,amount:decimal,price:decimal,opened:date,closed:date,"
    "quantity:integer,currency,note"
)
HEADER = "id,name,city,amount,price,opened,closed,quantity,currency,note\n"
CITIES = ("Oslo", "Bergen", "Paris", "Lyon", "Berlin", "Hamburg", "Madrid", "Rome")
CURRENCIES = ("EUR", "NOK", "USD", "GBP")


def line(rng: random.Random, i: int, bump: int = 0) -> str:
    return (
        f"{i},name {i},{rng.choice(CITIES)},{rng.randrange(-(10**7), 10**7) / 100:.2f},"
        f"{rng.randrange(1, 10**6) / 1000 + bump:.3f},2020-{1 + i % 12:02d}-{1 + i % 28:02d},"
        f"2024-{1 + i % 12:02d}-{1 + i % 28:02d},{rng.randrange(0, 10**6)},"
        f"{rng.choice(CURRENCIES)},note for position {i} of the export\n"
    )


def generate(rows: int) -> tuple[Path, Path, int]:
    """(first, second, expected changes): the second has 1% updated, 0.5% deleted, 0.5% new."""
    first, second = DATA / f"snapshot_{rows}_v1.csv", DATA / f"snapshot_{rows}_v2.csv"
    updated, deleted, inserted = rows // 100, rows // 200, rows // 200
    if not (first.exists() and second.exists()):
        DATA.mkdir(parents=True, exist_ok=True)
        rng = random.Random(rows)
        lines = [line(rng, i) for i in range(1, rows + 1)]
        first.write_text(HEADER + "".join(lines))
        picks = random.Random(rows + 1).sample(range(rows), updated + deleted)
        for index in picks[:updated]:
            lines[index] = line(rng, index + 1, bump=1)
        for index in sorted(picks[updated:], reverse=True):
            del lines[index]
        lines += [line(rng, i) for i in range(rows + 1, rows + inserted + 1)]
        second.write_text(HEADER + "".join(lines))
    return first, second, updated + deleted + inserted


def peak_rss_mb() -> float:
    for text in Path("/proc/self/status").read_text().splitlines():
        if text.startswith("VmHWM:"):
            return int(text.split()[1]) / 1024
    return 0.0


class StopBeforePublish(Exception):
    pass


def child(bucket: str, key: str, publish: bool) -> None:
    """The Lambda side: a fresh process applies one export (ingest.handle_upload)."""
    from dataharvest.db import connect
    from dataharvest.snapshots import ingest
    from dataharvest.snapshots.routing import route_snapshot

    marks: dict[str, float] = {}

    def fault(point: str) -> None:
        marks.setdefault(point, time.perf_counter())
        if point == "before_put" and not publish:
            raise StopBeforePublish

    from dataharvest import metastore
    from dataharvest.persistence.source import s3_client
    from dataharvest.snapshots import delta
    from dataharvest.snapshots.publish import kinesis_client

    # A warm Lambda has its clients (created once per cold start): not part of the delta.
    s3_client(), kinesis_client(), metastore.table()
    # Where the delta's time goes: each step of delta.apply_delta timed.
    steps: dict[str, float] = {}

    def timed(name: str):
        step = getattr(delta, name)

        def run(*args, **kwargs):
            begun = time.perf_counter()
            try:
                return step(*args, **kwargs)
            finally:
                steps[name] = time.perf_counter() - begun

        return run

    for name in ("stage_export", "check_export", "compute_delta", "check_types", "write_delta"):
        setattr(delta, name, timed(name))
    profile = None
    if os.environ.get("BENCH_PROFILE"):  # where the time goes, on stderr
        import cProfile

        profile = cProfile.Profile()
    with connect() as conn:
        started = time.perf_counter()
        if profile:
            profile.enable()
        try:
            record = ingest.handle_upload(bucket, key, route_snapshot(key), conn=conn, fault=fault)
        except StopBeforePublish:
            record = None
        ended = time.perf_counter()
        if profile:
            profile.disable()
            import pstats

            pstats.Stats(profile, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
    committed = marks.get("before_put", ended)
    print(
        json.dumps(
            {
                "delta_s": committed - started,
                "publish_s": ended - committed,
                "total_s": ended - started,
                "peak_rss_mb": peak_rss_mb(),
                "status": record.status if record else "applied (not published)",
                "steps": {k: round(v, 3) for k, v in steps.items()},
            }
        )
    )


def run_child(bucket: str, key: str, publish: bool) -> dict:
    run = subprocess.run(
        [sys.executable, __file__, "--child", bucket, key, "1" if publish else "0"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    if run.returncode != 0:
        raise SystemExit(f"child failed:\n{run.stderr[-3000:]}")
    if os.environ.get("BENCH_PROFILE"):
        print(run.stderr[-6000:], file=sys.stderr)
    return json.loads(run.stdout.strip().splitlines()[-1])


def bare_copy(url: str, path: Path) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE SCHEMA IF NOT EXISTS bench; DROP TABLE IF EXISTS bench.snapshot_copy; "
            "CREATE TABLE bench.snapshot_copy (id bigint, name text, city text, amount numeric, "
            "price numeric, opened date, closed date, quantity bigint, currency text, note text)"
        )
        conn.execute("CHECKPOINT")
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            open(path, "rb") as source,
            cur.copy(
                f"COPY bench.snapshot_copy ({HEADER.strip()}) FROM STDIN (FORMAT csv, HEADER true)"
            ) as copy,
        ):
            while chunk := source.read(1 << 20):
                copy.write(chunk)
        return time.perf_counter() - started


def put_records_child(stream: str, count: int, size: int) -> None:
    """The PutRecords baseline: `count` records of `size` bytes, 500 per call, in order."""
    import boto3

    kinesis = boto3.client("kinesis")
    data = b"x" * size
    started = time.perf_counter()
    for start in range(0, count, 500):
        entries = [
            {"Data": data, "PartitionKey": f"bench/{i}"}
            for i in range(start, min(start + 500, count))
        ]
        response = kinesis.put_records(StreamName=stream, Records=entries)
        assert not response.get("FailedRecordCount"), response
    print(json.dumps({"seconds": time.perf_counter() - started}))


def bootstrap_replica(url: str, client_id: str) -> None:
    """The first export's state straight into the replica, its changes marked published."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute(
            f"INSERT INTO replica_store.{TABLE} SELECT client_id, id::bigint, name, city, "
            "amount::numeric, price::numeric, opened::date, closed::date, quantity::bigint, "
            f"currency, note, 0, false FROM snapshot_state.{TABLE} WHERE client_id = %s",
            (client_id,),
        )
        conn.execute(
            "UPDATE snapshots.table_state SET published_sequence = last_sequence "
            "WHERE client_id = %s",
            (client_id,),
        )


def replica_mismatches(url: str, client_id: str) -> int:
    """Rows where replica.<table> and the applied export (the state) differ, either way."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            f"SELECT count(*) FROM (SELECT * FROM replica.{TABLE} WHERE client_id = %(c)s) r "
            f"FULL JOIN (SELECT * FROM snapshot_state.{TABLE} WHERE client_id = %(c)s) s "
            "ON r.id = s.id::bigint WHERE r.id IS NULL OR s.id IS NULL "
            "OR (r.name, r.city, r.amount, r.price, r.opened, r.closed, r.quantity, r.currency, "
            "r.note) IS DISTINCT FROM (s.name, s.city, s.amount::numeric, s.price::numeric, "
            "s.opened::date, s.closed::date, s.quantity::bigint, s.currency, s.note)",
            {"c": client_id},
        ).fetchone()[0]


def applied_changes(url: str, client_id: str, first_sequence: int) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            f"SELECT count(*) FROM replica_store.{TABLE} WHERE client_id = %s AND _sequence >= %s",
            (client_id, first_sequence),
        ).fetchone()[0]


def mean_record_bytes(url: str, client_id: str, key: str) -> int:
    """The mean size of the second export's published records (the bare loop sends as much)."""
    from dataharvest.snapshots.publish import record

    with psycopg.connect(url, autocommit=True) as conn:
        version = conn.execute(
            "SELECT export_version FROM snapshots.exports WHERE source_key = %s", (key,)
        ).fetchone()[0]
        rows = conn.execute(
            "SELECT sequence, export_version, op, key, old_values, new_values "
            "FROM snapshots.changes WHERE client_id = %s AND export_version = %s",
            (client_id, version),
        ).fetchall()
    sizes = [len(json.dumps(record(client_id, TABLE, r), separators=(",", ":"))) for r in rows]
    return sum(sizes) // len(sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--put-records", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2] == "1")
        return
    if args.put_records:
        put_records_child(args.put_records[0], int(args.put_records[1]), int(args.put_records[2]))
        return

    import boto3

    from dataharvest.snapshots import tables
    from dataharvest_local import slsconfig
    from dataharvest_local.stack import LocalStack

    started = time.perf_counter()
    first, second, expected_changes = generate(args.rows)
    print(
        f"exports: {args.rows:,} rows, 10 columns, {second.stat().st_size / 1e6:.0f} MB; "
        f"second: 1% updated, 0.5% deleted, 0.5% inserted = {expected_changes:,} changes "
        f"(ready in {time.perf_counter() - started:.1f} s)"
    )
    applier = slsconfig.REPO_ROOT / "services" / "snapshot_applier" / "serverless.yml"
    stack = LocalStack(DATA / "home", service_files=[applier])
    info = stack.start()
    try:
        os.environ.update(info.client_environment())
        bucket = os.environ["LANDING_BUCKET"]
        stream = os.environ["SNAPSHOT_STREAM_NAME"]
        client_id = f"bench-{int(time.time())}"
        with psycopg.connect(info.database_url, autocommit=True) as conn:
            tables.register(conn, tables.parse_definition(client_id, TABLE, "id", COLUMNS))
        s3 = boto3.client("s3")
        keys = [f"{client_id}/snapshots/{TABLE}/2024010{i}_V0001/export.csv" for i in (1, 2)]
        s3.upload_file(str(first), bucket, keys[0])
        s3.upload_file(str(second), bucket, keys[1])

        one = run_child(bucket, keys[0], publish=False)
        bootstrap_replica(info.database_url, client_id)
        print(
            f"first export: applied in {one['delta_s']:.2f} s ({args.rows:,} INSERTs; replica "
            "bootstrapped by SQL, not streamed through moto)"
        )
        copy_s = bare_copy(info.database_url, second)
        two = run_child(bucket, keys[1], publish=True)
        published_at = time.perf_counter()
        with psycopg.connect(info.database_url, autocommit=True) as conn:
            first_sequence, changes = conn.execute(
                "SELECT first_sequence, inserts + updates + deletes FROM snapshots.exports "
                "WHERE source_key = %s",
                (keys[1],),
            ).fetchone()
        assert changes == expected_changes, (changes, expected_changes)
        while applied_changes(info.database_url, client_id, first_sequence) < changes:
            if time.perf_counter() - published_at > 900:
                raise SystemExit("the replica did not catch up within 900 s")
            time.sleep(0.1)
        replica_s = time.perf_counter() - published_at
        mismatches = replica_mismatches(info.database_url, client_id)
        copy_again_s = bare_copy(info.database_url, second)
        size = mean_record_bytes(info.database_url, client_id, keys[1])
        run = subprocess.run(
            [sys.executable, __file__, "--put-records", stream, str(changes), str(size)],
            capture_output=True,
            text=True,
            env=os.environ.copy(),
            check=True,
        )
        put_s = json.loads(run.stdout.strip().splitlines()[-1])["seconds"]
    finally:
        stack.stop()

    copy_best = min(copy_s, copy_again_s)
    print(f"bare COPY of the second export (unindexed table): {copy_best:.2f} s (best of 2)")
    print(
        f"delta of the second export (upload to change log committed): {two['delta_s']:.2f} s "
        f"= {two['delta_s'] / copy_best:.2f}x the bare COPY (target <= 3x)"
    )
    print(
        f"publish: {changes:,} changes in {two['publish_s']:.2f} s = "
        f"{changes / two['publish_s']:,.0f}/s; bare PutRecords loop: {changes / put_s:,.0f}/s "
        f"({put_s:.2f} s); ratio {put_s / two['publish_s']:.2f}"
    )
    print(
        f"replica equal to the second export {replica_s:.2f} s after the publish "
        f"({mismatches} mismatching rows)"
    )
    print(f"peak RSS of the applying process: {two['peak_rss_mb']:.0f} MB")
    print(f"delta steps (s): {json.dumps(two['steps'])}; records of {size} bytes")
    if mismatches:
        raise SystemExit("the replica differs from the export")


if __name__ == "__main__":
    main()
