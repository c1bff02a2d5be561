"""Object key -> input: the layout of docs/SPEC.md §2.1, and nothing else routes."""

from __future__ import annotations

from datetime import date

import pytest

from dataharvest.persistence.exceptions import UnroutableKey
from dataharvest.persistence.routing import (
    KEY_LAYOUT,
    Route,
    is_client_id,
    is_upload_name,
    route_of,
)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("acme/accounts_20240102.csv", Route("acme", "accounts", date(2024, 1, 2), gzip=False)),
        ("a/clients_20240229.csv.gz", Route("a", "clients", date(2024, 2, 29), gzip=True)),
        ("0-x-9/portfolios_19991231.csv", Route("0-x-9", "portfolios", date(1999, 12, 31), False)),
        (
            "c" * 63 + "/transactions_20240102.csv",
            Route("c" * 63, "transactions", date(2024, 1, 2), gzip=False),
        ),
    ],
)
def test_routable_keys(key: str, expected: Route) -> None:
    assert route_of(key) == expected


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("accounts_20240102.csv", "expected exactly one '/'"),
        ("acme/2024/accounts_20240102.csv", "expected exactly one '/'"),
        ("Acme/accounts_20240102.csv", "client id 'Acme' must match"),
        ("-acme/accounts_20240102.csv", "client id '-acme' must match"),
        ("c" * 64 + "/accounts_20240102.csv", "must match"),
        ("acme/accounts_20240230.csv", "'20240230' is not a valid calendar date"),
        ("acme/accounts_2024010.csv", "does not match"),
        ("acme/accounts_20240102.txt", "does not match"),
        ("acme/accounts_20240102.csv.zip", "does not match"),
        ("acme/Accounts_20240102.csv", "does not match"),
        ("acme/users_20240102.csv", "unknown entity 'users'"),
        ("acme/", "does not match"),
    ],
)
def test_unroutable_keys_say_why(key: str, reason: str) -> None:
    with pytest.raises(UnroutableKey) as raised:
        route_of(key)
    assert reason in raised.value.reason
    assert raised.value.key == key


def test_lock_name_and_date_key_identify_the_input() -> None:
    route = route_of("acme/accounts_20240102.csv.gz")
    assert route.date_key == "20240102"
    assert route.lock_name == "persistence/acme/accounts/20240102"
    # .csv and .csv.gz of the same day are versions of the same input.
    assert route_of("acme/accounts_20240102.csv").lock_name == route.lock_name


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        # `$` alone would accept a trailing newline on either part.
        ("acme\n/accounts_20240102.csv", "client id 'acme\\n' must match"),
        ("acme/accounts_20240102.csv\n", "file name 'accounts_20240102.csv\\n' does not match"),
        ("acme/accounts_20240102.csv.gz\n", "does not match"),
        ("acme/accounts_20240102.csv\r", "does not match"),
        ("acme/\naccounts_20240102.csv", "does not match"),
        ("acme/accounts_20240102.csv\x00", "does not match"),
        ("ac\x00me/accounts_20240102.csv", "client id 'ac\\x00me' must match"),
        ("acme%2Faccounts_20240102.csv", "expected exactly one '/'"),
        ("acme/accounts%5F20240102.csv", "does not match"),
        ("../accounts_20240102.csv", "client id '..' must match"),
        ("acme/../accounts_20240102.csv", "expected exactly one '/'"),
        ("acme/./accounts_20240102.csv", "expected exactly one '/'"),
        ("acme/..", "does not match"),
        ("/accounts_20240102.csv", "client id '' must match"),
        ("acmé/accounts_20240102.csv", "client id 'acmé' must match"),
        ("acme/accounts_\uff12\uff10\uff12\uff14\uff10\uff11\uff10\uff12.csv", "does not match"),
        ("acme/\uff41ccounts_20240102.csv", "does not match"),  # full-width a
        ("\uff41cme/accounts_20240102.csv", "must match"),
        ("acme/accounts_20240102.csv" + "x" * 998, "does not match"),  # 1,024 bytes
    ],
)
def test_keys_match_as_a_whole(key: str, reason: str) -> None:
    with pytest.raises(UnroutableKey) as raised:
        route_of(key)
    assert reason in raised.value.reason


def test_a_key_of_1024_bytes_is_unroutable_and_says_why() -> None:
    # S3's longest key: multi-byte characters, a routable prefix, and a newline at the end.
    key = "acme/accounts_20240102.csvx" + "é" * 498 + "\n"
    assert len(key.encode()) == 1024
    with pytest.raises(UnroutableKey) as raised:
        route_of(key)
    assert raised.value.reason == f"file name {key[5:]!r} does not match {KEY_LAYOUT}"


@pytest.mark.parametrize(
    ("name", "routes"),
    [
        ("accounts_20240102.csv", True),
        ("transactions_20240229.csv.gz", True),
        ("accounts_20240102.csv\n", False),
        ("users_20240102.csv", False),
        ("accounts_20240230.csv", True),  # uploaded, then recorded as unroutable
        ("accounts_20240102.csv.bak", False),
        ("x/accounts_20240102.csv", False),
    ],
)
def test_is_upload_name_is_the_key_layout(name: str, routes: bool) -> None:
    assert is_upload_name(name) is routes


@pytest.mark.parametrize(
    ("value", "valid"),
    [("acme", True), ("a", True), ("acme\n", False), ("acme\x00", False), ("", False)],
)
def test_is_client_id_matches_the_whole_value(value: str, valid: bool) -> None:
    assert is_client_id(value) is valid
