"""Object key -> input: the layout of contract section 2, and nothing else routes."""

from __future__ import annotations

from datetime import date

import pytest

from dataharvest.persistence.exceptions import UnroutableKey
from dataharvest.persistence.routing import Route, route


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
    assert route(key) == expected


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
        route(key)
    assert reason in raised.value.reason
    assert raised.value.key == key


def test_lock_name_and_date_key_identify_the_input() -> None:
    target = route("acme/accounts_20240102.csv.gz")
    assert target.date_key == "20240102"
    assert target.lock_name == "persistence/acme/accounts/20240102"
    # .csv and .csv.gz of the same day are versions of the same input.
    assert route("acme/accounts_20240102.csv").lock_name == target.lock_name
