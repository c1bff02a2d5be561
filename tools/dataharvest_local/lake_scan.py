"""How `dataharvest query` hands a lake table to DuckDB: as a pyarrow dataset of its files.

DuckDB scans a `pyarrow.dataset` lazily and pushes the query's filters and column list into
it, so a query reads only the data files whose partition (`business_date`, `client_id`) can
match, only the row groups whose statistics can match, and only the columns it uses. The
exporter replaces a slice by deleting whole files, so the current snapshot's files are the
table: a snapshot with delete files (which no writer of ours makes) is read whole by pyiceberg
instead, which applies them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.table import FileScanTask, Table
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import DateType

from dataharvest.lake import catalog as lake_catalog
from dataharvest.lake.location import LakeLocation

EPOCH = date(1970, 1, 1)


@dataclass
class ScanCounter:
    """The data files DuckDB actually opened, per query (pruned files are never opened)."""

    files_opened: int = 0
    paths: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def opened(self, path: str) -> None:
        with self._lock:
            self.files_opened += 1
            self.paths.append(path)


class _CountingHandler(pafs.FileSystemHandler):  # type: ignore[misc]
    """Delegates to a pyarrow filesystem and counts the files opened for reading; the file
    handed back is the native one, so reads do not go through Python."""

    def __init__(self, inner: pafs.FileSystem, counter: ScanCounter) -> None:
        self.inner, self.counter = inner, counter

    def get_type_name(self) -> str:
        return f"counting+{self.inner.type_name}"

    def equals(self, other: Any) -> bool:
        return isinstance(other, _CountingHandler) and other.inner.equals(self.inner)

    def normalize_path(self, path: str) -> str:
        return str(self.inner.normalize_path(path))

    def get_file_info(self, paths: list[str]) -> Any:
        return self.inner.get_file_info(paths)

    def get_file_info_selector(self, selector: Any) -> Any:
        return self.inner.get_file_info(selector)

    def open_input_file(self, path: str) -> Any:
        self.counter.opened(path)
        return self.inner.open_input_file(path)

    def open_input_stream(self, path: str) -> Any:
        self.counter.opened(path)
        return self.inner.open_input_stream(path)

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise OSError("the lake is read-only to queries")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = _read_only
    delete_file = move = copy_file = open_output_stream = open_append_stream = _read_only


def s3_filesystem(lake: LakeLocation) -> pafs.FileSystem:
    """pyarrow's S3 client configured as the catalog's FileIO is (catalog.file_io_properties)."""
    props = lake_catalog.file_io_properties(lake)
    options: dict[str, Any] = {"region": props["s3.region"]}
    if "s3.endpoint" in props:
        options["endpoint_override"] = props["s3.endpoint"]
        options["access_key"] = props["s3.access-key-id"]
        options["secret_key"] = props["s3.secret-access-key"]
    return pafs.S3FileSystem(**options)


def _partition_expression(spec: PartitionSpec, table: Table, partition: Any) -> pc.Expression:
    """What every row of a file satisfies, from its partition values: lets the dataset skip
    the file without opening it."""
    schema = table.schema()
    expression = pc.scalar(True)
    for position, spec_field in enumerate(spec.fields):
        value = partition[position]
        source = schema.find_field(spec_field.source_id)
        column = ds.field(source.name)
        if isinstance(spec_field.transform, IdentityTransform):
            term = column.is_null() if value is None else column == pa.scalar(value)
        elif isinstance(spec_field.transform, DayTransform) and isinstance(
            source.field_type, DateType
        ):
            if value is None:
                term = column.is_null()
            else:
                term = column == pa.scalar(EPOCH + timedelta(days=int(value)), pa.date32())
        else:
            continue  # another transform: no pruning by this field, row groups still pruned
        expression = expression & term
    return expression


def bucket_path(path: str) -> str:
    """An s3:// location as pyarrow's S3 filesystem names it: bucket/key."""
    scheme, sep, rest = path.partition("://")
    return rest if sep and scheme in ("s3", "s3a", "s3n") else path


def dataset(
    table: Table, filesystem: pafs.FileSystem, counter: ScanCounter | None = None
) -> ds.Dataset | pa.Table:
    """The table's current snapshot as a lazily scanned dataset (or, when a file has delete
    files, pyiceberg's full scan, which applies them)."""
    tasks: list[FileScanTask] = list(table.scan().plan_files())
    if any(task.delete_files for task in tasks):
        return table.scan().to_arrow()
    schema = schema_to_pyarrow(table.schema(), include_field_ids=False)
    if counter is not None:
        filesystem = pafs.PyFileSystem(_CountingHandler(filesystem, counter))
    specs = table.specs()
    parquet = ds.ParquetFileFormat()
    fragments = [
        parquet.make_fragment(
            bucket_path(task.file.file_path),
            filesystem,
            partition_expression=_partition_expression(
                specs[task.file.spec_id], table, task.file.partition
            ),
            file_size=task.file.file_size_in_bytes,
        )
        for task in tasks
    ]
    return ds.FileSystemDataset(fragments, schema, parquet, filesystem)
