"""Export the current version of a client and date to the lake: one Iceberg overwrite per table.

Invariant: each lake table holds, for a (client, date) slice, exactly the rows PostgreSQL holds
for it as of some completed export, never a mix of two. The data files of a slice are written
first (streamed out of PostgreSQL, nothing visible yet); then, if the work is still current, one
Iceberg transaction per table deletes the slice's old files and adds the new ones, so a reader
sees the old slice or the new one, and the old one stays in the snapshot history. An empty slice
is an overwrite with nothing: the slice is deleted. Runs of one slice are serialised by the
transformer runtime's lock and always read the current rows, so the last commit is the newest.
Iceberg has no multi-table transaction: for a moment table A may show the new version of a
slice and table B the old one (docs/DECISIONS.md, "Lake tier").
"""

from __future__ import annotations

import json
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from urllib.parse import quote

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.expressions import And, EqualTo
from pyiceberg.io import OutputStream
from pyiceberg.table import Table

from dataharvest.lake import catalog as lake_catalog
from dataharvest.lake import maintenance, stream, tables
from dataharvest.lake.exceptions import LakeCommitConflict
from dataharvest.lake.location import LakeLocation, read_lake_location
from dataharvest.observability import logger
from dataharvest.work import WorkMessage

# A data file is closed at this many rows and the next one started: files of a few hundred MB
# for the wide inputs, the size Athena and Trino split well.
FILE_ROWS = 4_000_000
# Batches (~8 MiB of CSV each) parsed ahead of the Parquet encoder: bounds the memory.
QUEUED_BATCHES = 2
# Commits of other slices of the same table make ours fail optimistically; they never touch
# our slice, so refreshing and committing again is safe.
COMMIT_ATTEMPTS = 8
SNAPSHOT_PREFIX = "dataharvest."
# A column is dictionary-encoded when each of its values repeats at least this often on average
# in the file's first batch (BENCHMARKS.md, "Lake tier, fourth session").
DICTIONARY_MIN_REPEATS = 10
# The snapshot property naming the rows a commit wrote (stream.slice_fingerprint).
FINGERPRINT = "slice_fingerprint"
TABLE_PROPERTIES = {
    "write.format.default": "parquet",
    "write.parquet.compression-codec": "zstd",
    # Every slice export is a commit that adds a manifest: merging them keeps a scan's
    # planning (one read per manifest) from growing with the number of exports.
    "commit.manifest-merge.enabled": "true",
    # Each commit writes a new metadata file; keep the last 100 (Iceberg's default count),
    # not every one: the history that matters is the snapshots (lake/maintenance.py).
    "write.metadata.delete-after-commit.enabled": "true",
}


@dataclass(frozen=True)
class SliceFiles:
    table: tables.LakeTable
    paths: tuple[str, ...]
    rows: int


def ensure_table(cat: Catalog, lake: LakeLocation, table: tables.LakeTable) -> Table:
    namespace, name = lake_catalog.identifier(lake, table.pg_name)
    try:
        iceberg = cat.load_table((namespace, name))
    except NoSuchTableError:
        cat.create_namespace_if_not_exists(namespace)
        return cat.create_table_if_not_exists(
            (namespace, name),
            schema=table.iceberg_schema,
            partition_spec=table.partition_spec,
            properties=TABLE_PROPERTIES,
        )
    missing = {k: v for k, v in TABLE_PROPERTIES.items() if iceberg.properties.get(k) != v}
    if missing:  # a table created before a property was added
        with iceberg.transaction() as tx:
            tx.set_properties(missing)
    return iceberg


def write_slice(
    conn: psycopg.Connection,
    iceberg: Table,
    table: tables.LakeTable,
    client_id: str,
    day: date,
    lineage: stream.Lineage | None = None,
) -> SliceFiles:
    """Stream one slice into new Parquet (zstd) data files under the table's location; they
    become part of the table only when `commit_slice` adds them.

    Parquet encoding runs in a thread of its own, so it overlaps the COPY and the CSV parsing
    of the next batches instead of following them (both release the GIL); at most
    `QUEUED_BATCHES` batches wait for it."""
    directory = (
        f"{iceberg.location()}/data/business_date_day={day.isoformat()}/"
        f"client_id={quote(client_id, safe='')}"
    )
    files = _DataFiles(iceberg, directory, table.arrow_schema)
    rows = 0
    pending: deque[Future[None]] = deque()
    encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lake-parquet")
    try:
        for batch in stream.slice_batches(conn, table, client_id, day, lineage):
            pending.append(encoder.submit(files.write, batch))
            rows += batch.num_rows
            while len(pending) > QUEUED_BATCHES:
                pending.popleft().result()  # raises what the encoder raised
        while pending:
            pending.popleft().result()
    except BaseException:
        # The batches not yet encoded are dropped, and the files written so far deleted: no
        # commit will add them.
        encoder.shutdown(wait=True, cancel_futures=True)
        try:
            files.close()
        finally:
            _discard([(iceberg, SliceFiles(table, tuple(files.paths), rows), None)])
        raise
    encoder.shutdown(wait=True)
    files.close()
    return SliceFiles(table, tuple(files.paths), rows)


