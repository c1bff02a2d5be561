"""How long `dataharvest up --detach` takes until the stack answers (issue 3: < 10 s warm).

    .venv/bin/python bench/bench_startup.py [--runs 3]

The first run in a fresh DATAHARVEST_HOME includes initdb; the later ones are warm starts
(data directory present, packages imported from a warm page cache). Baseline in the same run:
a bare `python -c "import boto3, psycopg, moto.server"`, the import floor of the stack process.

Then the cost of an idle stack: after the last start, the CPU time (user + system, from /proc)
of every process whose environment names this DATAHARVEST_HOME, over `--idle-seconds`, as a
share of one core. Linux only.
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


def stack_cpu_seconds(home: str) -> float:
    """CPU seconds used so far by the processes of the stack living in `home`."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                if f"DATAHARVEST_HOME={home}".encode() not in environ.read().split(b"\0"):
                    continue
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        except OSError:  # gone, or not ours to read
            continue
    return total


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="bench-startup-")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "AWS_ENDPOINT_URL")}
    env["DATAHARVEST_HOME"] = home
    cli = [sys.executable, "-m", "dataharvest_local.cli"]
    floor = timed([sys.executable, "-c", "import boto3, psycopg, moto.server"], env)
    print(f"import floor (boto3, psycopg, moto.server): {floor:.2f} s")
    for run in range(args.runs):
        seconds = timed([*cli, "up", "--detach"], env)
        kind = "cold (initdb)" if run == 0 else "warm"
        print(
            f"up --detach run {run + 1} ({kind}): {seconds:.2f} s "
            f"({seconds / floor:.1f}x the import floor)"
        )
        if run == args.runs - 1:
            time.sleep(5)  # function instances finish warming up in the background
            before = stack_cpu_seconds(home)
            time.sleep(args.idle_seconds)
            share = (stack_cpu_seconds(home) - before) / args.idle_seconds
            print(f"idle stack over {args.idle_seconds:.0f} s: {share:.1%} of one core")
        timed([*cli, "down"], env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
