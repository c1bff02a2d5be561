"""Persistence benchmark: one generated transactions file through the persistence handler,
against the physical limit: a bare COPY of the same file into a table of its columns with no
keys and no indexes, on the same server in the same run.

    .venv/bin/python bench/bench_persistence.py                  # 1,000,000 rows, best of 3
    .venv/bin/python bench/bench_persistence.py --rows 10000000 --repeat 1

The handler loads every file in one invocation here (the chunk size raised above the file):
a 10M-row file (~415 MB) would otherwise be split into chunks staged by other invocations,
which bench_dataplane.py measures through the whole stack.

Starts its own local stack (embedded PostgreSQL + moto, no services running, state under
bench/.data/), uploads the file (once per run, under a new client each time, so every run is
a real load), and then, alternating with the baseline COPY:

1. invokes services/persistence/handler.py in a fresh child process with the S3 event as SQS
   delivers it (HEAD + streamed GET, header, line check + COPY into the load's leaf, duplicate
   check, ANALYZE, swap, audit, metastore write), reporting wall time and peak RSS; cold (the
   first call of the process, as a fresh Lambda execution environment pays it) and warm (the
   second call, after a 1,000-row upload of another client: what a reused environment pays);
2. the same rows with 1% of the lines needing the rules (lower-case keywords: set aside and
   staged), with an extra column (a placeholder column, dropped), and with every line needing
   them (staged whole: COPY into a staging table, the rules as SQL, INSERT into the leaf);
3. the database's growth per row from the first load (pg_database_size before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "bench" / ".data"
HEADER = "record_id,account_number,transaction_reference,amount,keyword\n"
KEYWORDS = ("DEPOSIT", "TAX", "WITHDRAWAL", "FEE")
# Above the largest file this bench generates (10M rows: ~415 MB).
ONE_PIECE_BYTES = 4 << 30
COPY_TABLE_DDL = """
CREATE SCHEMA IF NOT EXISTS bench;
DROP TABLE IF EXISTS bench.copy_plain, bench.pandas;
-- The baseline: the file's columns, typed, no keys, no indexes (the physical limit).
CREATE TABLE bench.copy_plain (record_id bigint, account_number bigint,
    transaction_reference text, amount numeric, keyword text);
"""


def generated_file(
    name: str, header: str, rows: int, line: Callable[[random.Random, int], str]
) -> Path:
    """bench/.data/<name>: `header`, then `line(rng, i)` for i = 1..rows, seeded by the row
    count so every run of a size reads the same file; written once, reused after."""
    path = DATA / name
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    rng = random.Random(rows)
    with open(path.with_suffix(".tmp"), "w") as out:
        out.write(header)
        for start in range(1, rows + 1, 100_000):
            out.writelines(line(rng, i) for i in range(start, min(start + 100_000, rows + 1)))
    path.with_suffix(".tmp").rename(path)
    return path


def generate(rows: int) -> Path:
    return generated_file(
        f"transactions_{rows}.csv",
        HEADER,
        rows,
        lambda rng, i: (
            f"{i},{rng.randrange(1, 50_000)},TX{i:010d},"
            f"{rng.randrange(-99_999, 999_999) / 100:.2f},{rng.choice(KEYWORDS)}\n"
        ),
    )


def child(bucket: str, key: str, warm_up: str | None = None) -> None:
    """The Lambda side: a fresh process that imports the handler and gets one SQS batch. With
    `warm_up`, that upload is handled first and the clock runs for the second call only: what
    a warm execution environment pays (imports, connection and clients already made)."""
    sys.path.insert(0, str(REPO / "services" / "persistence"))
    from urllib.parse import quote_plus

    from handler import handler

    from dataharvest_local.worker import LambdaContext

    def event(key: str) -> dict:
        body = {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "eventSource": "aws:s3",
                    "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key)}},
                }
            ]
        }
        return {
            "Records": [
                {
                    "messageId": "bench",
                    "body": json.dumps(body),
                    "attributes": {},
                    "messageAttributes": {},
                    "eventSource": "aws:sqs",
                }
            ]
        }

    context = LambdaContext(
        "bench",
        "$LATEST",
        "arn:bench",
        1024,
        "bench",
        "bench",
        "bench",
        int(time.time() * 1000) + 900_000,
    )
    if warm_up is not None:
        assert handler(event(warm_up), context) == {"batchItemFailures": []}
    started = time.perf_counter()
    result = handler(event(key), context)
    seconds = time.perf_counter() - started
    peak_mb = peak_rss_mb()
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "result": result}))


def peak_rss_mb() -> float:
    """This process's peak RSS. Not getrusage's ru_maxrss: Linux carries that over fork and
    exec, so a child would report its parent's (moto holding the file) peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare_copy(url: str, path: Path, table: str) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {table}")
        conn.execute("CHECKPOINT")
        started = time.perf_counter()
        with conn.cursor() as cur, open(path, "rb") as source:
            columns = HEADER.strip()
            statement = f"COPY {table} ({columns}) FROM STDIN (FORMAT csv, HEADER true)"
            with cur.copy(statement) as copy:
                while chunk := source.read(1 << 20):
                    copy.write(chunk)
        return time.perf_counter() - started


