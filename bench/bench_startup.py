"""How long `dataharvest up --detach` takes until the stack answers (issue 3: < 10 s warm).

    .venv/bin/python bench/bench_startup.py [--runs 3]

The first run in a fresh DATAHARVEST_HOME includes initdb; the later ones are warm starts
(data directory present, packages imported from a warm page cache). Baseline in the same run:
a bare `python -c "import boto3, psycopg, moto.server"`, the import floor of the stack process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def timed(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if result.returncode:
        raise SystemExit(f"{' '.join(args[2:])} failed:\n{result.stderr}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="bench-startup-")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "AWS_ENDPOINT_URL")}
    env["DATAHARVEST_HOME"] = home
    cli = [sys.executable, "-m", "dataharvest.cli"]
    floor = timed([sys.executable, "-c", "import boto3, psycopg, moto.server"], env)
    print(f"import floor (boto3, psycopg, moto.server): {floor:.2f} s")
    for run in range(args.runs):
        seconds = timed([*cli, "up", "--detach"], env)
        kind = "cold (initdb)" if run == 0 else "warm"
        print(
            f"up --detach run {run + 1} ({kind}): {seconds:.2f} s "
            f"({seconds / floor:.1f}x the import floor)"
        )
        timed([*cli, "down"], env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
