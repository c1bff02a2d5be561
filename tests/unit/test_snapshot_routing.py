"""Snapshot landing keys and table definitions (issue 15): pure logic, no services."""

from __future__ import annotations

from datetime import date

import pytest

from dataharvest.persistence.exceptions import UnroutableKey
from dataharvest.snapshots.publish import MAX_PARTITION_KEY, partition_key
from dataharvest.snapshots.routing import is_snapshot_key, route_snapshot
from dataharvest.snapshots.tables import TableError, parse_definition


def test_a_snapshot_key_routes_with_its_parts() -> None:
    route = route_snapshot("acme/snapshots/positions/20201230_V0001/part-1.csv.gz")
    assert (route.client_id, route.table, route.export_version) == (
        "acme",
        "positions",
        "20201230_V0001",
    )
    assert route.gzip and route.file_name == "part-1.csv.gz"
    assert route.business_date == date(2020, 12, 30)
    assert route.lock_name == "snapshot/acme/positions"


def test_versions_order_as_text() -> None:
    versions = ["20201231_V0001", "20201230_V0002", "20201230_V0001"]
    assert sorted(versions) == ["20201230_V0001", "20201230_V0002", "20201231_V0001"]


@pytest.mark.parametrize(
    ("version", "expected"),
    [("V0001", None), ("20201332_V1", None), ("20201230", date(2020, 12, 30)), ("202012301", None)],
)
def test_business_date_is_the_versions_leading_date(version: str, expected) -> None:
    assert route_snapshot(f"acme/snapshots/t/{version}/x.csv").business_date == expected


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("acme/snapshots/t/V1/x.txt", "does not match"),
        ("acme/snapshots/t/x.csv", "five segments"),
        ("acme/snapshots/t/V1/a/x.csv", "five segments"),
        ("Acme/snapshots/t/V1/x.csv", "client id"),
        ("acme/snapshots/T-1/V1/x.csv", "table"),
        ("acme/snapshots/t/V 1/x.csv", "export version"),
        ("acme/snapshots/t/V1/x.csv\n", "does not match"),
    ],
)
def test_malformed_snapshot_keys_are_unroutable(key: str, reason: str) -> None:
    assert is_snapshot_key(key)
    with pytest.raises(UnroutableKey, match=reason):
        route_snapshot(key)


def test_only_the_snapshots_segment_makes_a_snapshot_key() -> None:
    assert not is_snapshot_key("acme/accounts_20240102.csv")
    assert not is_snapshot_key("snapshots/acme/t/V1/x.csv")


def test_definitions() -> None:
    table = parse_definition("acme", "positions", "PK, n", "pk:integer,N:Integer,v1,v2:decimal")
    assert table.key_columns == ("pk", "n")
    assert table.columns == (("pk", "integer"), ("n", "integer"), ("v1", "text"), ("v2", "decimal"))
    assert table.value_columns == ["v1", "v2"]
    assert table.pg_type("v2") == "numeric"


@pytest.mark.parametrize(
    ("key", "columns", "options", "message"),
    [
        ("id", "id:float", {}, "unknown type"),
        ("x", "id", {}, "not one of the columns"),
        ("id", "id,id", {}, "named twice"),
        ("id", "id,client_id", {}, "client_id"),
        ("id", "id", {"delimiter": ";;"}, "one character"),
        ("id", "id", {"delimiter": '"'}, "one character"),
    ],
)
def test_bad_definitions(key: str, columns: str, options: dict, message: str) -> None:
    with pytest.raises(TableError, match=message):
        parse_definition("acme", "t", key, columns, **options)


def test_partition_keys_keep_one_key_per_value_and_fit_kinesis() -> None:
    assert partition_key("acme", "t", {"b": "2", "a": "1"}) == "acme/t/1/2"
    long = partition_key("acme", "t", {"a": "x" * 300})
    assert len(long) <= MAX_PARTITION_KEY and long != partition_key("acme", "t", {"a": "y" * 300})
