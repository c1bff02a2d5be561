"""The local endpoint's DynamoDB Query, in one process: moto's own, with the partition patch,
and with the partition and serializer patches (dataharvest_local.aws).

    PYTHONPATH=$PWD/shared:$PWD/tools .venv/bin/python bench/bench_moto_query.py \\
        [--clients 1000] [--dates 30] [--repeat 20]

moto runs in this process (mock_aws, no HTTP); a metastore-like table gets one item per client
and date (14 attributes, as bench_api.py writes them), then each variant times `--repeat`
Queries of one client's partition (all its dates, Limit 100) through boto3, after one warm-up
Query. Prints milliseconds per Query.
"""

from __future__ import annotations

import argparse
import sys
import time

ENDPOINT = "https://dynamodb.eu-west-1.amazonaws.com"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--dates", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    import boto3
    from moto import mock_aws
    from moto.core import serialize
    from moto.dynamodb.models import dynamodb_backends
    from moto.dynamodb.models.table import Table

    from dataharvest_local.aws import patch_moto

    patch_moto()
    patched_query = Table.query
    patched_serializer = serialize.BaseJSONSerializer._serialize_type_structure
    with mock_aws():
        client = boto3.client(
            "dynamodb",
            region_name="eu-west-1",
            endpoint_url=ENDPOINT,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        client.create_table(
            TableName="metastore",
            KeySchema=[
                {"AttributeName": "partition_key", "KeyType": "HASH"},
                {"AttributeName": "sort_key", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "partition_key", "AttributeType": "S"},
                {"AttributeName": "sort_key", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        table = dynamodb_backends["123456789012"]["eu-west-1"].get_table("metastore")
        for c in range(1, args.clients + 1):
            for d in range(1, args.dates + 1):
                day = f"2024{(d - 1) // 28 + 1:02d}{(d - 1) % 28 + 1:02d}"
                item = {"partition_key": {"S": f"bench-{c}"}, "sort_key": {"S": day}}
                for prefix in ("client", "portfolio", "account", "transaction"):
                    item[f"{prefix}_persisted"] = {"BOOL": True}
                    item[f"{prefix}_version"] = {"S": f"v-{day}"}
                    item[f"{prefix}_rows"] = {"N": "100"}
                table.put_item(item)
        query = {
            "TableName": "metastore",
            "KeyConditionExpression": "partition_key = :p AND sort_key BETWEEN :a AND :b",
            "ExpressionAttributeValues": {
                ":p": {"S": f"bench-{max(1, args.clients // 2)}"},
                ":a": {"S": "00000000"},
                ":b": {"S": "99999999"},
            },
            "Limit": 100,
        }
        variants = {
            "moto's Query": (
                patched_query.dataharvest_original,
                patched_serializer.dataharvest_original,
            ),
            "partition patch": (patched_query, patched_serializer.dataharvest_original),
            "partition + serializer patches": (patched_query, patched_serializer),
        }
        print(
            f"{args.clients * args.dates} items, {args.dates} per partition, {args.repeat} Queries"
        )
        for name, (query_method, serializer_method) in variants.items():
            Table.query = query_method
            serialize.BaseJSONSerializer._serialize_type_structure = serializer_method
            assert len(client.query(**query)["Items"]) == min(args.dates, 100)
            started = time.perf_counter()
            for _ in range(args.repeat):
                client.query(**query)
            elapsed = (time.perf_counter() - started) / args.repeat * 1000
            print(f"{name:32} {elapsed:8.1f} ms per Query")
        Table.query = patched_query
        serialize.BaseJSONSerializer._serialize_type_structure = patched_serializer
    return 0


if __name__ == "__main__":
    sys.exit(main())