class _DataFiles:
    """The data files of one slice export, written by one thread: a new file every
    `FILE_ROWS` rows, each batch one row group."""

    def __init__(self, iceberg: Table, directory: str, schema: pa.Schema):
        self._iceberg = iceberg
        self._prefix = f"{directory}/{uuid.uuid4().hex}"  # new paths every run
        self._schema = schema
        self.paths: list[str] = []
        self._writer: pq.ParquetWriter | None = None
        self._out: OutputStream | None = None
        self._in_file = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None or self._in_file >= FILE_ROWS:
            self.close()
            path = f"{self._prefix}-{len(self.paths):05d}.parquet"
            self._out = self._iceberg.io.new_output(path).create(overwrite=True)
            self._writer = pq.ParquetWriter(
                self._out,
                self._schema,
                compression="zstd",
                use_dictionary=dictionary_columns(batch),
            )
            self.paths.append(path)
            self._in_file = 0
        self._writer.write_batch(batch)
        self._in_file += batch.num_rows

    def close(self) -> None:
        if self._writer is not None and self._out is not None:
            self._writer.close()
            self._out.close()
        self._writer = self._out = None


def dictionary_columns(batch: pa.RecordBatch) -> list[str]:
    """The columns of a data file worth a dictionary, judged on its first batch: those whose
    values repeat (a slice's constant key and lineage, codes like `keyword`).

    Parquet writers dictionary-encode every column by default and fall back to plain encoding
    when the dictionary outgrows its page; for a column of unique values (references, record
    ids, amounts) that is a dictionary built and thrown away per row group. It doubled the
    encoding time of a transactions slice and made its file a third larger."""
    return [
        field.name
        for field, column in zip(batch.schema, batch.columns, strict=True)
        if pc.count_distinct(column, mode="all").as_py() * DICTIONARY_MIN_REPEATS <= batch.num_rows
    ]


def commit_slice(
    iceberg: Table, files: SliceFiles, client_id: str, day: date, properties: dict[str, str]
) -> None:
    """Replace the slice by `files` (none: delete it) in one Iceberg transaction."""
    # pyiceberg's expression classes are pydantic models whose typed signature mypy misreads.
    where = And(
        EqualTo("client_id", client_id),  # type: ignore[call-arg, arg-type]
        EqualTo("business_date", day.isoformat()),  # type: ignore[call-arg, arg-type]
    )
    props = {SNAPSHOT_PREFIX + k: v for k, v in properties.items()}
    for _ in range(COMMIT_ATTEMPTS):
        try:
            with iceberg.transaction() as tx, warnings.catch_warnings():
                # A first export has nothing to delete; pyiceberg warns about that.
                warnings.filterwarnings("ignore", "Delete operation did not match any records")
                tx.delete(where, snapshot_properties=props)
                if files.paths:
                    # The paths are new (a uuid per run): the duplicate check would read
                    # every manifest of the table for nothing.
                    tx.add_files(
                        list(files.paths), snapshot_properties=props, check_duplicate_files=False
                    )
            return
        except CommitFailedException:
            iceberg.refresh()
    raise LakeCommitConflict(
        f"{files.table.pg_name} {client_id}/{day}: {COMMIT_ATTEMPTS} commits lost to other "
        "writers of the table; the work message will be retried"
    )


def last_fingerprint(iceberg: Table, client_id: str, business_date: str) -> str | None:
    """The slice fingerprint recorded by the newest commit of this slice in the table's
    current history (None: never exported, retracted, or exported without one)."""
    snapshots = {s.snapshot_id: s for s in iceberg.metadata.snapshots}
    snapshot = iceberg.current_snapshot()
    while snapshot is not None:
        summary = snapshot.summary
        if (
            summary is not None
            and summary.get(SNAPSHOT_PREFIX + "client_id") == client_id
            and summary.get(SNAPSHOT_PREFIX + "business_date") == business_date
        ):
            return summary.get(SNAPSHOT_PREFIX + FINGERPRINT)
        parent = snapshot.parent_snapshot_id
        snapshot = snapshots.get(parent) if parent is not None else None
    return None


