"""Data API latency: the status and outputs routes over HTTP on the local stack, with 1,000
clients x 30 dates in the metastore, against the bare reads they make.

    .venv/bin/python bench/bench_api.py [--clients 1000] [--dates 30] [--requests 500]
        [--rows 20]

Starts its own local stack with the api service only (embedded PostgreSQL + moto, state in a
temporary folder), writes one metastore item per client and date (every input persisted, row
and rejection counts, two transformer flags) and `--rows` rejections per client and date in
PostgreSQL. Then `--requests` times each, on random clients and dates, with each client's own
partner token:

- status: `GET /clients/{c}/status` (the client's 30 items, one DynamoDB Query) through the
  local front, the worker process, authentication, the role rule, the route and the
  registry's `stuck` check; its baseline is the same DynamoDB Query made directly with boto3.
- outputs: `GET /clients/{c}/dates/{d}/rejections?limit=100` (one page, scoped transaction);
  its baseline is the page's SELECT on a psycopg connection.

Prints p50 / p95 per route and the ratio of each to its baseline (same run, same machine).
Target: p95 < 300 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRANSFORMERS = ("relationship_transformer", "tax_transformer")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def seed_metastore(table, clients: list[str], dates: list[str]) -> None:
    with table.batch_writer() as batch:
        for client in clients:
            for day in dates:
                item = {"partition_key": client, "sort_key": day}
                for prefix in ("client", "portfolio", "account", "transaction"):
                    item[f"{prefix}_persisted"] = True
                    item[f"{prefix}_version"] = f"v-{day}"
                    item[f"{prefix}_rows"] = 100
                    item[f"{prefix}_rejections"] = 1
                for name in TRANSFORMERS:
                    item[f"{name}_done"] = True
                batch.put_item(Item=item)


def seed_rejections(database_url: str, clients: int, dates: list[str], rows: int) -> None:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO audit.rejections (client_id, business_date, entity, source_key,
                   source_version, line_number, column_name, value, reason)
               SELECT 'bench-' || c, to_date(d, 'YYYYMMDD'), 'accounts',
                      'bench-' || c || '/accounts_' || d || '.csv', 'v1', r + 1, 'currency',
                      'x' || r, 'not 3 upper-case letters'
               FROM generate_series(1, %s) AS c, unnest(%s::text[]) AS d,
                    generate_series(1, %s) AS r""",
            (clients, dates, rows),
        )
        conn.execute("ANALYZE audit.rejections")


def get(url: str, token: str) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        return response.read()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--dates", type=int, default=30)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rows", type=int, default=20)
    args = parser.parse_args()

    import boto3
    import psycopg
    from boto3.dynamodb.conditions import Key

    from dataharvest import config, metastore
    from dataharvest.api.auth import create_token
    from dataharvest_local.stack import LocalStack

    home = Path(tempfile.mkdtemp(prefix="bench-api-"))
    stack = LocalStack(home, service_files=[REPO / "services/api/serverless.yml"])
    info = stack.start()
    try:
        os.environ.update(info.client_environment())
        config.environment.cache_clear()
        metastore.table.cache_clear()
        clients = [f"bench-{n}" for n in range(1, args.clients + 1)]
        dates = [f"202403{d:02d}" for d in range(1, args.dates + 1)]
        started = time.monotonic()
        seed_metastore(metastore.table(), clients, dates)
        seed_rejections(info.database_url, args.clients, dates, args.rows)
        print(
            f"seeded {len(clients) * len(dates)} metastore items and "
            f"{len(clients) * len(dates) * args.rows} rejections in "
            f"{time.monotonic() - started:.1f} s",
            flush=True,
        )
        rng = random.Random(7)
        tokens = {c: create_token(home, "partner", c, 3600) for c in clients}
        table = boto3.resource("dynamodb").Table(os.environ["METASTORE_TABLE"])
        conn = psycopg.connect(info.database_url, autocommit=True)
        base = info.api_url
        # Warm both workers and both paths.
        for client in clients[:4]:
            get(f"{base}/clients/{client}/status", tokens[client])
            get(f"{base}/clients/{client}/dates/2024-03-01/rejections", tokens[client])

        def one(client: str, day: str) -> dict[str, float]:
            iso, token = f"{day[:4]}-{day[4:6]}-{day[6:]}", tokens[client]
            started = time.perf_counter()
            get(f"{base}/clients/{client}/status", token)
            status = time.perf_counter()
            table.query(
                KeyConditionExpression=Key("partition_key").eq(client)
                & Key("sort_key").between("00000000", "99999999"),
                Limit=100,
            )
            status_base = time.perf_counter()
            get(f"{base}/clients/{client}/dates/{iso}/rejections?limit=100", token)
            outputs = time.perf_counter()
            conn.execute(
                "SELECT rejection_id, entity, source_key, source_version, line_number, "
                "column_name, value, reason FROM audit.rejections WHERE client_id = %s "
                "AND business_date = to_date(%s, 'YYYYMMDD') ORDER BY rejection_id LIMIT 101",
                (client, day),
            ).fetchall()
            done = time.perf_counter()
            return {
                "status": (status - started) * 1000,
                "status-base": (status_base - status) * 1000,
                "outputs": (outputs - status_base) * 1000,
                "outputs-base": (done - outputs) * 1000,
            }

        samples: dict[str, list[float]] = {
            k: [] for k in ("status", "status-base", "outputs", "outputs-base")
        }
        failures: list[str] = []
        for n in range(args.requests):
            client, day = rng.choice(clients), rng.choice(dates)
            try:
                timings = one(client, day)
            except OSError as error:  # a 5xx (the function timed out) or a dropped connection
                failures.append(f"{client} {day}: {error}")
                continue
            for key, value in timings.items():
                samples[key].append(value)
            if (n + 1) % 100 == 0:
                print(f"  {n + 1} requests", flush=True)
        conn.close()
        print(f"{args.requests} requests per route, {args.clients} clients x {args.dates} dates")
        header = ("p50 ms", "p95 ms", "base p50", "base p95", "p50 ratio")
        print(f"{'route':10} " + " ".join(f"{h:>9}" for h in header))
        ok = True
        for route in ("status", "outputs"):
            p50, p95 = percentile(samples[route], 0.5), percentile(samples[route], 0.95)
            b50 = statistics.median(samples[f"{route}-base"])
            b95 = percentile(samples[f"{route}-base"], 0.95)
            row = (p50, p95, b50, b95, p50 / b50)
            print(f"{route:10} " + " ".join(f"{v:9.1f}" for v in row))
            ok = ok and p95 < 300
        for failure in failures:
            print("failed:", failure)
        ok = ok and not failures
        print("target p95 < 300 ms:", "met" if ok else "MISSED", f"({len(failures)} failed)")
        return 0 if ok else 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
