"""Data-plane benchmarks on a running local stack (every service), through `dataharvest run`:

    .venv/bin/python bench/bench_dataplane.py                         # 1M rows, 10M in chunks
    .venv/bin/python bench/bench_dataplane.py --chunked-rows 0        # skip the 10M part

1. `dataharvest run` of one 1,000,000-row transactions file on an already running stack
   (warmed by a 1,000-row file of another client; upload, event delivery, load, metastore,
   every transformer the file starts, quiet), and once more under another client with the
   lake exporter switched off (the data plane alone), against a bare COPY of the same file
   into a table of its columns (no keys, no indexes) on the same server, same run; then a
   version replace of that input by a new 1M-row version, and its retraction
   (`dataharvest remove`).
2. A 10,000,000-row file (~420 MB) through the chunked path with 4 chunks (chunk workers 4 at
   a time) and as one chunk, each on a fresh stack: wall time of `dataharvest run`, the same
   bare COPY, and the peak RSS of every loader process (VmHWM of the persistence workers).

Generated files are kept under bench/.data/ (see bench_persistence.py for the generator).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from bench_persistence import DATA, bare_copy, generate, with_lower_case_keywords

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "dataharvest_local.cli"]
BARE_TABLE = """
CREATE SCHEMA IF NOT EXISTS bench;
DROP TABLE IF EXISTS bench.copy_plain;
CREATE TABLE bench.copy_plain (record_id bigint, account_number bigint,
    transaction_reference text, amount numeric, keyword text);
"""


def cli(home: Path, *args: str, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(
        [*CLI, *args],
        check=True,
        env={**os.environ, "DATAHARVEST_HOME": str(home), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def start(home: Path, env: dict[str, str]) -> str:
    """A fresh detached stack; returns its database URL."""
    shutil.rmtree(home, ignore_errors=True)
    cli(home, "up", "--detach", env=env)
    return json.loads((home / "stack.json").read_text())["database_url"]


def drop_folder(path: Path, name: str) -> Path:
    """A folder holding the file under the name `dataharvest run` routes."""
    folder = path.parent / f"run-{path.stem}"
    folder.mkdir(exist_ok=True)
    target = folder / name
    if not target.exists():
        target.symlink_to(path)
    return folder


def loaded(url: str, client: str) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT status, rows_loaded, rows_rejected FROM audit.file_loads "
            "WHERE client_id = %s AND is_current",
            (client,),
        ).fetchone()


def loader_peak_rss_mb() -> list[float]:
    """VmHWM of every persistence worker process (persist and persistChunk instances)."""
    peaks = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            status = (proc / "status").read_text()
        except OSError:
            continue
        try:
            cwd = (proc / "cwd").resolve()
        except OSError:
            continue
        # This repository's persistence workers only (other checkouts may run stacks too).
        if b"dataharvest_local.worker" in command and cwd == REPO / "services" / "persistence":
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
    return peaks


def one_file(rows: int) -> None:
    path = generate(rows)
    replacement = with_lower_case_keywords(path)
    home = DATA / "dataplane"
    url = start(home, {})
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(BARE_TABLE)
        client = f"run-{int(time.time())}"
        folder = str(drop_folder(path, "transactions_20240102.csv"))
        base = [bare_copy(url, path, "bench.copy_plain")]
        # An already running stack: a small file of another client first, so every worker
        # the file's choreography needs has started and served once.
        small = str(drop_folder(generate(1_000), "transactions_20240102.csv"))
        cli(home, "run", small, "--client", f"{client}-warm-up")
        base.append(bare_copy(url, path, "bench.copy_plain"))
        run = cli(home, "run", folder, "--client", client)
        base.append(bare_copy(url, path, "bench.copy_plain"))
        assert loaded(url, client) == ("loaded", rows, 0), loaded(url, client)
        # The data plane alone: the same with the lake exporter (which exports the 1M rows
        # before the stack is quiet) switched off.
        cli(home, "transformers", "disable", "lake_exporter")
        run_without_lake = cli(home, "run", folder, "--client", f"{client}-nolake")
        base.append(bare_copy(url, path, "bench.copy_plain"))
        cli(home, "transformers", "enable", "lake_exporter", "--no-backfill")
        replace = cli(
            home,
            "run",
            str(drop_folder(replacement, "transactions_20240102.csv")),
            "--client",
            client,
        )
        assert loaded(url, client) == ("loaded", rows, 0), loaded(url, client)
        retract = cli(home, "remove", "transactions_20240102.csv", "--client", client)
        assert loaded(url, client) == ("retracted", 0, 0), loaded(url, client)
        best = min(base)
        print(f"1. one {rows:,}-row file on a running stack (bare COPY {best:.2f} s)")
        print(f"  dataharvest run            {run:7.2f} s   ratio {best / run:.2f}")
        print(
            f"  the same, lake exporter off {run_without_lake:6.2f} s   "
            f"ratio {best / run_without_lake:.2f}"
        )
        print(f"  version replace (new 1M)   {replace:7.2f} s   ratio {best / replace:.2f}")
        print(f"  retraction (remove)        {retract:7.2f} s")
        print(f"  all bare COPY runs: {', '.join(f'{b:.2f}' for b in base)} s")
    finally:
        cli(home, "down")


def chunked(rows: int) -> None:
    path = generate(rows)
    size = path.stat().st_size
    home = DATA / "dataplane-chunks"
    print(f"2. one {rows:,}-row file ({size / 1e6:.0f} MB) through the chunked path")
    for chunks in (4, 1):
        env = {
            "DATAHARVEST_CHUNK_BYTES": str(size // chunks + 1 if chunks > 1 else size * 2),
            "DATAHARVEST_LOCAL_CONCURRENCY": "4",
        }
        url = start(home, env)
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(BARE_TABLE)
            client = f"chunks-{chunks}-{int(time.time())}"
            base = bare_copy(url, path, "bench.copy_plain")
            folder = drop_folder(path, "transactions_20240102.csv")
            seconds = cli(home, "run", str(folder), "--client", client, env=env)
            assert loaded(url, client) == ("loaded", rows, 0), loaded(url, client)
            peaks = loader_peak_rss_mb()
            with psycopg.connect(url) as conn:
                staged = conn.execute(
                    "SELECT count(*) FROM audit.load_chunks c JOIN audit.file_loads f "
                    "USING (load_id) WHERE f.client_id = %s",
                    (client,),
                ).fetchone()[0]
            label = f"{chunks} chunks" if chunks > 1 else "one piece"
            print(
                f"  {label:<10} run {seconds:7.1f} s ({rows / seconds:,.0f} rows/s)   bare COPY "
                f"{base:6.1f} s   ratio {base / seconds:.2f}   chunk rows in audit: {staged}   "
                f"loader peak RSS {max(peaks):.0f} MB (each: "
                f"{', '.join(f'{p:.0f}' for p in sorted(peaks))})"
            )
        finally:
            cli(home, "down")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunked-rows", type=int, default=10_000_000)
    args = parser.parse_args()
    if args.rows:
        one_file(args.rows)
    if args.chunked_rows:
        chunked(args.chunked_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
