"""The two error families of persistence, decided once (STYLE.md practice 6).

Data problems are values, never exceptions that leave this package: a bad row becomes a
rejection record and a bad file a whole-file rejection, and the SQS record succeeds. Everything
else (PostgreSQL, S3, DynamoDB unavailable or failing) propagates unchanged, fails that record
of the batch and is retried, finally dead-lettered.
"""

from __future__ import annotations

import psycopg


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


def refused_by_database(error: psycopg.Error, unique_column: str) -> str | None:
    """The whole-file rejection reason when PostgreSQL refused what the file holds; None when
    the error is the platform's (it propagates and the delivery is retried).

    Our statements are built from the schema, never from file content, so a data exception
    (SQLSTATE class 22, e.g. a decimal of more digits than numeric holds) or a program limit
    (class 54: too many columns, a row over the page size, a key over the index's) can only
    come from the file. Connection, resource and timeout errors have other classes.
    """
    state = error.sqlstate or ""
    if state[:2] not in ("22", "54"):
        return None
    message = error.diag.message_primary or str(error).splitlines()[0]
    if message.startswith("index row size"):
        return (
            f"{unique_column}: a value is longer than the database can index ({message}); "
            "keys must be short"
        )
    if message.startswith("row is too big"):
        return f"a record is wider than the database can store ({message}); use fewer fields"
    if state == "22003":
        return f"a number is out of the range the database can store ({message})"
    return f"the database refused the file: {message} (SQLSTATE {state})"