def export_slice(
    conn: psycopg.Connection,
    lake: LakeLocation,
    client_id: str,
    day: date,
    still_current: Callable[[], bool],
    properties: dict[str, str],
    table_names: Iterable[str] = tables.LAKE_TABLES,
    retract: bool = False,
    force: bool = False,
) -> int | None:
    """Write every lake table's slice of (client, date); returns the rows exported, or None
    when the work stopped being current before anything was committed.

    A table whose slice has a fingerprint (`stream.slice_fingerprint`: the raw inputs) equal to
    the one its last commit of the slice recorded is left as it is: most runs are started by
    one input or one output changing, and the largest slices (transactions) would otherwise
    be rewritten by every one of them. `force` rewrites them anyway (a benchmark's repeated
    export of one slice)."""
    cat = lake_catalog.catalog()
    key = day.strftime("%Y%m%d")
    properties = {**properties, "client_id": client_id, "business_date": key}
    staged: list[tuple[Table, SliceFiles, str | None]] = []
    unchanged: list[str] = []
    committed = 0
    try:
        for name in table_names:
            table = tables.describe(conn, name)
            iceberg = ensure_table(cat, lake, table)
            if retract:
                staged.append((iceberg, SliceFiles(table, (), 0), None))
                continue
            lineage = stream.slice_lineage(conn, table, client_id, day)
            fingerprint = stream.slice_fingerprint(table, lineage)
            if (
                not force
                and fingerprint is not None
                and fingerprint == last_fingerprint(iceberg, client_id, key)
            ):
                unchanged.append(name)
                continue
            files = write_slice(conn, iceberg, table, client_id, day, lineage)
            staged.append((iceberg, files, fingerprint))
            if not still_current():
                # Newer inputs arrived while streaming: their own run exports them. Asked
                # after each table, not only at the end (one metastore read each): a drop's
                # files arrive one after another, and the run started by the first would
                # otherwise stream every table before finding out.
                return None
        if not still_current():  # also when nothing needed writing
            return None
        for iceberg, files, fingerprint in staged:
            recorded = (
                properties if fingerprint is None else {**properties, FINGERPRINT: fingerprint}
            )
            try:
                commit_slice(iceberg, files, client_id, day, recorded)
            except LakeCommitConflict:
                raise  # every attempt refused: not committed
            except BaseException:
                # The catalog may have applied this commit before the error (a lost response):
                # its files may be in the table now, so they are kept.
                committed += 1
                raise
            committed += 1
    finally:
        # Files no commit added (a stale run's, or those of the tables after a failed commit)
        # are read by no snapshot: deleted now rather than left on S3 for ever.
        _discard(staged[committed:])
    now = datetime.now(UTC)
    for iceberg, _, _ in staged:
        maintenance.expire_if_due(conn, iceberg, now)
    rows = sum(files.rows for _, files, _ in staged)
    logger.info(
        "lake slice exported",
        extra={
            "client_id": client_id,
            "business_date": day.isoformat(),
            "rows": rows,
            "tables_unchanged": unchanged,
        },
    )
    return rows


def _discard(staged: Iterable[tuple[Table, SliceFiles, str | None]]) -> None:
    for iceberg, files, _ in staged:
        for path in files.paths:
            try:
                iceberg.io.delete(path)
            except Exception:  # the error that ended the run matters more: logged, not raised
                logger.warning(
                    "an uncommitted lake data file was not deleted",
                    extra={"path": path},
                    exc_info=True,
                )


def export_work(
    conn: psycopg.Connection, message: WorkMessage, still_current: Callable[[], bool]
) -> int | None:
    """A work message of the lake exporter: APPLY exports the slice's current rows, RETRACT
    deletes the slice; each snapshot names the message that made it (`export_slice` adds the
    client and date)."""
    return export_slice(
        conn,
        read_lake_location(),
        message.client_id,
        datetime.strptime(message.business_date, "%Y%m%d").date(),
        still_current,
        {
            "action": message.action,
            "idempotency_key": message.idempotency_key,
            "input_versions": json.dumps(message.input_versions, sort_keys=True),
        },
        retract=message.action == "RETRACT",
    )
