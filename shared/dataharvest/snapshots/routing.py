"""Snapshot landing keys: `{client_id}/snapshots/{table}/{export_version}/{file}.csv[.gz]`.

Any key whose second segment is `snapshots` is a snapshot key; one that does not match the whole
layout is unroutable with the reason (recorded like any unroutable upload, docs/SPEC.md §2.1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from dataharvest.persistence.exceptions import UnroutableKey
from dataharvest.persistence.routing import CLIENT_ID

SNAPSHOTS = "snapshots"
KEY_LAYOUT = "{client_id}/snapshots/{table}/{export_version}/{file}.csv[.gz]"
# A table or column name: a plain lower-case SQL identifier (it names replica.<table>).
IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,62}")
# Versions order as text (byte order, "C" collation): ASCII only, so Python and PostgreSQL agree.
EXPORT_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
FILE_NAME = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,200}?)\.csv(?P<gz>\.gz)?")
LEADING_DATE = re.compile(r"(?P<date>[0-9]{8})(?![0-9])")


@dataclass(frozen=True)
class SnapshotRoute:
    client_id: str
    table: str
    export_version: str
    file_name: str
    gzip: bool

    @property
    def business_date(self) -> date | None:
        """The export's business date: the version's leading YYYYMMDD (`20201230_V0001`), if it
        has a valid one; None otherwise (the date it is applied on is used then)."""
        match = LEADING_DATE.match(self.export_version)
        if not match:
            return None
        raw = match["date"]
        try:
            return date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))
        except ValueError:
            return None

    @property
    def lock_name(self) -> str:
        """Exports of one (client, table) apply one at a time under this lock."""
        return f"snapshot/{self.client_id}/{self.table}"


def is_snapshot_key(key: str) -> bool:
    """Whether the key is under `{something}/snapshots/` (then only this layout routes it)."""
    parts = key.split("/")
    return len(parts) >= 2 and parts[1] == SNAPSHOTS


def route_snapshot(key: str) -> SnapshotRoute:
    """The export a key is; raises UnroutableKey with the reason otherwise."""
    parts = key.split("/")
    if len(parts) != 5:
        raise UnroutableKey(key, f"a snapshot key has exactly five segments ({KEY_LAYOUT})")
    client_id, _, table, version, file_name = parts
    if not CLIENT_ID.fullmatch(client_id):
        raise UnroutableKey(
            key, f"client id {client_id!r} must match ^{CLIENT_ID.pattern}$ ({KEY_LAYOUT})"
        )
    if not IDENTIFIER.fullmatch(table):
        raise UnroutableKey(
            key, f"table {table!r} must match ^{IDENTIFIER.pattern}$ ({KEY_LAYOUT})"
        )
    if not EXPORT_VERSION.fullmatch(version):
        raise UnroutableKey(
            key,
            f"export version {version!r} must match ^{EXPORT_VERSION.pattern}$ ({KEY_LAYOUT})",
        )
    match = FILE_NAME.fullmatch(file_name)
    if not match:
        raise UnroutableKey(key, f"file name {file_name!r} does not match {KEY_LAYOUT}")
    return SnapshotRoute(client_id, table, version, file_name, gzip=bool(match["gz"]))
