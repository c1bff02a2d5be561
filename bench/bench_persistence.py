"""Persistence benchmark: one generated transactions file, end to end through the handler,
against a bare COPY of the same file and pandas as reference points.

    .venv/bin/python bench/bench_persistence.py              # 1,000,000 rows
    .venv/bin/python bench/bench_persistence.py --rows 5000000 --no-pandas

Starts its own local stack (embedded PostgreSQL + moto, no services running, state under
bench/.data/), uploads the file to the landing bucket, and then:

1. invokes services/persistence/handler.py in a fresh child process with the S3 event as SQS
   delivers it (S3 read, header check, COPY to staging, validation, insert, metastore write),
   reporting the child's wall time and peak RSS;
2. COPYs the same file into an empty table with raw.transactions' columns and keys (and into
   one without keys) from this process;
3. unless --no-pandas: pandas read_csv + to_sql into an empty table.
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
from pathlib import Path

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "bench" / ".data"
HEADER = "record_id,account_number,transaction_reference,amount,keyword\n"
KEYWORDS = ("DEPOSIT", "TAX", "WITHDRAWAL", "FEE")
COPY_TABLE_DDL = """
CREATE SCHEMA IF NOT EXISTS bench;
DROP TABLE IF EXISTS bench.copy_keyed, bench.copy_plain, bench.pandas;
-- raw.transactions itself (columns, types, primary key, index); the lineage columns the file
-- does not have get, as defaults, the very values the handler stores (same row width).
CREATE TABLE bench.copy_keyed (LIKE raw.transactions INCLUDING ALL);
ALTER TABLE bench.copy_keyed
    ALTER client_id SET DEFAULT {client}, ALTER business_date SET DEFAULT '2024-01-02',
    ALTER source_key SET DEFAULT {key}, ALTER source_version SET DEFAULT {version},
    ALTER line_number SET DEFAULT 0;
CREATE TABLE bench.copy_plain (LIKE bench.copy_keyed INCLUDING DEFAULTS);
"""


def generate(rows: int) -> Path:
    path = DATA / f"transactions_{rows}.csv"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    rng = random.Random(rows)
    with open(path.with_suffix(".tmp"), "w") as out:
        out.write(HEADER)
        for start in range(1, rows + 1, 100_000):
            out.writelines(
                f"{i},{rng.randrange(1, 50_000)},TX{i:010d},"
                f"{rng.randrange(-99_999, 999_999) / 100:.2f},{rng.choice(KEYWORDS)}\n"
                for i in range(start, min(start + 100_000, rows + 1))
            )
    path.with_suffix(".tmp").rename(path)
    return path


def child(bucket: str, key: str) -> None:
    """The Lambda side: a fresh process that imports the handler and gets one SQS batch."""
    sys.path.insert(0, str(REPO / "services" / "persistence"))
    from urllib.parse import quote_plus

    from handler import handler

    from dataharvest.local.worker import LambdaContext

    body = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "eventSource": "aws:s3",
                "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key)}},
            }
        ]
    }
    event = {
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
    started = time.perf_counter()
    result = handler(event, context)
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
        started = time.perf_counter()
        with conn.cursor() as cur, open(path, "rb") as source:
            columns = HEADER.strip()
            statement = f"COPY {table} ({columns}) FROM STDIN (FORMAT csv, HEADER true)"
            with cur.copy(statement) as copy:
                while chunk := source.read(1 << 20):
                    copy.write(chunk)
        return time.perf_counter() - started


def pandas_load(url: str, path: Path) -> float:
    import pandas as pd
    from sqlalchemy import create_engine

    from dataharvest.migrate import sqlalchemy_url

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
    parser.add_argument("--no-pandas", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("BUCKET", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    import boto3

    from dataharvest.local.stack import LocalStack

    started = time.perf_counter()
    path = generate(args.rows)
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
        key = f"bench-{int(time.time())}/transactions_20240102.csv"
        s3 = boto3.client("s3")
        s3.upload_file(str(path), bucket, key)
        version = s3.head_object(Bucket=bucket, Key=key)["VersionId"]
        with psycopg.connect(info.database_url, autocommit=True) as conn:
            lineage = {"client": key.split("/")[0], "key": key, "version": version}
            conn.execute(
                sql.SQL(COPY_TABLE_DDL).format(**{k: sql.Literal(v) for k, v in lineage.items()})
            )
            # Start every run from the same state: no earlier runs' rows in raw.
            conn.execute("TRUNCATE raw.transactions")
            conn.execute("CHECKPOINT")

        run = subprocess.run(
            [sys.executable, __file__, "--child", bucket, key],
            capture_output=True,
            text=True,
            env=os.environ.copy(),
            check=True,
        )
        outcome = json.loads(run.stdout.strip().splitlines()[-1])
        assert outcome["result"] == {"batchItemFailures": []}, outcome
        with psycopg.connect(info.database_url, autocommit=True) as conn:
            loaded = conn.execute(
                "SELECT rows_loaded, rows_rejected, status FROM audit.file_loads "
                "WHERE source_key = %s AND is_current",
                (key,),
            ).fetchone()
            conn.execute("CHECKPOINT")
        assert loaded == (args.rows, 0, "loaded"), loaded

        keyed = bare_copy(info.database_url, path, "bench.copy_keyed")
        plain = bare_copy(info.database_url, path, "bench.copy_plain")
        handler_s = outcome["seconds"]
        rows = args.rows
        print(f"{'path':<44}{'seconds':>9}{'rows/s':>12}{'ratio':>8}")
        lines = [
            ("persistence handler (S3 -> raw, metastore)", handler_s),
            ("bare COPY into a copy of raw.transactions", keyed),
            ("bare COPY, same table without indexes", plain),
        ]
        if not args.no_pandas:
            lines.append(("pandas read_csv + to_sql", pandas_load(info.database_url, path)))
        for label, seconds in lines:
            print(f"{label:<44}{seconds:>9.2f}{rows / seconds:>12,.0f}{keyed / seconds:>8.2f}")
        print(
            f"ratio = bare COPY (keyed) seconds / path seconds; handler peak RSS "
            f"{outcome['peak_rss_mb']:.0f} MB"
        )
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
