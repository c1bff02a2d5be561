"""Kinesis event-source mapping: deliver a Kinesis data stream's records to a function the way
AWS Lambda does, like StreamMapping does for DynamoDB streams (per-shard order, batchSize,
retries up to maximumRetryAttempts, bisectBatchOnFunctionError, partial batch responses with
the sequence number as itemIdentifier, and the on-failure destination with KinesisBatchInfo).
"""

from __future__ import annotations

import base64
import time
from datetime import datetime
from typing import Any

from dataharvest_local.mappings import SHARD_REFRESH_S, Failure, StreamMapping
from dataharvest_local.slsconfig import LOCAL_ACCOUNT_ID


class KinesisMapping(StreamMapping):
    """`streams` is a boto3 Kinesis client here."""

    @property
    def stream_name(self) -> str:
        return self.stream_arn.split("/", 1)[1]

    @staticmethod
    def sequence_number(record: dict[str, Any]) -> str:
        return record["kinesis"]["sequenceNumber"]

    def _shard_iterators(self) -> dict[str, str]:
        if self.iterators and time.monotonic() - self.shards_checked_at < SHARD_REFRESH_S:
            return self.iterators
        self.shards_checked_at = time.monotonic()
        shards = self.streams.list_shards(StreamName=self.stream_name)["Shards"]
        for shard in shards:
            if shard["ShardId"] not in self.iterators:
                self.iterators[shard["ShardId"]] = self.streams.get_shard_iterator(
                    StreamName=self.stream_name,
                    ShardId=shard["ShardId"],
                    ShardIteratorType=self.starting_position,
                )["ShardIterator"]
        return self.iterators

    def _event_record(self, shard_id: str, record: dict[str, Any]) -> dict[str, Any]:
        arrival = record.get("ApproximateArrivalTimestamp")
        region = self.stream_arn.split(":")[3]
        return {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": record["PartitionKey"],
                "sequenceNumber": record["SequenceNumber"],
                "data": base64.b64encode(record["Data"]).decode(),
                "approximateArrivalTimestamp": (
                    arrival.timestamp() if isinstance(arrival, datetime) else arrival
                ),
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"{shard_id}:{record['SequenceNumber']}",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": f"arn:aws:iam::{LOCAL_ACCOUNT_ID}:role/local",
            "awsRegion": region,
            "eventSourceARN": self.stream_arn,
        }

    def poll_once(self) -> bool:
        busy = False
        for shard_id, iterator in list(self._shard_iterators().items()):
            response = self.streams.get_records(ShardIterator=iterator, Limit=10_000)
            self.iterators[shard_id] = response["NextShardIterator"]
            records = response.get("Records", [])
            if not records:
                continue
            busy = True
            wanted = [
                r
                for r in (self._event_record(shard_id, record) for record in records)
                if self._passes_filters(r)
            ]
            for start in range(0, len(wanted), self.batch_size):
                self._deliver(shard_id, wanted[start : start + self.batch_size])
        return busy

    def _report(self, record: dict[str, Any], attempt: int, error: str) -> None:
        self.activity.failed(
            Failure(
                function=self.worker.spec.name,
                source=self.name,
                message_id=self.sequence_number(record),
                key="kinesis record " + record["kinesis"]["partitionKey"],
                attempt=attempt + 1,
                max_attempts=self.max_retry_attempts + 1,
                error=error,
                retry_at=time.time() + 0.2,
                crashed=False,
            )
        )

    BATCH_INFO = "KinesisBatchInfo"

    @staticmethod
    def arrival_time(record: dict[str, Any]) -> Any:
        return record["kinesis"].get("approximateArrivalTimestamp")
