"""Transformer benchmark: one client and business date with 100,000 portfolios and 1,000,000
transactions, through the real choreography, then each transformer against its bare SQL.

    .venv/bin/python bench/bench_transformers.py [--portfolios 100000]
        [--transactions 1000000] [--repeat 3] [--e2e-portfolios 200 --e2e-transactions 2000]
    .venv/bin/python bench/bench_transformers.py --drop-only   # the full-drop figure alone

Starts its own local stack with every service (embedded PostgreSQL + moto, state in a temporary
folder) and generates the four files of a drop (one portfolio in five shares an account,
~1% orphans on each side). Then:

1. End to end to the result queue, on a small drop (`--e2e-*`, its own client): upload the
   four files, wait until quiet; the time from the last upload to the last message sent to
   the result queue (`published_at` of the publisher's last chunk: the clock right after its
   last SendMessageBatch), and the queue's count.
2. The same on the full drop, every service: last upload -> last message on the result queue,
   with when each file was persisted, when each transformer was last done, and the
   publisher's compute and send times. The queue's message count must equal the messages
   marked published. (moto's FIFO queue needs dataharvest_local.aws's patch for this: without
   it each send costs time proportional to the messages held.)
3. Per transformer on the full drop, `--repeat` times each, alternating: the bare SQL it
   executes (DELETE of its previous output + its statements, in one transaction) and a run
   through the transformer runtime (`runtime.run` with a replay work message: metastore check,
   lock, idempotency check, the same SQL, audit row, stale check, conditional flag write).
   Medians and their ratio. The publisher is run with its after-commit send left out, like its
   bare statement.

`--drop-only` measures just the full-drop figure of issue 11: the baseline first, on the quiet
new stack (a bare COPY of the four files into tables of their columns + one set-based summary
statement), then the drop, from its first upload until every summary transformer has succeeded
on the drop's current versions (the publisher and lake exporter keep running; nothing waits
for them), and stops. Without it the figure is printed after part 2, once the publisher has
sent everything, which did not happen within minutes on the shared machine (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from functools import partial
from pathlib import Path

CLIENT = "bench-client"
E2E_CLIENT = "bench-e2e"
DAY = "20240102"
KEYWORDS = ("DEPOSIT", "TAX", "WITHDRAWAL", "FEE")


def generate(folder: Path, portfolios: int, transactions: int) -> dict[str, Path]:
    rng = random.Random(11)
    clients = max(1, portfolios // 5)
    accounts = max(1, portfolios * 4 // 5)  # so about one portfolio in five shares an account
    files = {}

    def write(entity: str, header: str, lines) -> None:
        path = folder / f"{entity}_{DAY}.csv"
        with open(path, "w") as out:
            out.write(header)
            out.writelines(lines)
        files[entity] = path

    write(
        "clients",
        "record_id,first_name,last_name,client_reference,tax_free_allowance\n",
        (
            f"{i},First{i},Last{i},C{i:07d},{rng.randrange(0, 200000) / 100:.2f}\n"
            for i in range(1, clients + 1)
        ),
    )
    # About 1% of portfolios name a client or an account that is not in its file.
    write(
        "portfolios",
        "record_id,account_number,portfolio_reference,client_reference,agent_code\n",
        (
            f"{i},{(i % accounts) + 1 if i % 200 else accounts + i},P{i:08d},"
            f"C{(i % clients) + 1 if i % 199 else clients + i:07d},AG{i % 17}\n"
            for i in range(1, portfolios + 1)
        ),
    )
    write(
        "accounts",
        "record_id,account_number,cash_balance,currency,taxes_paid\n",
        (
            f"{i},{i},{rng.randrange(-(10**7), 10**8) / 100:.2f},EUR,"
            f"{rng.randrange(0, 10**6) / 100:.2f}\n"
            for i in range(1, accounts + 1)
        ),
    )
    # About 1% of transactions are on an account that is not in the accounts file.
    write(
        "transactions",
        "record_id,account_number,transaction_reference,amount,keyword\n",
        (
            f"{i},{rng.randrange(1, accounts * 101 // 100 + 2)},TX{i:010d},"
            f"{rng.randrange(-(10**6), 10**7) / 100:.2f},{KEYWORDS[i % 4]}\n"
            for i in range(1, transactions + 1)
        ),
    )
    return files


def seconds(fn: Callable[[], None]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def upload(stack, client_id: str, files: dict[str, Path]) -> tuple[float, float]:
    """Upload a drop; returns the wall-clock times of the first and the last upload."""
    import boto3

    s3 = boto3.client("s3")
    bucket = stack.info.export("LandingBucketName")
    first = time.time()
    for entity in ("clients", "portfolios", "accounts", "transactions"):
        s3.upload_file(str(files[entity]), bucket, f"{client_id}/{files[entity].name}")
    return first, time.time()


SUMMARY_TRANSFORMERS = (
    "relationship_transformer",
    "sum_deposit_transformer",
    "transaction_transformer",
    "tax_transformer",
)
BARE_COLUMNS = {
    "clients": "record_id bigint, first_name text, last_name text, client_reference text, "
    "tax_free_allowance numeric",
    "portfolios": "record_id bigint, account_number bigint, portfolio_reference text, "
    "client_reference text, agent_code text",
    "accounts": "record_id bigint, account_number bigint, cash_balance numeric, currency text, "
    "taxes_paid numeric",
    "transactions": "record_id bigint, account_number bigint, transaction_reference text, "
    "amount numeric, keyword text",
}
# The portfolio summary of docs/SPEC.md §3 in one statement over the four bare tables.
BARE_SUMMARY = """
CREATE TABLE bench.summary AS
SELECT p.portfolio_reference, p.client_reference, p.account_number, a.cash_balance,
       count(t.transaction_reference) AS number_of_transactions,
       coalesce(sum(t.amount) FILTER (WHERE upper(t.keyword) = 'DEPOSIT'), 0) AS sum_of_deposits
