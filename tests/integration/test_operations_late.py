"""The late-input checker with an injected clock (issue 17): before the cutoff nothing; after
it one partner message and one alarm per missing input; a late arrival clears it; another run
sends nothing new."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from operations_support import expect_accounts_by_six, next_weekday, notices, reset_alarm
from persistence_support import accounts_file, item, key, put

from dataharvest import exports
from dataharvest.ops import alarms, late

pytestmark = pytest.mark.integration


def test_late_checker_with_an_injected_clock(client_id, db, inbox, wait_quiet, monkeypatch) -> None:
    monkeypatch.setenv(alarms.LOCAL_FLAG, "1")
    reset_alarm(alarms.INPUTS_LATE)
    day = next_weekday(datetime.now(UTC).date())
    expectation = expect_accounts_by_six(db, client_id, day)
    due = expectation.due_at(day)
    assert due.astimezone(UTC).hour in (4, 5)  # 06:00 in Berlin (CEST or CET)
    yyyymmdd = f"{day:%Y%m%d}"

    # Before the cutoff: nothing.
    assert late.check(db, due - timedelta(minutes=1), client_id) == ([], [])
    assert notices(db, client_id) == []
    assert "account_late" not in item(client_id, yyyymmdd)

    # After: the item is marked, one message to the partner, one alarm.
    found, cleared = late.check(db, due + timedelta(minutes=1), client_id)
    assert [(f.entity, f.business_date) for f in found] == [("accounts", day)] and cleared == []
    assert item(client_id, yyyymmdd)["account_late"] is True
    (notice,) = notices(db, client_id)
    assert notice["published"] and notice["business_date"] == day
    assert notice["message"].startswith(f"accounts_{yyyymmdd}.csv: not received; it was due by")
    assert "06:00 Europe/Berlin" in notice["message"]
    messages = exports.rows(db, "messages", client_id, day)
    assert [m["message_type"] for m in messages] == ["error_message"]
    (alarm,) = inbox.of(alarms.INPUTS_LATE)
    assert client_id in alarm["NewStateReason"]

    # A second run: nothing new.
    assert late.check(db, due + timedelta(minutes=20), client_id) == ([], [])
    assert len(notices(db, client_id)) == 1
    assert inbox.of(alarms.INPUTS_LATE) == []

    # The file arrives late: the flag goes, the record is cleared; the checker sends nothing.
    put(key(client_id, "accounts", yyyymmdd), accounts_file(3))
    wait_quiet()
    assert "account_late" not in item(client_id, yyyymmdd)
    assert item(client_id, yyyymmdd)["account_persisted"] is True
    (cleared_at,) = db.execute(
        "SELECT cleared_at FROM audit.late_inputs WHERE client_id = %s", (client_id,)
    ).fetchone()
    assert cleared_at is not None
    assert late.check(db, due + timedelta(minutes=40), client_id) == ([], [])
    assert len(notices(db, client_id)) == 1
    assert inbox.of(alarms.INPUTS_LATE) == []


def test_days_outside_the_expectation_and_before_it_are_never_late(client_id, db) -> None:
    monday = date(2030, 1, 7)
    expectation = late.Expectation(
        client_id,
        ("clients", "accounts"),
        time(6, 0),
        "Europe/Berlin",
        (1, 2, 3, 4, 5),
        1,
        effective_from=monday,
    )
    with db.transaction():
        late.set_expectation(db, expectation)
    # Sunday evening after the week: Mon-Fri due on the next day at 06:00 (lag 1), the
    # weekend not expected, nothing before Monday.
    now = datetime(2030, 1, 13, 20, 0, tzinfo=UTC)
    due = late.due_inputs(late.get_expectations(db, client_id)[0], now)
    assert sorted({d.business_date for d in due}) == [monday + timedelta(days=i) for i in range(5)]
    assert {d.entity for d in due} == {"clients", "accounts"}
    friday = next(d for d in due if d.business_date == date(2030, 1, 11))
    assert friday.due_at == datetime(2030, 1, 12, 5, 0, tzinfo=UTC)  # Saturday 06:00 CET