def upload_runs(
    s3, bucket: str, path: Path, prefix: str, repeat: int, entity: str = "transactions"
) -> list[str]:
    """`repeat` uploads of `path`, each under a client of its own (`prefix` + run number), so
    every run is a real load; returns their keys."""
    keys = [f"{prefix}{i}/{entity}_20240102.csv" for i in range(repeat)]
    for key in keys:
        s3.upload_file(str(path), bucket, key)
    return keys


def run_handler(info, bucket: str, key: str, warm_up: str | None = None) -> dict:
    """The persistence handler on one upload, in a fresh child process (after `warm_up`)."""
    with psycopg.connect(info.database_url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    run = subprocess.run(
        [sys.executable, __file__, "--child", bucket, key]
        + (["--warm-up", warm_up] if warm_up else []),
        capture_output=True,
        text=True,
        env={
            **os.environ,
            # One invocation loads the whole file, whatever its size: the handler's own path
            # (a file above the chunk size is otherwise split into chunks for other
            # invocations; that path is bench_dataplane.py's part 2).
            "DATAHARVEST_CHUNK_BYTES": str(ONE_PIECE_BYTES),
        },
        check=True,
    )
    outcome = json.loads(run.stdout.strip().splitlines()[-1])
    assert outcome["result"] == {"batchItemFailures": []}, outcome
    return outcome


def database_size(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]


def pandas_load(url: str, path: Path) -> float:
    import pandas as pd
    from sqlalchemy import create_engine

    from dataharvest_local.migrate import sqlalchemy_url

    engine = create_engine(sqlalchemy_url(url))
    started = time.perf_counter()
    frame = pd.read_csv(path)
    frame.to_sql(
        "pandas", engine, schema="bench", if_exists="replace", index=False, chunksize=50_000
    )
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N for each path")
    parser.add_argument("--pandas", action="store_true", help="also pandas read_csv + to_sql")
    parser.add_argument("--child", nargs=2, metavar=("BUCKET", "KEY"), help=argparse.SUPPRESS)
    parser.add_argument("--warm-up", metavar="KEY", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, warm_up=args.warm_up)
        return

    import boto3

    from dataharvest_local.stack import LocalStack

    started = time.perf_counter()
    path = generate(args.rows)
    extra_path = with_extra_column(path)
    mixed_path = with_lower_case_keywords(path)
    staged_path = with_lower_case_keywords(path, every=1)
    size_mb = path.stat().st_size / 1e6
    print(
        f"file: {path.name}, {args.rows:,} rows, {size_mb:.0f} MB "
        f"(ready in {time.perf_counter() - started:.1f} s)"
    )
    stack = LocalStack(DATA / "home", service_files=[])
    info = stack.start()
    try:
        os.environ.update(info.client_environment())
        bucket = os.environ["LANDING_BUCKET"]
        s3 = boto3.client("s3")
        run_id = int(time.time())
        keys = upload_runs(s3, bucket, path, f"bench-{run_id}-", args.repeat)
        # Warm runs: a small file of another client first, in the same process, then the file.
        warm_up_keys = upload_runs(s3, bucket, generate(1_000), f"bench-{run_id}-u", args.repeat)
        warm_keys = upload_runs(s3, bucket, path, f"bench-{run_id}-w", args.repeat)
        staged_keys = upload_runs(s3, bucket, staged_path, f"bench-{run_id}-s", args.repeat)
        mixed_keys = upload_runs(s3, bucket, mixed_path, f"bench-{run_id}-m", args.repeat)
        extra_keys = upload_runs(s3, bucket, extra_path, f"bench-{run_id}-e", args.repeat)
        with psycopg.connect(info.database_url, autocommit=True) as conn:
            conn.execute(COPY_TABLE_DDL)

        baseline = [bare_copy(info.database_url, path, "bench.copy_plain")]
        size_before = database_size(info.database_url)
        handler = []
        for i, key in enumerate(keys):
            outcome = run_handler(info, bucket, key)
            handler.append(outcome)
            if i == 0:
                grown = database_size(info.database_url) - size_before
            baseline.append(bare_copy(info.database_url, path, "bench.copy_plain"))
        warm = []
        for key, warm_up in zip(warm_keys, warm_up_keys, strict=True):
            warm.append(run_handler(info, bucket, key, warm_up))
            baseline.append(bare_copy(info.database_url, path, "bench.copy_plain"))
        staged = [run_handler(info, bucket, key) for key in staged_keys]
        mixed = [run_handler(info, bucket, key) for key in mixed_keys]
        extra = [run_handler(info, bucket, key) for key in extra_keys]
        with psycopg.connect(info.database_url, autocommit=True) as conn:
            for key in keys + warm_keys + staged_keys + mixed_keys + extra_keys:
                loaded = conn.execute(
                    "SELECT rows_loaded, rows_rejected, status FROM audit.file_loads "
                    "WHERE source_key = %s AND is_current",
                    (key,),
                ).fetchone()
                assert loaded == (args.rows, 0, "loaded"), (key, loaded)
            leaf = conn.execute(
                "SELECT pg_total_relation_size(relid) "
                "FROM pg_partition_tree('raw_store.transactions') WHERE isleaf LIMIT 1"
            ).fetchone()[0]

        base = min(baseline)
        rows = args.rows
        best = min(handler, key=lambda o: o["seconds"])
        best_warm = min(warm, key=lambda o: o["seconds"])
        best_staged = min(staged, key=lambda o: o["seconds"])
        best_mixed = min(mixed, key=lambda o: o["seconds"])
        best_extra = min(extra, key=lambda o: o["seconds"])
        title = f"path (best of {args.repeat})"
        print(f"{title:<52}{'seconds':>9}{'rows/s':>12}{'ratio':>8}")
        lines = [
            ("bare COPY into a table of the file's columns", base),
            ("persistence handler, plain file (S3 -> raw, metastore)", best["seconds"]),
            ("  the same, warm (second call of its process)", best_warm["seconds"]),
            ("persistence handler, 1% of lines staged", best_mixed["seconds"]),
            ("persistence handler, an extra column", best_extra["seconds"]),
            ("persistence handler, staged whole (all lines)", best_staged["seconds"]),
        ]
        if args.pandas:
            lines.append(("pandas read_csv + to_sql", pandas_load(info.database_url, path)))
        for label, seconds in lines:
            print(f"{label:<52}{seconds:>9.2f}{rows / seconds:>12,.0f}{base / seconds:>8.2f}")
        print(
            f"ratio = bare COPY seconds / path seconds. Handler peak RSS "
            f"{best['peak_rss_mb']:.0f} MB (staged {best_staged['peak_rss_mb']:.0f} MB). "
            f"Storage: database grew {grown / rows:.0f} bytes per row with the first load "
            f"(its leaf {leaf / rows:.0f} bytes per row; the CSV {path.stat().st_size / rows:.0f})"
        )
        print(
            "all runs (s): baseline "
            + ", ".join(f"{b:.2f}" for b in baseline)
            + "; handler "
            + ", ".join(f"{o['seconds']:.2f}" for o in handler)
            + "; warm "
            + ", ".join(f"{o['seconds']:.2f}" for o in warm)
            + "; 1% staged "
            + ", ".join(f"{o['seconds']:.2f}" for o in mixed)
            + "; extra column "
            + ", ".join(f"{o['seconds']:.2f}" for o in extra)
            + "; staged whole "
            + ", ".join(f"{o['seconds']:.2f}" for o in staged)
        )
    finally:
        stack.stop()


def with_lower_case_keywords(path: Path, every: int = 100) -> Path:
    """The same rows, every `every`th keyword in lower case (valid; upper-cased on load): those
    lines are set aside and staged, the others copied straight into the leaf. With every line
    set aside the file passes the fast path's limit and is staged whole."""
    mixed = path.with_name(path.stem + ("_mixed.csv" if every > 1 else "_lower.csv"))
    if mixed.exists():
        return mixed
    with open(path) as source, open(mixed.with_suffix(".tmp"), "w") as out:
        for number, line in enumerate(source):
            if number and number % every == 0:
                head, keyword = line.rsplit(",", 1)
                line = f"{head},{keyword.lower()}"
            out.write(line)
    mixed.with_suffix(".tmp").rename(mixed)
    return mixed


def with_extra_column(path: Path) -> Path:
    """The same rows with one more field the contract does not know (a placeholder column)."""
    staged = path.with_name(path.stem + "_extra.csv")
    if staged.exists():
        return staged
    with open(path) as source, open(staged.with_suffix(".tmp"), "w") as out:
        for line in source:
            out.write(
                line.rstrip("\n") + (",comment\n" if line.startswith("record_id") else ",x\n")
            )
    staged.with_suffix(".tmp").rename(staged)
    return staged


if __name__ == "__main__":
    main()
