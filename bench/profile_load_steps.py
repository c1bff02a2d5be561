"""Where a persistence load's time goes: `load_upload` in this process on a 1M-row transactions
file, each step timed, alternating with the baseline (a bare COPY of the same file into a table
of its columns, no keys, no indexes, same server, same run).

    PYTHONPATH=$PWD/shared:$PWD/tools .venv/bin/python bench/profile_load_steps.py [--loads 4]

Starts its own local stack (embedded PostgreSQL + moto, no services) under bench/.data/steps.
The step timers wrap the persistence module's functions from outside (nested steps overlap:
`load_lines` holds `copy_lines`); the load itself runs unchanged.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from bench_persistence import COPY_TABLE_DDL, DATA, bare_copy, generate, upload_runs

STEPS = {
    "dataharvest.persistence.fastpath": ("load_lines", "copy_lines"),
    "dataharvest.persistence.load": ("_has_duplicates", "mark_input", "record_load"),
    "dataharvest.persistence.storage": ("finish_leaf", "swap"),
    "dataharvest.persistence.source": ("head",),
}


def timed(steps: dict[str, float]) -> None:
    import importlib

    for module_name, names in STEPS.items():
        module = importlib.import_module(module_name)
        for name in names:
            function = getattr(module, name)

            @functools.wraps(function)
            def step(*args, _function=function, _name=name, **kwargs):
                started = time.perf_counter()
                try:
                    return _function(*args, **kwargs)
                finally:
                    steps[_name] = steps.get(_name, 0.0) + time.perf_counter() - started

            setattr(module, name, step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--loads", type=int, default=4)
    args = parser.parse_args()
    import boto3

    from dataharvest_local.stack import LocalStack

    path = generate(args.rows)
    stack = LocalStack(DATA / "steps", service_files=[])
    info = stack.start()
    try:
        os.environ.update(info.client_environment())
        from dataharvest.persistence import load

        steps: dict[str, float] = {}
        timed(steps)
        bucket = os.environ["LANDING_BUCKET"]
        keys = upload_runs(
            boto3.client("s3"), bucket, path, f"steps-{int(time.time())}-", args.loads
        )
        with psycopg.connect(info.database_url, autocommit=True) as conn:
            conn.execute(COPY_TABLE_DDL)
        for key in keys:
            base = bare_copy(info.database_url, path, "bench.copy_plain")
            with psycopg.connect(info.database_url, autocommit=True) as conn:
                conn.execute("CHECKPOINT")
            steps.clear()
            started = time.perf_counter()
            load.load_upload(bucket, key, "ObjectCreated:Put")
            total = time.perf_counter() - started
            print(
                f"bare COPY {base:.3f} s  load {total:.3f} s  ratio {base / total:.2f} | "
                + " ".join(f"{name} {seconds:.3f}" for name, seconds in steps.items()),
                flush=True,
            )
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
