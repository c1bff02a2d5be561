"""Object key -> the input it is a version of: (client_id, entity, business_date).

The client id comes from the key and nowhere else: this is where tenant isolation starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from dataharvest.persistence.exceptions import UnroutableKey
from dataharvest.schemas import ENTITIES

# Used with fullmatch only: `$` would also match before a trailing newline ("acme\n").
CLIENT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
FILE_NAME = re.compile(r"(?P<entity>[a-z]+)_(?P<date>[0-9]{8})\.csv(?P<gz>\.gz)?")
KEY_LAYOUT = "{client_id}/{entity}_{YYYYMMDD}.csv[.gz]"


@dataclass(frozen=True)
class Route:
    client_id: str
    entity: str
    business_date: date
    gzip: bool

    @property
    def date_key(self) -> str:
        """The metastore sort key: YYYYMMDD."""
        return self.business_date.strftime("%Y%m%d")

    @property
    def lock_name(self) -> str:
        """One name per input (client, entity, date): its loads serialize on it."""
        return f"persistence/{self.client_id}/{self.entity}/{self.date_key}"


def is_client_id(value: str) -> bool:
    """Whether `value` is a client id (docs/SPEC.md §2.1), as a whole."""
    return CLIENT_ID.fullmatch(value) is not None


def is_upload_name(value: str) -> bool:
    """Whether `value` is named like an upload, `{entity}_{YYYYMMDD}.csv[.gz]` as a whole with a
    known entity. The date is not checked: a file with an impossible date is still an upload,
    and routing records it as unroutable."""
    match = FILE_NAME.fullmatch(value)
    return match is not None and match["entity"] in ENTITIES


def route_of(key: str) -> Route:
    """The input a key belongs to; raises UnroutableKey with the reason otherwise."""
    parts = key.split("/")
    if len(parts) != 2:
        raise UnroutableKey(key, f"expected exactly one '/' ({KEY_LAYOUT})")
    client_id, file_name = parts
    if not is_client_id(client_id):
        raise UnroutableKey(
            key, f"client id {client_id!r} must match ^{CLIENT_ID.pattern}$ ({KEY_LAYOUT})"
        )
    match = FILE_NAME.fullmatch(file_name)
    if not match:
        raise UnroutableKey(key, f"file name {file_name!r} does not match {KEY_LAYOUT}")
    entity = match["entity"]
    if entity not in ENTITIES:
        raise UnroutableKey(
            key,
            f"unknown entity {entity!r}: expected one of {', '.join(ENTITIES)} ({KEY_LAYOUT})",
        )
    raw_date = match["date"]
    try:
        business_date = date(int(raw_date[:4]), int(raw_date[4:6]), int(raw_date[6:]))
    except ValueError:
        raise UnroutableKey(key, f"{raw_date!r} is not a valid calendar date (YYYYMMDD)") from None
    return Route(client_id, entity, business_date, gzip=bool(match["gz"]))
