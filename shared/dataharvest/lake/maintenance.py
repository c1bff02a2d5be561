"""Lake table maintenance: expire old snapshots, then delete the files only they reached.

Every export commits to each lake table it writes, and Iceberg keeps every snapshot in the
table's metadata, which a commit rewrites whole (and pyiceberg copies several times per
commit): left alone, commits get slower with every export and the replaced slices' data files
stay on S3 for ever. Expiry keeps `MAX_SNAPSHOT_AGE` of history but no more than
`MAX_SNAPSHOTS` snapshots (time travel reaches that far back; table properties override
both), never the current snapshot nor a branch or tag head, and then deletes the manifest
lists, manifests and data files that no remaining snapshot reaches.

Safe beside running exports: the expiry is one catalog commit (compare-and-swap on the
metadata location, so it and an export's commit never both win against the same state), and
files are deleted only after it committed, computed from the committed metadata. A file an
export wrote but has not committed yet is reached by no snapshot, expired or not, so it is
never a candidate (that export's commit adds it later).

Orphans are the files under a table's location that no metadata reaches at all: the data files
of an export killed between writing and committing (a Lambda timeout), the manifests and
metadata files of a commit attempt the catalog refused. Nothing else would ever delete them;
`remove_orphans` does, once they are `ORPHAN_MIN_AGE` old, so a file an export is about to
commit is never one. The lake exporter's daily `maintenance` function runs `maintain` (expiry
and orphans for every table), as does `dataharvest lake expire`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlparse

import boto3
import psycopg
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.io import FileIO
from pyiceberg.manifest import ManifestEntryStatus
from pyiceberg.table import Table
from pyiceberg.table.refs import SnapshotRefType
from pyiceberg.table.snapshots import Snapshot

from dataharvest import db
from dataharvest.lake import catalog as lake_catalog
from dataharvest.lake.location import LakeLocation
from dataharvest.lake.tables import LAKE_TABLES
from dataharvest.observability import logger

MAX_SNAPSHOT_AGE = timedelta(days=5)
MAX_SNAPSHOT_AGE_PROPERTY = "history.expire.max-snapshot-age-ms"
# And at most this many besides the current one, the floor below permitting: a commit's cost
# grows with the snapshots the metadata holds (0.39 s at 4, 0.87 s at 204, 2.3 s at 404:
# BENCHMARKS.md, "Lake tier", third session), and at full volume a table takes thousands of
# commits a day. Iceberg has no such property; ours is a table property too.
MAX_SNAPSHOTS = 100
MAX_SNAPSHOTS_PROPERTY = "dataharvest.history.max-snapshots"
# But never a snapshot younger than this, whatever the count: a query that began on it reads
# its files, and expiry deletes those of replaced slices (Athena's default query timeout is 30
# minutes; a lake query of a few slices takes seconds). At full volume this floor, not the
# count, bounds the history.
MIN_SNAPSHOT_AGE = timedelta(minutes=10)
MIN_SNAPSHOT_AGE_PROPERTY = "dataharvest.history.min-snapshot-age-ms"
# An export expires a table's history itself once its oldest snapshot is this much past the
# age limit, or once it holds a quarter more snapshots than the count limit: each expiry then
# covers a batch of snapshots, not one per commit.
DUE_SLACK = timedelta(hours=1)
DUE_COUNT_FACTOR = 1.25
# A file no metadata reaches is an orphan only at this age: an export writes its data files,
# and a commit its manifests and metadata file, minutes before the commit that makes them part
# of the table (a Lambda runs 15 minutes at most). Iceberg's own procedure waits three days.
ORPHAN_MIN_AGE = timedelta(days=1)


@dataclass(frozen=True)
class Expired:
    snapshots: int
    files_deleted: int


@dataclass(frozen=True)
class Orphans:
    # Files under the table's location that no metadata reaches and old enough to delete.
    paths: tuple[str, ...]
    deleted: int


@dataclass(frozen=True)
class Maintained:
    table: str
    expired: Expired
    orphans: Orphans
    history_kept: timedelta


# (path, last modified) of every object under a location (s3://bucket/prefix/).
FileLister = Callable[[str], Iterable[tuple[str, datetime]]]


def max_snapshot_age(iceberg: Table) -> timedelta:
    value = iceberg.properties.get(MAX_SNAPSHOT_AGE_PROPERTY)
    return timedelta(milliseconds=int(value)) if value else MAX_SNAPSHOT_AGE


def min_snapshot_age(iceberg: Table) -> timedelta:
    value = iceberg.properties.get(MIN_SNAPSHOT_AGE_PROPERTY)
    return timedelta(milliseconds=int(value)) if value else MIN_SNAPSHOT_AGE


def max_snapshots(iceberg: Table) -> int:
    value = iceberg.properties.get(MAX_SNAPSHOTS_PROPERTY)
    return int(value) if value else MAX_SNAPSHOTS


def expiry_due(iceberg: Table, now: datetime) -> bool:
    """Whether an expiry now would expire something and the table is well past a limit: a
    snapshot older than the age limit plus `DUE_SLACK`, or more than `DUE_COUNT_FACTOR` times
    the count limit held (a look at the metadata already loaded, nothing read)."""
    candidates = _to_expire(iceberg, now)
    if not candidates:
        return False
    if len(_expirable(iceberg)) > max_snapshots(iceberg) * DUE_COUNT_FACTOR:
        return True
    cutoff = _millis(now - max_snapshot_age(iceberg) - DUE_SLACK)
    return any(s.timestamp_ms < cutoff for s in candidates)


def try_expiry_lock(conn: psycopg.Connection, iceberg: Table) -> bool:
    """The table's expiry lock, for the caller's transaction, if no other process holds it:
    one expiry (an export's or the daily maintenance's) per table at a time."""
    return db.try_advisory_xact_lock(conn, f"lake-expire:{'.'.join(iceberg.name())}")


def expire_if_due(conn: psycopg.Connection, iceberg: Table, now: datetime) -> Expired:
    """What an export does after its commit: `expire` when due and no other process is at
    it (a lock per table, held until the caller's transaction ends). A failure is logged with
    its error, not raised: the export it follows has committed, and the table stays due, so
    the next export tries again."""
    if not expiry_due(iceberg, now):
        return Expired(0, 0)
    name = ".".join(iceberg.name())
    if not try_expiry_lock(conn, iceberg):
        return Expired(0, 0)
    try:
        return expire(iceberg, now)
    except Exception:
        logger.exception(
            "lake snapshot expiry failed; the next export retries it", extra={"table": name}
        )
        return Expired(0, 0)


def expire(iceberg: Table, now: datetime) -> Expired:
    """Expire the table's snapshots older than its age limit or beyond its count limit (the
    oldest first), none younger than its floor, and delete the files that only they
    reached."""
    expired = _to_expire(iceberg, now)
    if not expired:
        return Expired(0, 0)
    io = iceberg.io
    iceberg.maintenance.expire_snapshots().by_ids([s.snapshot_id for s in expired]).commit()
    remaining = iceberg.metadata.snapshots  # the committed metadata
    left = {s.snapshot_id for s in remaining}
    gone = [s for s in expired if s.snapshot_id not in left]
    reached_by_gone = _files(io, gone, live_only=False)
    still_reached = _files(io, remaining, live_only=True)
    unreached = sorted(reached_by_gone - still_reached)
    for path in unreached:
        io.delete(path)
    logger.info(
        "lake snapshots expired",
        extra={
            "table": ".".join(iceberg.name()),
            "snapshots_expired": len(gone),
            "files_deleted": len(unreached),
        },
    )
    return Expired(len(gone), len(unreached))


def remove_orphans(
    iceberg: Table, now: datetime, list_files: FileLister, dry_run: bool = False
) -> Orphans:
    """Delete the files under the table's location that its metadata does not reach (no
    snapshot's manifest list, manifest or data file, whatever its status; neither the current
    metadata file nor one its log keeps) and that are older than `ORPHAN_MIN_AGE`.

    Conservative by construction: what any remaining snapshot mentions is kept, even as a
    deleted entry, and what the metadata loaded here does not know yet (a commit since) is
    younger than the age limit. `dry_run` finds them and deletes nothing."""
    cutoff = now - ORPHAN_MIN_AGE
    old = {
        path
        for path, modified in list_files(iceberg.location().rstrip("/") + "/")
        if modified < cutoff
    }
    if not old:
        return Orphans((), 0)  # what is reached costs a read of every manifest: not needed
    metadata = iceberg.metadata
    reached = _files(iceberg.io, metadata.snapshots, live_only=False)
    reached.add(iceberg.metadata_location)
    reached.update(entry.metadata_file for entry in metadata.metadata_log)
    reached.update(f.statistics_path for f in metadata.statistics)
    reached.update(f.statistics_path for f in metadata.partition_statistics)
    orphans = tuple(sorted(old - reached))
    deleted = 0
    if not dry_run:
        for path in orphans:
            try:
                iceberg.io.delete(path)
            except FileNotFoundError:
                continue  # deleted meanwhile (an expiry beside us)
            deleted += 1
    if orphans:
        logger.info(
            "lake orphan files found" if dry_run else "lake orphan files deleted",
            extra={"table": ".".join(iceberg.name()), "orphans": len(orphans), "deleted": deleted},
        )
    return Orphans(orphans, deleted)


def s3_lister(lake: LakeLocation) -> FileLister:
    """A `FileLister` over the lake bucket (the local endpoint's when there is one)."""
    client = boto3.client("s3", region_name=lake.region, endpoint_url=lake.endpoint_url)

    def list_files(location: str) -> Iterator[tuple[str, datetime]]:
        parsed = urlparse(location)
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=parsed.netloc, Prefix=parsed.path.lstrip("/")
        )
        for page in pages:
            for item in page.get("Contents", []):
                # Not the empty "folder/" markers pyarrow's S3 filesystem leaves where it
                # deleted a folder's last file: not files, and no FileIO deletes them.
                if not item["Key"].endswith("/"):
                    yield f"{parsed.scheme}://{parsed.netloc}/{item['Key']}", item["LastModified"]

    return list_files


