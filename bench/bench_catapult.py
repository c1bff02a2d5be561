"""Catapult decision throughput with 1, 10 and 100 registered transformers.

    .venv/bin/python bench/bench_catapult.py [--records 20000] [--e2e-records 300]

1. Pure decision path: `dataharvest.catapult.decide` over generated metastore stream records,
   with the registry index catapult uses (dataharvest.due.DueIndex) and, on a tenth of the
   records, evaluating every entry. Baseline in the same run: one `filters.matches` call per
   record (the least work a decision can take); the ratio says what the edge logic costs on top.
2. End to end on the local stack: metastore updates -> stream -> catapult Lambda (runner) ->
   SQS work messages, counted on the target queue; records per second until every expected
   message arrived. Each record matches exactly one transformer, the rest filter it out.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def entries(count: int, target: str):
    from dataharvest.registry import TransformerEntry

    return [
        TransformerEntry(
            name=f"bench_{i}",
            filter_pattern={
                "dynamodb": {
                    "NewImage": {
                        f"bench_{i}_ready": {"BOOL": [True]},
                        "client_persisted": {"BOOL": [True]},
                    }
                }
            },
            target=target,
            watch=(f"bench_{i}_version",),
        )
        for i in range(count)
    ]


def records(n: int, transformers: int) -> list[dict]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        k = rng.randrange(transformers)
        old = {
            "partition_key": {"S": f"c{i % 50}"},
            "sort_key": {"S": "20240102"},
            "client_persisted": {"BOOL": True},
        }
        new = {**old, f"bench_{k}_ready": {"BOOL": True}, f"bench_{k}_version": {"S": f"v{i}"}}
        out.append(
            {
                "eventID": str(i),
                "eventName": "MODIFY",
                "dynamodb": {
                    "Keys": {"partition_key": old["partition_key"], "sort_key": old["sort_key"]},
                    "OldImage": old,
                    "NewImage": new,
                    "SequenceNumber": str(i),
                },
            }
        )
    return out


def pure(n: int) -> None:
    from dataharvest import filters
    from dataharvest.catapult.decide import decide
    from dataharvest.due import DueIndex

    print(f"pure decision path, {n} stream records")
    for count in (1, 10, 100):
        registered = entries(count, "http://localhost/q")
        recs = records(n, count)
        started = time.perf_counter()
        for rec in recs:
            filters.matches(registered[0].pattern_text, rec)
        baseline = n / (time.perf_counter() - started)
        # Every entry evaluated for every record (the rule without the index).
        started = time.perf_counter()
        every = sum(len(decide(rec, registered)) for rec in recs[: n // 10])
        every_rate = (n // 10) / (time.perf_counter() - started)
        # Catapult's path: the index is built once per registry version.
        index = DueIndex(registered)
        started = time.perf_counter()
        decided = sum(len(decide(rec, index)) for rec in recs)
        rate = n / (time.perf_counter() - started)
        assert decided == n, decided
        assert every == n // 10, every
        print(
            f"  {count:>3} transformers: {rate:>10,.0f} records/s indexed, "
            f"{every_rate:>8,.0f}/s evaluating every entry "
            f"(baseline one filter match: {baseline:,.0f}/s, ratio {rate / baseline:.3f})"
        )


def end_to_end(n: int) -> None:
    import boto3

    from dataharvest import config, metastore, registry
    from dataharvest_local.stack import LocalStack

    home = Path(tempfile.mkdtemp(prefix="bench-catapult-"))
    stack = LocalStack(home, service_files=[REPO / "services/catapult/serverless.yml"])
    info = stack.start()
    os.environ.update(info.client_environment())
    config.environment.cache_clear()
    metastore.table.cache_clear()
    try:
        sqs = boto3.client("sqs")
        print(f"end to end on the local stack, {n} metastore updates")
        for count in (1, 10, 100):
            for item in registry.load_all():
                metastore.table().delete_item(
                    Key=metastore.item_key(metastore.REGISTRY_PARTITION, item.name)
                )
            url = sqs.create_queue(QueueName=f"bench-sink-{count}")["QueueUrl"]
            for entry in entries(count, url):
                registry.put(entry)
            stack.runner.wait_quiet(60)
            rng = random.Random(count)
            started = time.perf_counter()
            with metastore.table().batch_writer() as batch:
                for i in range(n):
                    k = rng.randrange(count)
                    batch.put_item(
                        Item={
                            "partition_key": f"c{count}-{i}",
                            "sort_key": "20240102",
                            "client_persisted": True,
                            f"bench_{k}_ready": True,
                            f"bench_{k}_version": "v1",
                        }
                    )
            assert stack.runner.wait_quiet(600)
            elapsed = time.perf_counter() - started
            got = int(
                sqs.get_queue_attributes(
                    QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
                )["Attributes"]["ApproximateNumberOfMessages"]
            )
            if got != n:
                sinks = {
                    q: sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["All"])["Attributes"][
                        "ApproximateNumberOfMessages"
                    ]
                    for q in sqs.list_queues(QueueNamePrefix="bench-sink")["QueueUrls"]
                }
                raise AssertionError(f"{got} of {n} work messages arrived: {sinks}")
            print(f"  {count:>3} transformers: {n / elapsed:>8,.0f} records/s end to end")
    finally:
        stack.stop()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--e2e-records", type=int, default=300)
    args = parser.parse_args()
    pure(args.records)
    end_to_end(args.e2e_records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