FROM bench.portfolios p
JOIN bench.clients c USING (client_reference)
JOIN bench.accounts a USING (account_number)
LEFT JOIN bench.transactions t USING (account_number)
GROUP BY 1, 2, 3, 4
"""


def bare_drop(database_url: str, files: dict[str, Path]) -> float:
    """The physical limit of a drop: COPY the four files into tables of their columns (no
    keys, no indexes) and compute the portfolio summary in one statement; seconds."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS bench CASCADE; CREATE SCHEMA bench")
        for entity, columns in BARE_COLUMNS.items():
            conn.execute(f"CREATE TABLE bench.{entity} ({columns})")
        conn.execute("CHECKPOINT")
        started = time.perf_counter()
        for entity in BARE_COLUMNS:
            with conn.cursor() as cur, open(files[entity], "rb") as source:
                header = source.readline().decode().strip()
                with cur.copy(f"COPY bench.{entity} ({header}) FROM STDIN (FORMAT csv)") as copy:
                    while chunk := source.read(1 << 20):
                        copy.write(chunk)
        conn.execute(BARE_SUMMARY)
        return time.perf_counter() - started


def summaries_done(database_url: str, client_id: str, timeout: float) -> float:
    """Wait until the four files are loaded and every summary transformer's last succeeded run
    read their current versions; returns the wall-clock time the last of those runs ended."""
    import psycopg

    deadline = time.time() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.time() < deadline:
            current = dict(
                conn.execute(
                    "SELECT entity, source_version FROM audit.file_loads "
                    "WHERE client_id = %s AND is_current AND status = 'loaded'",
                    (client_id,),
                ).fetchall()
            )
            latest = conn.execute(
                "SELECT DISTINCT ON (transformer) transformer, input_versions, "
                "extract(epoch FROM finished_at) FROM audit.transformer_runs "
                "WHERE client_id = %s AND outcome = 'succeeded' AND transformer = ANY(%s) "
                "ORDER BY transformer, finished_at DESC",
                (client_id, list(SUMMARY_TRANSFORMERS)),
            ).fetchall()
            if covers_drop(current, latest):
                return max(float(at) for _, _, at in latest)
            time.sleep(0.2)
    raise TimeoutError("the summary transformers did not finish the drop")


def covers_drop(current: dict[str, str], latest: list[tuple]) -> bool:
    """Whether every summary transformer's last succeeded run read the drop's current file
    versions (and tax_transformer, which reads only relationship's output, its last one)."""
    if len(current) != 4 or len(latest) != len(SUMMARY_TRANSFORMERS):
        return False
    files = {f"{entity.removesuffix('s')}_version": v for entity, v in current.items()}
    inputs = {name: versions for name, versions, _ in latest}
    links = inputs["sum_deposit_transformer"].get("relationship_transformer_version")
    return all(
        versions.get(name, version) == version
        for versions in inputs.values()
        for name, version in files.items()
    ) and all(
        versions.get("relationship_transformer_version", links) == links
        for versions in inputs.values()
    )