def maintain(
    conn: psycopg.Connection,
    lake: LakeLocation,
    now: datetime,
    cat: Catalog | None = None,
    list_files: FileLister | None = None,
    dry_run: bool = False,
) -> list[Maintained]:
    """Expire every lake table's history and remove its orphans (the daily maintenance, and
    `dataharvest lake expire`). Each table under its expiry lock, so an export's own expiry
    does not run beside it; a table whose lock another process holds is left to the next run.
    A failure on one table is raised after the others were done (the run is retried)."""
    cat = cat or lake_catalog.catalog()
    list_files = list_files or s3_lister(lake)
    done: list[Maintained] = []
    failed: list[str] = []
    for name in LAKE_TABLES:
        try:
            iceberg = lake_catalog.load(lake, name, cat)
        except NoSuchTableError:
            continue  # nothing exported to it yet
        try:
            with conn.transaction():
                if not try_expiry_lock(conn, iceberg):
                    logger.info("lake maintenance skipped a locked table", extra={"table": name})
                    continue
                expired = Expired(0, 0) if dry_run else expire(iceberg, now)
                orphans = remove_orphans(iceberg, now, list_files, dry_run)
        except Exception:
            logger.exception("lake maintenance failed on a table", extra={"table": name})
            failed.append(name)
            continue
        done.append(Maintained(name, expired, orphans, max_snapshot_age(iceberg)))
    if failed:
        raise RuntimeError(f"lake maintenance failed on {', '.join(failed)} (logged)")
    return done


