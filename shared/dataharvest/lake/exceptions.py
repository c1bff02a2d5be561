"""Errors of the lake tier. Both are transient for the platform (the work message retries and
finally dead-letters): a schema error needs a code change, a commit conflict another attempt."""


class LakeSchemaError(RuntimeError):
    """A PostgreSQL table cannot be expressed as a lake table; the message names the column."""


class LakeCommitConflict(RuntimeError):
    """Other writers kept committing to the same Iceberg table; retried by the platform."""