def drop_only(stack, files: dict[str, Path]) -> None:
    """The full-drop figure alone: baseline first on the quiet stack, then the drop."""
    bare = bare_drop(stack.info.database_url, files)
    first_upload, last_upload = upload(stack, CLIENT, files)
    done = summaries_done(stack.info.database_url, CLIENT, 3600)
    drop_seconds = done - first_upload
    print(
        f"full drop: uploads took {last_upload - first_upload:.1f} s; first upload -> last "
        f"summary transformer done: {drop_seconds:.1f} s; baseline (bare COPY of the four "
        f"files + one summary statement, same server, before the drop): {bare:.1f} s; "
        f"ratio {bare / drop_seconds:.2f}"
    )


def runs(conn, client_id: str) -> list[tuple]:
    return conn.execute(
        "SELECT transformer, count(*) FILTER (WHERE outcome = 'succeeded'), "
        "max(duration_ms) FILTER (WHERE outcome = 'succeeded') "
        "FROM audit.transformer_runs WHERE client_id = %s GROUP BY 1 ORDER BY 1",
        (client_id,),
    ).fetchall()


def result_queue_count(stack) -> int:
    import boto3

    return int(
        boto3.client("sqs").get_queue_attributes(
            QueueUrl=stack.info.export("ResultQueueUrl"),
            AttributeNames=["ApproximateNumberOfMessages"],
        )["Attributes"]["ApproximateNumberOfMessages"]
    )


def end_to_end_to_queue(stack, files: dict[str, Path]) -> None:
    import psycopg

    _, last_upload = upload(stack, E2E_CLIENT, files)
    assert stack.runner.wait_quiet(3600), stack.runner.status()
    with psycopg.connect(stack.info.database_url) as conn:
        count, last_sent = conn.execute(
            "SELECT count(*), extract(epoch FROM max(published_at)) FROM etl.partner_messages "
            "WHERE client_id = %s AND published_at IS NOT NULL",
            (E2E_CLIENT,),
        ).fetchone()
        transformer_runs = runs(conn, E2E_CLIENT)
    queued = result_queue_count(stack)
    assert queued == count, (queued, count)
    print("1. end to end to the result queue (small drop)")
    print(
        f"  last upload -> last message on the result queue: {float(last_sent) - last_upload:.1f} s"
    )
    print(f"  messages on the result queue: {queued:,}")
    for name, succeeded, duration in transformer_runs:
        print(f"  {name}: {succeeded} succeeded run(s), longest {duration / 1000:.2f} s")


