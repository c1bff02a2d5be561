"""Late and missing inputs: per-client expectations and the checker that reports what did not
arrive in time.

An expectation (`dataharvest config set-expectations`) says: for every business date D whose
weekday is one of `weekdays`, each of `entities` is due at `due_by` (local time in `timezone`)
on D + `lag_days`. Business dates before the expectation was set are never late.

The checker (`check`, run on a schedule: services/operations `checkLate`, in the cloud and
on the local runner's scheduler; `dataharvest late check` runs it now) finds each expected
input past its due time that has not arrived (no current load, loaded or rejected, in
audit.file_loads) and, once per input and date (audit.late_inputs): marks the metastore item
(`<prefix>_late` = true, e.g. `account_late`), sends the partner one error_message
(ops.notices) and raises the `inputs-late` alarm. An
input that arrives later clears it: persistence removes the flag when it publishes the load and
records the clearing (`input_arrived`), and each checker run clears what arrived meanwhile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from botocore.exceptions import ClientError

from dataharvest import metastore
from dataharvest.ops import alarms, metrics, notices
from dataharvest.schemas import ENTITIES

# Dates older than this many days before today are not looked at (a checker that was down
# for a week still reports the week).
LOOKBACK_DAYS = 7
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ExpectationError(ValueError):
    """A bad expectation argument (the CLI turns it into exit code 2)."""


@dataclass(frozen=True)
class Expectation:
    client_id: str
    entities: tuple[str, ...]
    due_by: time
    timezone: str
    weekdays: tuple[int, ...]  # ISO: 1 = Monday
    lag_days: int
    effective_from: date

    def due_at(self, business_date: date) -> datetime:
        local = datetime.combine(
            business_date + timedelta(days=self.lag_days), self.due_by, ZoneInfo(self.timezone)
        )
        return local.astimezone(UTC)

    def as_dict(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "entities": list(self.entities),
            "by": self.due_by.strftime("%H:%M"),
            "tz": self.timezone,
            "days": [DAY_NAMES[d - 1] for d in self.weekdays],
            "lag_days": self.lag_days,
            "effective_from": self.effective_from.isoformat(),
        }


@dataclass(frozen=True)
class LateInput:
    client_id: str
    entity: str
    business_date: date
    due_at: datetime


# -- parsing (the CLI's arguments) --------------------------------------------------------


def parse_entities(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    unknown = [n for n in names if n not in ENTITIES]
    if not names or unknown:
        raise ExpectationError(
            f"--entities {value!r}: expected a comma-separated list of {', '.join(ENTITIES)}"
        )
    return names


def parse_time(value: str) -> time:
    match = re.fullmatch(r"([01][0-9]|2[0-3]):([0-5][0-9])", value)
    if not match:
        raise ExpectationError(f"--by {value!r} is not a time of day (HH:MM, 24-hour)")
    return time(int(match[1]), int(match[2]))


def parse_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ExpectationError(
            f"--tz {value!r} is not an IANA time zone (e.g. Europe/Berlin)"
        ) from None
    return value


def parse_days(value: str) -> tuple[int, ...]:
    """`mon-fri`, `mon,wed,fri`, `sat-sun`, `daily`."""
    if value.strip().lower() in ("daily", "all", "mon-sun"):
        return tuple(range(1, 8))
    days: set[int] = set()
    for part in value.lower().split(","):
        bounds = part.strip().split("-")
        try:
            numbers = [DAY_NAMES.index(b.strip()[:3]) + 1 for b in bounds]
        except ValueError:
            numbers = []
        if len(numbers) == 1:
            days.add(numbers[0])
        elif len(numbers) == 2 and numbers[0] <= numbers[1]:
            days.update(range(numbers[0], numbers[1] + 1))
        else:
            raise ExpectationError(
                f"--days {value!r}: expected weekdays like mon-fri or mon,wed,fri"
            )
    return tuple(sorted(days))


# -- storage ---------------------------------------------------------------------------------


def set_expectation(conn: psycopg.Connection, expectation: Expectation) -> None:
    conn.execute(
        "INSERT INTO config.client_expectations (client_id, entities, due_by, timezone, weekdays,"
        " lag_days, effective_from) VALUES (%s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (client_id) DO UPDATE SET entities = excluded.entities, "
        "due_by = excluded.due_by, timezone = excluded.timezone, weekdays = excluded.weekdays,"
        " lag_days = excluded.lag_days, updated_at = now()",
        (
            expectation.client_id,
            list(expectation.entities),
            expectation.due_by,
            expectation.timezone,
            list(expectation.weekdays),
            expectation.lag_days,
            expectation.effective_from,
        ),
    )


def get_expectations(conn: psycopg.Connection, client_id: str | None = None) -> list[Expectation]:
    rows = conn.execute(
        "SELECT client_id, entities, due_by, timezone, weekdays, lag_days, effective_from "
        "FROM config.client_expectations WHERE %(c)s::text IS NULL OR client_id = %(c)s "
        "ORDER BY client_id",
        {"c": client_id},
    ).fetchall()
    return [Expectation(r[0], tuple(r[1]), r[2], r[3], tuple(r[4]), r[5], r[6]) for r in rows]


# -- the checker ---------------------------------------------------------------------------


def scheduled_time(event: dict[str, Any]) -> datetime | None:
    """The due time of the schedule that invoked the checker (an EventBridge scheduled event's
    `time`; the local scheduler's clock), so a run checks as of its window, retries included;
    None for another invocation (the current time then)."""
    value = event.get("time") if event.get("detail-type") == "Scheduled Event" else None
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"scheduled event time {value!r} is not an ISO 8601 time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def due_inputs(expectation: Expectation, now: datetime) -> list[LateInput]:
    """Every expected input of the look-back window whose due time has passed at `now`."""
    today = now.astimezone(ZoneInfo(expectation.timezone)).date()
    first = max(expectation.effective_from, today - timedelta(days=LOOKBACK_DAYS))
    due: list[LateInput] = []
    day = first
    while day <= today:
        if day.isoweekday() in expectation.weekdays and expectation.due_at(day) <= now:
            due.extend(
                LateInput(expectation.client_id, entity, day, expectation.due_at(day))
                for entity in expectation.entities
            )
        day += timedelta(days=1)
    return due


# The due inputs that have not arrived and are not known late yet become late, in one
# statement: an input has arrived when it has a current load that is loaded or rejected.
MARK_LATE = """
INSERT INTO audit.late_inputs (client_id, entity, business_date, due_at, detected_at)
SELECT d.client_id, d.entity, d.business_date, d.due_at, %(now)s
FROM unnest(%(clients)s::text[], %(entities)s::text[], %(dates)s::date[],
            %(due)s::timestamptz[]) AS d(client_id, entity, business_date, due_at)
WHERE NOT EXISTS (
    SELECT 1 FROM audit.file_loads f
    WHERE f.client_id = d.client_id AND f.entity = d.entity
      AND f.business_date = d.business_date AND f.is_current
      AND f.status IN ('loaded', 'rejected'))
ON CONFLICT (client_id, entity, business_date) DO NOTHING
RETURNING client_id, entity, business_date, due_at
"""

# Late inputs that have arrived since: cleared.
CLEAR_ARRIVED = """
UPDATE audit.late_inputs l SET cleared_at = %(now)s
WHERE l.cleared_at IS NULL AND (%(client)s::text IS NULL OR l.client_id = %(client)s)
  AND EXISTS (
    SELECT 1 FROM audit.file_loads f
    WHERE f.client_id = l.client_id AND f.entity = l.entity
      AND f.business_date = l.business_date AND f.is_current
      AND f.status IN ('loaded', 'rejected'))
RETURNING l.client_id, l.entity, l.business_date, l.due_at
"""


def check(
    conn: psycopg.Connection, now: datetime | None = None, client_id: str | None = None
) -> tuple[list[LateInput], list[LateInput]]:
    """One checker run at `now` (the clock is injected; default the current time). Returns the
    inputs found late by this run and those cleared by it."""
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    expectations = {e.client_id: e for e in get_expectations(conn, client_id)}
    due = [d for e in expectations.values() for d in due_inputs(e, now)]
    with conn.transaction():
        cleared = [
            LateInput(*row)
            for row in conn.execute(CLEAR_ARRIVED, {"now": now, "client": client_id})
        ]
        late = [
            LateInput(*row)
            for row in conn.execute(
                MARK_LATE,
                {
                    "now": now,
                    "clients": [d.client_id for d in due],
                    "entities": [d.entity for d in due],
                    "dates": [d.business_date for d in due],
                    "due": [d.due_at for d in due],
                },
            )
        ]
    # After the commit: the flag, the partner's notice and the alarm; each is idempotent, and
    # `report` below repeats them for inputs recorded late whose effects a crash cut short.
    for found in cleared:
        set_late_flag(found, False)
    for found in unreported(conn, client_id):
        if found.client_id in expectations:
            report(conn, found, expectations[found.client_id])
    for found in late:
        alarms.breach(
            alarms.INPUTS_LATE,
            f"{found.client_id}: {found.entity} of {found.business_date} was due at "
            f"{found.due_at.isoformat()} and has not arrived",
            client_id=found.client_id,
        )
    return late, cleared


# Late inputs (not cleared) whose partner notice is not recorded yet: the ones found late just
# now, and any whose effects a crash cut short after the commit.
UNREPORTED = """
SELECT l.client_id, l.entity, l.business_date, l.due_at FROM audit.late_inputs l
WHERE l.cleared_at IS NULL AND (%(client)s::text IS NULL OR l.client_id = %(client)s)
  AND NOT EXISTS (
    SELECT 1 FROM audit.partner_notices n
    WHERE n.client_id = l.client_id
      AND n.cause = 'late/' || l.entity || '/' || to_char(l.business_date, 'YYYYMMDD'))
ORDER BY l.client_id, l.business_date, l.entity
"""


def unreported(conn: psycopg.Connection, client_id: str | None) -> list[LateInput]:
    return [LateInput(*row) for row in conn.execute(UNREPORTED, {"client": client_id})]


def report(conn: psycopg.Connection, found: LateInput, expectation: Expectation) -> None:
    """The metastore flag, the metric and the partner's notice of one late input."""
    set_late_flag(found, True)
    metrics.emit("operations", found.entity, metrics.INPUTS_LATE, 1, client_id=found.client_id)
    file_name = f"{found.entity}_{found.business_date:%Y%m%d}.csv"
    local_due = found.due_at.astimezone(ZoneInfo(expectation.timezone))
    notices.notify(
        conn,
        notices.Notice(
            found.client_id,
            found.business_date,
            cause=f"late/{found.entity}/{found.business_date:%Y%m%d}",
            message=(
                f"{file_name}: not received; it was due by {local_due:%H:%M} "
                f"{expectation.timezone} on {local_due:%Y-%m-%d}"
            ),
        ),
    )


def set_late_flag(found: LateInput, late: bool) -> None:
    """`<prefix>_late` on the item of the input's client and date (absent when not late)."""
    prefix = metastore.INPUT_PREFIX[found.entity]
    key = metastore.item_key(found.client_id, found.business_date.strftime("%Y%m%d"))
    try:
        if late:
            metastore.table().update_item(
                Key=key,
                UpdateExpression="SET #late = :true",
                # Not when the input was published meanwhile (it arrived after all).
                ConditionExpression="attribute_not_exists(#persisted) OR #persisted = :false",
                ExpressionAttributeNames={
                    "#late": f"{prefix}_late",
                    "#persisted": f"{prefix}_persisted",
                },
                ExpressionAttributeValues={":true": True, ":false": False},
            )
        else:
            metastore.table().update_item(
                Key=key,
                UpdateExpression="REMOVE #late",
                ConditionExpression="attribute_exists(#late)",
                ExpressionAttributeNames={"#late": f"{prefix}_late"},
            )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise


def input_arrived(
    conn: psycopg.Connection, client_id: str, entity: str, business_date: date
) -> bool:
    """Persistence published a load of the input: a late record of it is cleared (the item's
    flag goes with the same metastore write, mark.input_attributes)."""
    cleared = conn.execute(
        "UPDATE audit.late_inputs SET cleared_at = clock_timestamp() WHERE client_id = %s "
        "AND entity = %s AND business_date = %s AND cleared_at IS NULL",
        (client_id, entity, business_date),
    )
    return cleared.rowcount > 0
