"""Lake tier benchmarks on a fresh detached local stack (issue 14):

    .venv/bin/python bench/bench_lake.py                  # 1M-row export, 10 clients x 30 dates
    .venv/bin/python bench/bench_lake.py --clients 0      # the export part only

1. Export of one 1,000,000-row transactions input (loaded by `dataharvest run` with the
   exporter disabled, so the export is measured alone): `export_slice` of raw.transactions
   in a fresh process, cold then warm, best of `--repeat` (COPY -> Arrow -> Parquet zstd on
   the local S3 endpoint -> Iceberg commit), against `pyarrow.parquet.write_table` of the
   same rows from an in-memory Arrow table to the same bucket, zstd, in another fresh process
   of the same run (best of `--repeat`). Seconds, rows/s, the ratio, the peak RSS of each
   process (ru_maxrss) and the bytes on S3 against the CSV's; and the read alone (the slice
   streamed into Arrow batches, nothing written), the floor of any export that streams its
   rows out of PostgreSQL.
2. Query: deposits per client over 30 dates x 10 clients (each date a transactions file of
   `--rows-per-date` rows, uploaded and exported through the whole choreography), by
   `dataharvest query` (the CLI process, wall time) and by the same SQL on PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from bench_persistence import DATA, generate

CLI = [sys.executable, "-m", "dataharvest_local.cli"]
HOME = DATA / "lake"
DAY = date(2024, 1, 2)
QUERY = (
    "SELECT client_id, sum(amount) AS deposits FROM raw.transactions "
    "WHERE keyword = 'DEPOSIT' AND business_date BETWEEN '{first}' AND '{last}' "
    "GROUP BY client_id ORDER BY client_id"
)


def cli(*args: str, quiet: bool = True) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [*CLI, *args],
        check=True,
        env={**os.environ, "DATAHARVEST_HOME": str(HOME)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if quiet else None,
        text=True,
    )
    return time.perf_counter() - started, done.stdout


def stack_environment() -> dict[str, str]:
    from dataharvest_local.stack import StackInfo

    info = StackInfo(**json.loads((HOME / "stack.json").read_text()))
    return {**info.client_environment(), "DATAHARVEST_HOME": str(HOME)}


def _export_child(client: str, repeat: int, queue: multiprocessing.Queue) -> None:
    from dataharvest.lake.export import export_slice
    from dataharvest.lake.location import read_lake_location

    lake = read_lake_location()
    seconds: dict[str, list[float]] = {"cold": [], "warm": [], "read": [], "unchanged": []}
    with psycopg.connect(lake.database_url) as conn:
        # The first export of a process also opens the catalog and imports pyiceberg's FileIO
        # (a cold start's cost); the next ones are what a warm function pays per export, like
        # the baseline, which opens the catalog before its clock starts.
        for run in ["cold"] + ["warm"] * repeat:
            started = time.perf_counter()
            rows = export_slice(
                conn,
                lake,
                client,
                DAY,
                lambda: True,
                {"bench": run},
                ("raw.transactions",),
                force=True,  # the same slice each time: written each time
            )
            seconds[run].append(time.perf_counter() - started)
        # What the exporter's runs started by other changes of the date pay for this slice:
        # its load has not changed since the last commit, so nothing is written.
        for _ in range(repeat):
            started = time.perf_counter()
            unchanged = export_slice(
                conn, lake, client, DAY, lambda: True, {"bench": "unchanged"}, ("raw.transactions",)
            )
            assert unchanged == 0, unchanged
            seconds["unchanged"].append(time.perf_counter() - started)
        # The read alone (COPY -> Arrow batches, nothing written): the part of the export the
        # baseline does not do, and the floor of any export that streams out of PostgreSQL.
        from dataharvest.lake import stream, tables

        table = tables.describe(conn, "raw.transactions")
        for _ in range(repeat):
            started = time.perf_counter()
            for _ in stream.slice_batches(conn, table, client, DAY):
                pass
            seconds["read"].append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((rows, seconds, peak))


def _write_table_child(client: str, repeat: int, queue: multiprocessing.Queue) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dataharvest.lake import catalog, stream, tables
    from dataharvest.lake.location import read_lake_location

    lake = read_lake_location()
    with psycopg.connect(lake.database_url) as conn:
        table = tables.describe(conn, "raw.transactions")
        arrow = pa.Table.from_batches(
            list(stream.slice_batches(conn, table, client, DAY)), table.arrow_schema
        )
    iceberg = catalog.load(lake, "raw.transactions")
    path = f"{iceberg.location()}/bench/write_table-{client}.parquet"
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        with iceberg.io.new_output(path).create(overwrite=True) as out:
            pq.write_table(arrow, out, compression="zstd")
        seconds.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((arrow.num_rows, seconds, peak))


def in_child(target, client: str, repeat: int) -> tuple:
    queue: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
    process = multiprocessing.get_context("spawn").Process(
        target=target, args=(client, repeat, queue)
    )
    process.start()
    result = queue.get()
    process.join()
    return result


def export_part(rows: int, repeat: int) -> None:
    path = generate(rows)
    client = f"lake-{int(time.time())}"
    folder = path.parent / f"lake-run-{path.stem}"
    folder.mkdir(exist_ok=True)
    link = folder / f"transactions_{DAY:%Y%m%d}.csv"
    if not link.exists():
        link.symlink_to(path)
    cli("transformers", "disable", "lake_exporter")
    cli("run", str(folder), "--client", client)
    cli("transformers", "enable", "lake_exporter", "--no-backfill")
    os.environ.update(stack_environment())
    exported, runs, export_rss = in_child(_export_child, client, repeat)
    written, write_runs, write_rss = in_child(_write_table_child, client, repeat)
    cold_s, export_s, read_s, write_s = (
        runs["cold"][0],
        min(runs["warm"]),
        min(runs["read"]),
        min(write_runs),
    )
    assert exported == written == rows, (exported, written, rows)
    from pyiceberg.expressions import EqualTo

    from dataharvest.lake import catalog
    from dataharvest.lake.location import read_lake_location

    table = catalog.open_catalog(read_lake_location()).load_table(
        catalog.identifier(read_lake_location(), "raw.transactions")
    )
    files = [
        f for f in table.inspect.files().to_pylist() if f"client_id={client}" in f["file_path"]
    ]
    on_s3 = sum(f["file_size_in_bytes"] for f in files)
    assert table.scan(row_filter=EqualTo("client_id", client)).to_arrow().num_rows == rows
    csv_bytes = path.stat().st_size
    print(f"1. export of one {rows:,}-row transactions input")
    print(
        f"  export_slice, cold  {cold_s:6.2f} s  {rows / cold_s:>10,.0f} rows/s  "
        "(first in its process: catalog opened, FileIO imported)"
    )
    print(
        f"  export_slice, warm  {export_s:6.2f} s  {rows / export_s:>10,.0f} rows/s  "
        f"peak RSS {export_rss:5.0f} MB (all runs; best of {repeat})"
    )
    print(
        f"  pq.write_table      {write_s:6.2f} s  {rows / write_s:>10,.0f} rows/s  "
        f"peak RSS {write_rss:5.0f} MB (table in memory; best of {repeat})"
    )
    print(
        f"  read only           {read_s:6.2f} s  {rows / read_s:>10,.0f} rows/s  "
        "(COPY -> Arrow batches, no Parquet: the floor of a streamed export)"
    )
    print(
        f"  unchanged slice     {min(runs['unchanged']):6.3f} s  (a run started by another input "
        "or output: the load id matches the last commit, nothing written)"
    )
    print(
        f"  ratio (write_table s / export s) warm {write_s / export_s:.2f}, "
        f"cold {write_s / cold_s:.2f}   target >= 0.5"
    )
    print(
        "  all runs (s): export warm "
        + ", ".join(f"{x:.2f}" for x in runs["warm"])
        + "; write_table "
        + ", ".join(f"{x:.2f}" for x in write_runs)
        + "; read only "
        + ", ".join(f"{x:.2f}" for x in runs["read"])
    )
    print(
        f"  on S3 {on_s3 / 1e6:.1f} MB in {len(files)} file(s) vs CSV {csv_bytes / 1e6:.1f} MB "
        f"({on_s3 / csv_bytes:.0%})"
    )


def query_part(clients: int, dates: int, rows_per_date: int) -> None:
    path = generate(rows_per_date)
    days = [DAY + timedelta(days=i) for i in range(dates)]
    folder = path.parent / f"lake-dates-{rows_per_date}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for day in days:
        (folder / f"transactions_{day:%Y%m%d}.csv").symlink_to(path)
    stamp = int(time.time())
    started = time.perf_counter()
    for i in range(clients):
        cli("run", str(folder), "--client", f"q{stamp}-{i:02d}")
    loaded = time.perf_counter() - started
    sql = QUERY.format(first=days[0], last=days[-1]).replace(
        "GROUP BY", f"AND client_id LIKE 'q{stamp}-%' GROUP BY"
    )
    lake_runs = [cli("query", sql, "--format", "csv") for _ in range(3)]
    from dataharvest.lake.location import read_lake_location
    from dataharvest_local.lake_query import run_query

    os.environ.update(stack_environment())
    in_process = []
    for _ in range(3):
        began = time.perf_counter()
        run_query(sql, read_lake_location())
        in_process.append(time.perf_counter() - began)
    url = json.loads((HOME / "stack.json").read_text())["database_url"]
    pg_runs = []
    with psycopg.connect(url) as conn:
        for _ in range(3):
            began = time.perf_counter()
            pg_rows = conn.execute(sql).fetchall()
            pg_runs.append(time.perf_counter() - began)
    lake_lines = lake_runs[0][1].strip().splitlines()[1:]
    assert len(lake_lines) == clients == len(pg_rows)
    for line, (client, deposits) in zip(lake_lines, pg_rows, strict=True):
        lake_client, lake_deposits = line.split(",")
        assert lake_client == client and lake_deposits == format(deposits.normalize(), "f")
    lake_best = min(s for s, _ in lake_runs)
    print(
        f"2. deposits per client over {dates} dates x {clients} clients "
        f"({clients * dates * rows_per_date:,} rows; loaded and exported in {loaded:.0f} s)"
    )
    print(
        f"  dataharvest query (CLI process)  {lake_best:6.2f} s "
        f"(runs: {', '.join(f'{s:.2f}' for s, _ in lake_runs)})"
    )
    print(
        f"  run_query in-process (DuckDB)    {min(in_process):6.2f} s "
        f"(runs: {', '.join(f'{s:.2f}' for s in in_process)})"
    )
    print(
        f"  PostgreSQL, same SQL             {min(pg_runs):6.3f} s "
        f"(runs: {', '.join(f'{s:.3f}' for s in pg_runs)})"
    )
    print("  results equal (exact decimals)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N (warm export, baseline)")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--dates", type=int, default=30)
    parser.add_argument("--rows-per-date", type=int, default=1000)
    args = parser.parse_args()
    shutil.rmtree(HOME, ignore_errors=True)
    cli("up", "--detach")
    try:
        if args.rows:
            export_part(args.rows, args.repeat)
        if args.clients:
            query_part(args.clients, args.dates, args.rows_per_date)
    finally:
        cli("down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
