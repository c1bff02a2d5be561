"""What a client of a running local stack needs to reach it (DATAHARVEST_HOME/stack.json).

A module of its own so that the CLI's commands against a running stack do not import the
stack itself (its runner, provisioner and the lake catalog: most of a command's start-up).
"""

from __future__ import annotations

from dataclasses import dataclass

LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
}


@dataclass
class StackInfo:
    """What a client needs to talk to a running stack (written to DATAHARVEST_HOME/stack.json)."""

    pid: int
    database_url: str
    endpoint_url: str
    control_url: str
    region: str
    stage: str
    exports: dict[str, str]
    api_url: str = ""  # the local Data API (dataharvest_local.api_server), when served

    def export(self, name: str) -> str:
        return self.exports[f"dataharvest-{self.stage}-{name}"]

    def client_environment(self) -> dict[str, str]:
        return {
            "LANDING_BUCKET": self.export("LandingBucketName"),
            "METASTORE_TABLE": self.export("MetastoreTableName"),
            "RESULT_QUEUE_URL": self.export("ResultQueueUrl"),
            "DATABASE_URL": self.database_url,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "DATAHARVEST_STAGE": self.stage,
            **LOCAL_CREDENTIALS,
            # The lake exporter's bucket, where that service is part of the stack.
            **({"LAKE_BUCKET": self.exports[lake]} if (lake := self._lake_export()) else {}),
            # The snapshot change stream (issue 15), where the root stack declares it.
            **(
                {"SNAPSHOT_STREAM_NAME": self.exports[stream]}
                if (stream := f"dataharvest-{self.stage}-SnapshotStreamName") in self.exports
                else {}
            ),
        }

    def _lake_export(self) -> str | None:
        name = f"dataharvest-{self.stage}-LakeBucketName"
        return name if name in self.exports else None
