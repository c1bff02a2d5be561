"""The two error families of persistence, decided once (STYLE.md practice 6).

Data problems are values, never exceptions that leave this package: a bad row becomes a
rejection record and a bad file a whole-file rejection, and the SQS record succeeds. Everything
else (PostgreSQL, S3, DynamoDB unavailable or failing) propagates unchanged, fails that record
of the batch and is retried, finally dead-lettered.
"""

from __future__ import annotations


class FileRejected(Exception):
    """The file as a whole is unusable; nothing of it is loaded.

    Raised and caught inside the load use case only, to leave the staging work at once.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class UnroutableKey(Exception):
    """The object key does not follow `{client_id}/{entity}_{YYYYMMDD}.csv[.gz]`."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key!r}: {reason}")
        self.key = key
        self.reason = reason