def _to_expire(iceberg: Table, now: datetime) -> list[Snapshot]:
    """Snapshots past the age limit or beyond the newest `max_snapshots`, but none younger
    than the floor."""
    cutoff = _millis(now - max_snapshot_age(iceberg))
    floor = _millis(now - min_snapshot_age(iceberg))
    newest_first = sorted(_expirable(iceberg), key=lambda s: s.timestamp_ms, reverse=True)
    keep = max_snapshots(iceberg)
    return [
        s
        for i, s in enumerate(newest_first)
        if (i >= keep or s.timestamp_ms < cutoff) and s.timestamp_ms < floor
    ]


def _expirable(iceberg: Table) -> list[Snapshot]:
    metadata = iceberg.metadata
    protected = {
        ref.snapshot_id
        for ref in metadata.refs.values()
        if ref.snapshot_ref_type in (SnapshotRefType.BRANCH, SnapshotRefType.TAG)
    }
    if metadata.current_snapshot_id is not None:
        protected.add(metadata.current_snapshot_id)
    return [s for s in metadata.snapshots if s.snapshot_id not in protected]


def _files(io: FileIO, snapshots: Iterable[Snapshot], live_only: bool) -> set[str]:
    """Every file the snapshots reach: manifest lists, manifests and data files (only the
    live ones, `live_only`; else also those a manifest records as deleted)."""
    paths: set[str] = set()
    manifests_read: set[str] = set()
    for snapshot in snapshots:
        paths.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(io):
            paths.add(manifest.manifest_path)
            if manifest.manifest_path in manifests_read:
                continue  # manifests are shared between snapshots: each read once
            manifests_read.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=False):
                if live_only and entry.status == ManifestEntryStatus.DELETED:
                    continue
                paths.add(entry.data_file.file_path)
    return paths


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