def end_to_end_full(stack, files: dict[str, Path]) -> None:
    """The full drop through every service, publisher included, with where the time went."""
    import psycopg

    from dataharvest.transformers import publisher

    first_upload, last_upload = upload(stack, CLIENT, files)
    assert stack.runner.wait_quiet(3600), stack.runner.status()
    with psycopg.connect(stack.info.database_url) as conn:
        loads = conn.execute(
            "SELECT entity, extract(epoch FROM finished_at), rows_loaded FROM audit.file_loads "
            "WHERE client_id = %s AND is_current ORDER BY finished_at",
            (CLIENT,),
        ).fetchall()
        finished = dict(
            conn.execute(
                "SELECT transformer, extract(epoch FROM max(finished_at)) "
                "FROM audit.transformer_runs WHERE client_id = %s AND outcome = 'succeeded' "
                "GROUP BY 1",
                (CLIENT,),
            ).fetchall()
        )
        publisher_run = conn.execute(
            "SELECT duration_ms, rows_written FROM audit.transformer_runs "
            "WHERE client_id = %s AND transformer = 'partner_publisher' "
            "AND outcome = 'succeeded' ORDER BY finished_at DESC LIMIT 1",
            (CLIENT,),
        ).fetchone()
        count, unsent, first_sent, last_sent, sent_by_last_run = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE published_at IS NULL), "
            "extract(epoch FROM min(published_at)), extract(epoch FROM max(published_at)), "
            "count(*) FILTER (WHERE published_at >= ("
            "  SELECT max(finished_at) FROM audit.transformer_runs WHERE client_id = %s"
            "  AND transformer = 'partner_publisher' AND outcome = 'succeeded')) "
            "FROM etl.partner_messages WHERE client_id = %s",
            (CLIENT, CLIENT),
        ).fetchone()
        (published_everywhere,) = conn.execute(
            "SELECT count(*) FROM etl.partner_messages WHERE published_at IS NOT NULL"
        ).fetchone()
        transformer_runs = runs(conn, CLIENT)
    # The queue holds the small drop's messages too; nothing consumes it during the bench.
    queued = result_queue_count(stack)
    assert unsent == 0 and queued == published_everywhere, (unsent, queued, published_everywhere)
    last_sent, first_sent = float(last_sent), float(first_sent)
    print("2. end to end on the full drop, every service")
    print(f"  last upload -> last message on the result queue: {last_sent - last_upload:.1f} s")
    for entity, at, rows in loads:
        print(f"    {entity:<12} persisted ({rows:,} rows) at +{float(at) - last_upload:.1f} s")
    for name in sorted(finished, key=finished.get):
        print(f"    {name:<26} last done at +{float(finished[name]) - last_upload:.1f} s")
    send_seconds = last_sent - float(finished["partner_publisher"])
    rate = sent_by_last_run / max(send_seconds, 1e-9)
    print(
        f"    publisher's last run: computed {publisher_run[1]:,} messages in "
        f"{publisher_run[0] / 1000:.1f} s, sent the {sent_by_last_run:,} not sent before in "
        f"{send_seconds:.1f} s ({rate:,.0f} messages/s); the drop's first chunk of "
        f"{publisher.SEND_CHUNK:,} was sent at +{first_sent - last_upload:.1f} s"
    )
    print(f"  messages of this drop: {count:,}; on the result queue in all: {queued:,}")
    summaries_done = max(float(finished[name]) for name in SUMMARY_TRANSFORMERS)
    drop_seconds = summaries_done - first_upload
    bare = bare_drop(stack.info.database_url, files)
    print(
        f"  first upload -> last summary transformer done: {drop_seconds:.1f} s; baseline "
        f"(bare COPY of the four files + one summary statement, same server): {bare:.1f} s; "
        f"ratio {bare / drop_seconds:.2f}"
    )
    sample = min(count, 20_000)
    bare = bare_send_rate(stack, sample)
    print(
        f"  baseline: bare SendMessageBatch of {sample:,} of these messages, "
        f"{publisher.SEND_CONCURRENCY} in flight, from a process of its own: {bare:,.0f} "
        f"messages/s; publisher's send rate / baseline: {rate / bare:.2f}"
    )
    for name, succeeded, duration in transformer_runs:
        print(f"  {name}: {succeeded} succeeded run(s), longest {duration / 1000:.2f} s")


