"""Gzip bomb benchmark: an upload that inflates to 10 GiB, through the persistence handler.

    .venv/bin/python bench/bench_gzip_bomb.py          # 10 GiB inflated, about 26 MB stored
    .venv/bin/python bench/bench_gzip_bomb.py --max-inflation-ratio 1000 \
        --max-inflated-bytes 1073741824                # the size limit's path instead

Generates bench/.data/bomb_<n>GiB.csv.gz as it streams (a transactions header, then one CSV
line repeated, deflated at level 9 into one gzip member: about 400:1; kept for later runs),
starts its own local stack (embedded PostgreSQL + moto, no services, state under bench/.data/),
uploads the file to the landing bucket and invokes services/persistence/handler.py on its SQS
record in a fresh child process (bench_persistence.py's child). The client's inflation limits
are the defaults unless given. Prints the handler's wall time to the rejection, the child's
peak RSS (VmHWM) and the recorded reason. Target: under 5 s and under 256 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "bench" / ".data"
HEADER = b"record_id,account_number,transaction_reference,amount,keyword\n"
LINE = b"1,100,TX-ABCDEFGH,12.50,DEPOSIT\n"
BLOCK = LINE * ((8 << 20) // len(LINE))


def generate(gib: int) -> Path:
    """The bomb, compressed block by block: nothing near its inflated size is ever held."""
    path = DATA / f"bomb_{gib}GiB.csv.gz"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    with open(path.with_suffix(".tmp"), "wb") as out:
        out.write(compressor.compress(HEADER))
        for _ in range((gib << 30) // len(BLOCK)):
            out.write(compressor.compress(BLOCK))
        out.write(compressor.flush())
    path.with_suffix(".tmp").rename(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inflate-gib", type=int, default=10)
    parser.add_argument("--max-inflated-bytes", help="the client's limit (default 20 GiB)")
    parser.add_argument("--max-inflation-ratio", help="the client's bound (default 100)")
    args = parser.parse_args()

    import boto3

    from dataharvest.persistence.settings import set_inflation_limits
    from dataharvest_local.stack import LocalStack

    started = time.perf_counter()
    path = generate(args.inflate_gib)
    stored = path.stat().st_size
    inflated = len(HEADER) + ((args.inflate_gib << 30) // len(BLOCK)) * len(BLOCK)
    print(
        f"file: {path.name}, {stored / 1e6:.1f} MB stored, inflates to {inflated:,} bytes "
        f"({inflated / stored:.0f}:1; ready in {time.perf_counter() - started:.1f} s)"
    )
    stack = LocalStack(DATA / "home", service_files=[])
    info = stack.start()
    try:
        os.environ.update(info.client_environment())
        bucket = os.environ["LANDING_BUCKET"]
        client = f"bomb-{int(time.time())}"
        key = f"{client}/transactions_20240102.csv.gz"
        if args.max_inflated_bytes or args.max_inflation_ratio:
            with psycopg.connect(info.database_url, autocommit=True) as conn:
                limits = set_inflation_limits(
                    conn, client, args.max_inflated_bytes, args.max_inflation_ratio
                )
            print(f"client limits: max_inflated_bytes {limits[0]:,}, ratio {limits[1]}:1")
        boto3.client("s3").upload_file(str(path), bucket, key)
        run = subprocess.run(
            [sys.executable, str(REPO / "bench" / "bench_persistence.py"), "--child", bucket, key],
            capture_output=True,
            text=True,
            env=os.environ.copy(),
            check=True,
        )
        outcome = json.loads(run.stdout.strip().splitlines()[-1])
        assert outcome["result"] == {"batchItemFailures": []}, outcome
        with psycopg.connect(info.database_url, autocommit=True) as conn:
            status, reason, load_s = conn.execute(
                "SELECT status, reason, extract(epoch FROM finished_at - started_at)::float "
                "FROM audit.file_loads WHERE source_key = %s AND is_current",
                (key,),
            ).fetchone()
        assert status == "rejected", (status, reason)
        print(f"rejected: {reason}")
        print(
            f"handler wall time to rejection {outcome['seconds']:.2f} s (the load's transaction "
            f"{load_s:.2f} s); handler peak RSS {outcome['peak_rss_mb']:.0f} MB"
        )
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
