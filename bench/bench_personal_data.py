"""Personal-data encryption benchmark: the load-speed cost of encrypting client names at the
field level (security/personal.py), on a generated clients file, against the physical limit: a
bare COPY of the same file into a table of its columns with no keys and no indexes, on the same
server in the same run.

    .venv/bin/python bench/bench_personal_data.py                 # 1,000,000 rows, best of 2
    .venv/bin/python bench/bench_personal_data.py --rows 100000 --repeat 1

Starts its own local stack (embedded PostgreSQL + moto with its KMS, no services running, state
under bench/.data/), uploads the file under a new client per run, and measures, alternating with
the baseline COPY:

1. the persistence handler on the clients file (fresh child process: S3 -> raw with the names
   encrypted in one set-based pass before the leaf is attached, audit, metastore);
2. the same handler on the same rows with the name columns empty (nothing to encrypt): what
   the load costs without the encryption pass;
3. the encryption pass alone (`encrypt_leaf`) on a table of the file's rows: COPY out, AES-GCM
   in Python, COPY back, one UPDATE.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_persistence import DATA, generated_file, run_handler, upload_runs

HEADER = "record_id,first_name,last_name,client_reference,tax_free_allowance\n"
FIRST = ("Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Zoë", "Jürgen", "Søren")
LAST = ("Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Øster", "Müller")


def generate(rows: int, names: bool = True) -> Path:
    return generated_file(
        f"clients_{rows}{'' if names else '_nameless'}.csv",
        HEADER,
        rows,
        lambda rng, i: (
            f"{i},{rng.choice(FIRST) if names else ''},{rng.choice(LAST) if names else ''},"
            f"C{i:09d},{rng.randrange(0, 200_000) / 100:.2f}\n"
        ),
    )


def bare_copy(url: str, path: Path) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE bench.copy_clients")
        conn.execute("CHECKPOINT")
        started = time.perf_counter()
        with conn.cursor() as cur, open(path, "rb") as source:
            statement = (
                f"COPY bench.copy_clients ({HEADER.strip()}) FROM STDIN (FORMAT csv, HEADER true)"
            )
            with cur.copy(statement) as copy:
                while chunk := source.read(1 << 20):
                    copy.write(chunk)
        return time.perf_counter() - started


def encrypt_pass(url: str, client_id: str) -> float:
    """encrypt_leaf on a fresh table of the baseline's rows, shaped like a leaf's columns."""
    from dataharvest.security import personal

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench.clients_leaf")
        conn.execute(
            "CREATE TABLE bench.clients_leaf AS SELECT %s::text AS client_id, "
            "(row_number() OVER ())::integer AS line_number, first_name, last_name, "
            "NULL::text AS personal_key_id FROM bench.copy_clients",
            (client_id,),
        )
        conn.execute("CHECKPOINT")
        started = time.perf_counter()
        with conn.transaction():
            encrypted = personal.encrypt_leaf(conn, "bench", "clients_leaf", "clients")
        seconds = time.perf_counter() - started
        (clear,) = conn.execute(
            "SELECT count(*) FROM bench.clients_leaf WHERE personal_key_id IS NULL"
        ).fetchone()
    assert clear == 0 and encrypted > 0, (clear, encrypted)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="best of N for each path")
    args = parser.parse_args()

    import boto3

    from dataharvest_local.stack import LocalStack

    path = generate(args.rows)
    nameless = generate(args.rows, names=False)
    print(f"file: {path.name}, {args.rows:,} rows, {path.stat().st_size / 1e6:.0f} MB")
    stack = LocalStack(DATA / "home", service_files=[])
    info = stack.start()
    try:
        os.environ.update(info.client_environment())
        bucket = os.environ["LANDING_BUCKET"]
        s3 = boto3.client("s3")
        run_id = int(time.time())
        named_keys = upload_runs(s3, bucket, path, f"pii-{run_id}-", args.repeat, "clients")
        nameless_keys = upload_runs(s3, bucket, nameless, f"pii-{run_id}-n", args.repeat, "clients")
        with psycopg.connect(info.database_url, autocommit=True) as conn:
            conn.execute(
                "CREATE SCHEMA IF NOT EXISTS bench; DROP TABLE IF EXISTS bench.copy_clients; "
                "CREATE TABLE bench.copy_clients (record_id bigint, first_name text, "
                "last_name text, client_reference text, tax_free_allowance numeric)"
            )
        baseline = [bare_copy(info.database_url, path)]
        named, plain, passes = [], [], []
        for i in range(args.repeat):
            named.append(run_handler(info, bucket, named_keys[i])["seconds"])
            baseline.append(bare_copy(info.database_url, path))
            plain.append(run_handler(info, bucket, nameless_keys[i])["seconds"])
            passes.append(encrypt_pass(info.database_url, f"pii-{run_id}-pass{i}"))
        with psycopg.connect(info.database_url, autocommit=True) as conn:
            for key in named_keys:
                client = key.split("/", 1)[0]
                (left,) = conn.execute(
                    "SELECT count(*) FROM raw_store.clients WHERE client_id = %s "
                    "AND (personal_key_id IS NULL OR first_name IN ('Ada', 'Alan'))",
                    (client,),
                ).fetchone()
                assert left == 0, (client, left)
        base = min(baseline)
        title = f"path (best of {args.repeat})"
        print(f"{title:<60}{'seconds':>9}{'rows/s':>12}{'ratio':>8}")
        for label, seconds in (
            ("bare COPY into a table of the file's columns", base),
            ("persistence handler, names encrypted (S3 -> raw, metastore)", min(named)),
            ("persistence handler, same rows without names (no encryption)", min(plain)),
            ("encryption pass alone (COPY out, AES-GCM, COPY in, UPDATE)", min(passes)),
        ):
            print(f"{label:<60}{seconds:>9.2f}{args.rows / seconds:>12,.0f}{base / seconds:>8.2f}")
        print(
            "ratio = bare COPY seconds / path seconds. All runs (s): baseline "
            + ", ".join(f"{b:.2f}" for b in baseline)
            + "; encrypted "
            + ", ".join(f"{s:.2f}" for s in named)
            + "; without names "
            + ", ".join(f"{s:.2f}" for s in plain)
            + "; pass "
            + ", ".join(f"{s:.2f}" for s in passes)
        )
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