def bare_send(queue_url: str, client_id: str, count: int, concurrency: int) -> None:
    """Baseline, run in a process of its own (like a function instance): the first `count` of
    the drop's messages sent to `queue_url` with plain boto3 SendMessageBatch calls,
    `concurrency` at a time, no database work in the timed part. Prints messages per second."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    import psycopg

    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        rows = conn.execute(
            "SELECT message_type, message_group_id, deduplication_id, body::text "
            "FROM etl.partner_messages WHERE client_id = %s "
            "ORDER BY message_type, deduplication_id LIMIT %s",
            (client_id, count),
        ).fetchall()
    attributes = {"client_id": {"DataType": "String", "StringValue": client_id}}
    batches = [
        [
            {
                "Id": str(i),
                "MessageBody": body,
                "MessageGroupId": group,
                "MessageDeduplicationId": dedup,
                "MessageAttributes": {
                    **attributes,
                    "message_type": {"DataType": "String", "StringValue": kind},
                },
            }
            for i, (kind, group, dedup, body) in enumerate(rows[start : start + 10])
        ]
        for start in range(0, len(rows), 10)
    ]
    sqs = boto3.client("sqs")
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for response in pool.map(
            lambda entries: sqs.send_message_batch(QueueUrl=queue_url, Entries=entries), batches
        ):
            assert not response.get("Failed"), response["Failed"]
    print(len(rows) / (time.perf_counter() - started))


def bare_send_rate(stack, count: int) -> float:
    """Messages per second of the bare-send baseline against a fresh FIFO queue of the same
    endpoint, while the stack runs as it did for the publisher."""
    import subprocess

    import boto3

    from dataharvest.transformers import publisher

    queue_url = boto3.client("sqs").create_queue(
        QueueName=f"bench-bare-send-{uuid.uuid4().hex[:8]}.fifo",
        Attributes={"FifoQueue": "true"},
    )["QueueUrl"]
    command = [sys.executable, __file__, "--bare-send", queue_url, CLIENT, str(count)]
    output = subprocess.run(
        [*command, str(publisher.SEND_CONCURRENCY)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **stack.info.client_environment()},
    ).stdout
    return float(output.strip().splitlines()[-1])


def bare_sql(conn, module, transformer, day: date) -> None:
    """The SQL a transformer executes, alone: delete its output, then its statements."""
    from dataharvest.transformers import publisher
    from dataharvest.transformers.runtime import run_statements

    with conn.transaction():
        for table in transformer.output_tables:
            conn.execute(
                f"DELETE FROM {table} WHERE client_id = %s AND business_date = %s", (CLIENT, day)
            )
        if transformer.writes_quality_issues:
            conn.execute(
                "DELETE FROM audit.data_quality_issues WHERE client_id = %s "
                "AND business_date = %s AND transformer = %s",
                (CLIENT, day, transformer.name),
            )
        if module is publisher:
            # The statement only: its settled check reads the metastore, which is runtime work.
            conn.execute(publisher.MESSAGES, {"client_id": CLIENT, "business_date": day})
        else:
            run_statements(conn, transformer.statements, CLIENT, day)


def through_runtime(transformer, entry) -> None:
    """One run through the transformer runtime, forced by a replay id."""
    from dataharvest import metastore
    from dataharvest.due import watched_versions
    from dataharvest.transformers import runtime
    from dataharvest.work import WorkMessage

    item = metastore.get_item(CLIENT, DAY)
    message = WorkMessage(
        client_id=CLIENT,
        business_date=DAY,
        transformer=transformer.name,
        action="APPLY",
        input_versions=watched_versions(entry, item),
        replay=uuid.uuid4().hex,
    )
    result = runtime.run(transformer, message)
    assert result.outcome == "succeeded", result


def per_transformer(stack, repeat: int) -> None:
    import psycopg

    from dataharvest import registry
    from dataharvest.transformers import deposits, publisher, relationships, tax, transactions

    day = date(int(DAY[:4]), int(DAY[4:6]), int(DAY[6:]))
    print(f"3. per transformer: median of {repeat}, bare SQL vs runtime.run (same SQL)")
    with psycopg.connect(stack.info.database_url, autocommit=True) as conn:
        for module in (relationships, deposits, transactions, tax, publisher):
            transformer = replace(module.TRANSFORMER, after_commit=None)
            entry = registry.get(transformer.name)
            bare_times, runtime_times = [], []
            for _ in range(repeat):
                bare_times.append(seconds(partial(bare_sql, conn, module, transformer, day)))
                runtime_times.append(seconds(partial(through_runtime, transformer, entry)))
            b, r = statistics.median(bare_times), statistics.median(runtime_times)
            print(
                f"  {transformer.name:<26} bare {b:7.2f} s   runtime {r:7.2f} s   ratio {r / b:.2f}"
            )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--portfolios", type=int, default=100_000)
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--e2e-portfolios", type=int, default=200)
    parser.add_argument("--e2e-transactions", type=int, default=2_000)
    parser.add_argument("--drop-only", action="store_true", help="the full-drop figure alone")
    parser.add_argument("--bare-send", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_send:
        queue_url, client_id, count, concurrency = args.bare_send
        bare_send(queue_url, client_id, int(count), int(concurrency))
        return 0

    from dataharvest import config, metastore
    from dataharvest_local.stack import LocalStack

    home = Path(tempfile.mkdtemp(prefix="bench-transformers-"))
    started = time.perf_counter()
    (home / "small").mkdir()
    (home / "full").mkdir()
    small = generate(home / "small", args.e2e_portfolios, args.e2e_transactions)
    full = generate(home / "full", args.portfolios, args.transactions)
    print(
        f"generated {args.portfolios:,} portfolios, {args.transactions:,} transactions "
        f"(and the small drop) in {time.perf_counter() - started:.1f} s"
    )
    stack = LocalStack(home)
    info = stack.start()
    os.environ.update(info.client_environment())
    os.environ["DATAHARVEST_HOME"] = str(home)
    config.environment.cache_clear()
    metastore.table.cache_clear()
    try:
        if args.drop_only:
            drop_only(stack, full)
            return 0
        end_to_end_to_queue(stack, small)
        end_to_end_full(stack, full)
        per_transformer(stack, args.repeat)
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
