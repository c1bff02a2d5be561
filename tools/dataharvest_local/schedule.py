"""The local runner's scheduler: a function's `schedule` events (EventBridge rules in the cloud)
invoke it with a scheduled event at their due times, as asynchronous invocations.

- Expressions: `rate(N minute|minutes|hour|hours|day|days)` and the 6-field AWS cron syntax
  `cron(minutes hours day-of-month month day-of-week year)`, in UTC, with `*`, `?`, lists,
  ranges, steps, month and weekday names, `L` (last day of the month; `nL` the last weekday n),
  `W` (nearest weekday), `LW` and `#` (nth weekday) (`parse`). A rate's due times count from
  when the scheduler started, as a rule's count from its creation.
- Time comes from a `ScheduleClock`: real time by default; a paused clock only moves when told
  (`set`, `advance`), so tests decide when a schedule fires. Windows the clock jumped over are
  coalesced into one invocation at the latest of them (the event's `time`).
- A failed invocation is retried like an asynchronous Lambda invocation (the function's
  `maximumRetryAttempts`, default 2, after 60 s and then 120 s, capped by the stack's retry
  delay cap), reported while it waits (`dataharvest run` shows it), logged, and once retries are
  exhausted sent to the function's on-failure destination (`destinations.onFailure`, an SQS
  queue) as Lambda's invocation record; without one it is dropped with an error in the log.
"""

from __future__ import annotations

import calendar
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from dataharvest_local.instances import InvokeError, Worker
from dataharvest_local.mappings import Activity, Failure, Mapping

log = logging.getLogger(__name__)

# Asynchronous invocations: Lambda's defaults.
DEFAULT_MAX_RETRY_ATTEMPTS = 2
RETRY_DELAYS_S = (60, 120)
LAST_YEAR = 2199


class ScheduleError(ValueError):
    """A schedule expression the scheduler (and EventBridge) would not accept."""


# -- the clock ------------------------------------------------------------------------------


class ScheduleClock:
    """The time the scheduler sees: real time, or paused and moved by hand. It never goes back
    (a due time, once fired, stays fired)."""

    def __init__(self, start: datetime | None = None, paused: bool = False) -> None:
        self._lock = threading.Lock()
        start = start or datetime.now(UTC)
        if start.tzinfo is None:
            raise ValueError("the schedule clock needs a timezone-aware start")
        self._paused_at: datetime | None = start if paused else None
        self._offset = start - datetime.now(UTC)

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def now(self) -> datetime:
        with self._lock:
            if self._paused_at is not None:
                return self._paused_at
            return datetime.now(UTC) + self._offset

    def pause(self) -> None:
        with self._lock:
            if self._paused_at is None:
                self._paused_at = datetime.now(UTC) + self._offset

    def resume(self) -> None:
        """Run on from the paused time at real speed."""
        with self._lock:
            if self._paused_at is not None:
                self._offset = self._paused_at - datetime.now(UTC)
                self._paused_at = None

    def set(self, when: datetime) -> datetime:
        if when.tzinfo is None:
            raise ValueError("the schedule clock is set to a timezone-aware time")
        with self._lock:
            current = (
                self._paused_at if self._paused_at is not None else datetime.now(UTC) + self._offset
            )
            if when < current:
                raise ValueError(f"the schedule clock does not go back ({when} < {current})")
            if self._paused_at is not None:
                self._paused_at = when
            else:
                self._offset = when - datetime.now(UTC)
            return when

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("the schedule clock does not go back")
        return self.set(self.now() + delta)


# -- expressions ----------------------------------------------------------------------------


class Schedule:
    expression: str

    def next_after(self, when: datetime, anchor: datetime) -> datetime:
        """The first due time strictly after `when` (UTC, whole minutes for cron)."""
        raise NotImplementedError

    def following(self, when: datetime, anchor: datetime) -> datetime | None:
        """`next_after`, or None when the schedule is never due again (a cron's last year)."""
        try:
            return self.next_after(when, anchor)
        except ScheduleError:
            return None

    def latest_due(self, first: datetime, now: datetime, anchor: datetime) -> datetime:
        """The last due time at or before `now`, counting from the due time `first`."""
        latest = first
        while (following := self.following(latest, anchor)) is not None and following <= now:
            latest = following
        return latest


_RATE = re.compile(r"rate\(\s*([0-9]+)\s+([a-z]+)\s*\)")
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Rate(Schedule):
    expression: str
    period: timedelta

    def next_after(self, when: datetime, anchor: datetime) -> datetime:
        # Due at anchor + k * period, k >= 1.
        if when < anchor:
            return anchor + self.period
        elapsed = (when - anchor) // self.period
        return anchor + (elapsed + 1) * self.period

    def latest_due(self, first: datetime, now: datetime, anchor: datetime) -> datetime:
        if now < first:
            return first
        return first + ((now - first) // self.period) * self.period


_MONTHS = {name: i for i, name in enumerate(calendar.month_abbr) if name}
_MONTHS = {k.upper(): v for k, v in _MONTHS.items()}
_WEEKDAYS = {n: i + 1 for i, n in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}


def _value(token: str, low: int, high: int, names: dict[str, int], what: str) -> int:
    upper = token.upper()
    if upper in names:
        return names[upper]
    if not token.isdigit():
        raise ScheduleError(f"{what}: {token!r} is not a value between {low} and {high}")
    value = int(token)
    if not low <= value <= high:
        raise ScheduleError(f"{what}: {value} is not between {low} and {high}")
    return value


def _field(
    text: str, low: int, high: int, what: str, names: dict[str, int] | None = None
) -> frozenset[int]:
    """`*`, `N`, `A-B`, `*/S`, `N/S`, `A-B/S` and comma-separated lists of them."""
    names = names or {}
    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"{what}: {part!r} has no positive step")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start = _value(first, low, high, names, what)
            end = _value(last, low, high, names, what)
            if start > end:
                raise ScheduleError(f"{what}: the range {base!r} runs backwards")
        else:
            start = _value(base, low, high, names, what)
            end = high if slash else start
        values.update(range(start, end + 1, step))
    if not values:
        raise ScheduleError(f"{what}: {text!r} selects nothing")
    return frozenset(values)


def aws_weekday(day: date) -> int:
    """EventBridge's day-of-week number: 1 = Sunday ... 7 = Saturday."""
    return day.isoweekday() % 7 + 1


def _last_day(day: date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


def _nearest_weekday(year: int, month: int, target: int) -> int:
    """`nW`: the weekday (Mon-Fri) nearest to day `target`, never in another month."""
    last = calendar.monthrange(year, month)[1]
    target = min(target, last)
    weekday = date(year, month, target).isoweekday()
    if weekday == 6:  # Saturday: Friday, or Monday when the 1st is a Saturday
        return target - 1 if target > 1 else target + 2
    if weekday == 7:  # Sunday: Monday, or Friday when it is the month's last day
        return target + 1 if target < last else target - 2
    return target


DayRule = Callable[[date], bool]


def _day_of_month(text: str) -> DayRule:
    what = "day-of-month"
    upper = text.upper()
    if upper == "L":
        return lambda d: d.day == _last_day(d)
    if upper == "LW":
        return lambda d: d.day == _nearest_weekday(d.year, d.month, _last_day(d))
    if upper.endswith("W"):
        target = _value(upper[:-1], 1, 31, {}, what)
        return lambda d: d.day == _nearest_weekday(d.year, d.month, target)
    days = _field(text, 1, 31, what)
    return lambda d: d.day in days


def _day_of_week(text: str) -> DayRule:
    what = "day-of-week"
    upper = text.upper()
    if upper == "L":
        return lambda d: aws_weekday(d) == 7
    if upper.endswith("L"):
        weekday = _value(upper[:-1], 1, 7, _WEEKDAYS, what)
        return lambda d: aws_weekday(d) == weekday and d.day + 7 > _last_day(d)
    if "#" in upper:
        day_text, _, nth_text = upper.partition("#")
        weekday = _value(day_text, 1, 7, _WEEKDAYS, what)
        nth = _value(nth_text, 1, 5, {}, what)
        return lambda d: aws_weekday(d) == weekday and (d.day - 1) // 7 + 1 == nth
    weekdays = _field(text, 1, 7, what, _WEEKDAYS)
    return lambda d: aws_weekday(d) in weekdays


@dataclass(frozen=True)
class Cron(Schedule):
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    months: frozenset[int]
    years: frozenset[int]
    day: DayRule = field(compare=False)

    def matches_day(self, day: date) -> bool:
        return day.year in self.years and day.month in self.months and self.day(day)

    def next_after(self, when: datetime, anchor: datetime) -> datetime:
        start = when.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.date()
        hours, minutes = sorted(self.hours), sorted(self.minutes)
        while day.year <= max(self.years):
            if day.year not in self.years:
                day = date(day.year + 1, 1, 1)
                continue
            if day.month not in self.months:
                day = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
                continue
            if self.day(day):
                for hour in hours:
                    for minute in minutes:
                        candidate = datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
                        if candidate >= start:
                            return candidate
            day += timedelta(days=1)
        raise ScheduleError(f"{self.expression} is never due after {when.isoformat()}")


def parse(expression: str) -> Schedule:
    """A `rate(...)` or `cron(...)` schedule expression, as EventBridge accepts them."""
    text = expression.strip()
    rate = _RATE.fullmatch(text)
    if rate:
        value, unit = int(rate[1]), rate[2]
        singular = unit.removesuffix("s")
        if singular not in _RATE_UNITS or value == 0:
            raise ScheduleError(f"{expression}: expected rate(N minutes|hours|days), N > 0")
        if (value == 1) != (unit == singular):
            raise ScheduleError(
                f"{expression}: the unit is singular for 1 and plural otherwise "
                f"(rate(1 {singular}), rate(5 {singular}s))"
            )
        return Rate(text, timedelta(seconds=value * _RATE_UNITS[singular]))
    if not (text.startswith("cron(") and text.endswith(")")):
        raise ScheduleError(f"{expression!r}: expected rate(...) or cron(...)")
    fields = text[len("cron(") : -1].split()
    if len(fields) != 6:
        raise ScheduleError(
            f"{expression}: cron takes 6 fields (minutes hours day-of-month month day-of-week "
            f"year), got {len(fields)}"
        )
    minute, hour, dom, month, dow, year = fields
    if (dom == "?") == (dow == "?"):
        raise ScheduleError(
            f"{expression}: exactly one of day-of-month and day-of-week must be '?'"
        )
    return Cron(
        expression=text,
        minutes=_field(minute, 0, 59, "minutes"),
        hours=_field(hour, 0, 23, "hours"),
        months=_field(month, 1, 12, "month", _MONTHS),
        years=_field(year, 1970, LAST_YEAR, "year"),
        day=_day_of_week(dow) if dom == "?" else _day_of_month(dom),
    )


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleEvent:
    """One `schedule` event of a function, as serverless.yml declares it."""

    expression: str
    input: Any = None  # the rule's constant input, sent instead of the scheduled event

    @staticmethod
    def from_config(config: Any) -> list[ScheduleEvent]:
        """`schedule: rate(...)`, or `schedule: {rate: EXPR | [EXPR...], enabled, input}`;
        a disabled rule gives none."""
        if isinstance(config, str):
            return [ScheduleEvent(config)]
        if not isinstance(config, dict) or "rate" not in config:
            raise ScheduleError(f"schedule event {config!r}: expected an expression or rate:")
        unsupported = {"inputPath", "inputTransformer"} & set(config)
        if unsupported:
            raise ScheduleError(f"schedule event: {', '.join(sorted(unsupported))} not supported")
        if config.get("enabled", True) is False:
            return []
        rates = config["rate"] if isinstance(config["rate"], list) else [config["rate"]]
        payload = config.get("input")
        if isinstance(payload, str):
            payload = json.loads(payload)
        return [ScheduleEvent(str(r), payload) for r in rates]


def scheduled_event(at: datetime, region: str, account: str, rule_arn: str) -> dict[str, Any]:
    """What EventBridge sends a function when its rule is due."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


@dataclass
class _Attempt:
    request_id: str
    event: dict[str, Any]
    due_label: str
    attempt: int  # 0 = the first invocation
    retry_at: float = 0.0
    error: str = ""


class ScheduleMapping(Mapping):
    """One schedule of one function: fires its due times on the clock, retries failures."""

    def __init__(
        self,
        worker: Worker,
        activity: Activity,
        stop: threading.Event,
        *,
        event: ScheduleEvent,
        index: int,
        clock: ScheduleClock,
        region: str,
        account: str,
        function_arn: str,
        max_retry_attempts: int = DEFAULT_MAX_RETRY_ATTEMPTS,
        retry_delay_cap: int | None = None,
        sqs: Any = None,
        on_failure_queue_url: str | None = None,
    ):
        super().__init__(worker, activity, stop, f"schedule:{worker.spec.name}:{index}")
        self.schedule = parse(event.expression)
        self.input = event.input
        self.clock = clock
        self.region = region
        self.account = account
        self.function_arn = function_arn
        self.rule_arn = (
            f"arn:aws:events:{region}:{account}:rule/{worker.spec.name}-schedule-{index}"
        )
        self.max_retry_attempts = max_retry_attempts
        self.retry_delay_cap = retry_delay_cap
        self.sqs = sqs
        self.on_failure_queue_url = on_failure_queue_url
        self.anchor = clock.now()
        self._lock = threading.Lock()
        # None: never due again (a cron whose last year is past).
        self.next_due = self.schedule.following(self.anchor, self.anchor)
        self.retries: list[_Attempt] = []
        self._busy = False
        self.fired: list[datetime] = []  # the due times invoked, in order

    # -- polling ----------------------------------------------------------------------------

    def poll_once(self) -> bool:
        now_real = time.time()
        try:
            with self._lock:
                # Taken work counts as pending until it is done (the quiet check must not see
                # a due time gone and no invocation begun yet).
                self._busy = True
                due_retries = [r for r in self.retries if r.retry_at <= now_real]
                self.retries = [r for r in self.retries if r.retry_at > now_real]
                now = self.clock.now()
                fire_at = None
                if self.next_due is not None and now >= self.next_due:
                    fire_at = self.schedule.latest_due(self.next_due, now, self.anchor)
                    self.next_due = self.schedule.following(fire_at, self.anchor)
            for retry in due_retries:
                self._attempt(retry)
            if fire_at is not None:
                self._fire(fire_at)
            return bool(due_retries) or fire_at is not None
        finally:
            with self._lock:
                self._busy = False

    def _fire(self, fire_at: datetime) -> None:
        self.fired.append(fire_at)
        event = (
            self.input
            if self.input is not None
            else scheduled_event(fire_at, self.region, self.account, self.rule_arn)
        )
        log.info(
            "schedule due: %s %s at %s",
            self.worker.spec.name,
            self.schedule.expression,
            fire_at.isoformat(),
        )
        label = f"{self.schedule.expression} at {fire_at:%Y-%m-%dT%H:%M}Z"
        self._attempt(_Attempt(str(uuid.uuid4()), event, label, 0))

    def _attempt(self, attempt: _Attempt) -> None:
        try:
            self.invoke(attempt.event)
        except InvokeError as error:
            self._failed(attempt, str(error), error.crashed)
            return
        self.activity.delivered(self.name, [attempt.request_id])

    def _failed(self, attempt: _Attempt, error: str, crashed: bool) -> None:
        attempt.error = error
        if attempt.attempt < self.max_retry_attempts:
            delay = RETRY_DELAYS_S[min(attempt.attempt, len(RETRY_DELAYS_S) - 1)]
            if self.retry_delay_cap is not None:
                delay = min(delay, self.retry_delay_cap)
            log.warning(
                "scheduled invocation failed: %s (%s), attempt %d of %d, retrying in %d s: %s",
                self.worker.spec.name,
                attempt.due_label,
                attempt.attempt + 1,
                self.max_retry_attempts + 1,
                delay,
                error,
            )
            retry = _Attempt(
                attempt.request_id,
                attempt.event,
                attempt.due_label,
                attempt.attempt + 1,
                retry_at=time.time() + delay,
                error=error,
            )
            self.activity.failed(
                Failure(
                    function=self.worker.spec.name,
                    source=self.name,
                    message_id=attempt.request_id,
                    key=f"schedule {attempt.due_label}",
                    attempt=attempt.attempt + 1,
                    max_attempts=self.max_retry_attempts + 1,
                    error=error,
                    retry_at=retry.retry_at,
                    crashed=crashed,
                )
            )
            with self._lock:
                self.retries.append(retry)
            return
        self.activity.delivered(self.name, [attempt.request_id])
        if not self.on_failure_queue_url:
            log.error(
                "scheduled invocation dropped after %d attempts (no on-failure destination): "
                "%s (%s): %s",
                attempt.attempt + 1,
                self.worker.spec.name,
                attempt.due_label,
                error,
            )
            return
        log.error(
            "scheduled invocation failed %d times, sent to the on-failure destination: %s (%s): %s",
            attempt.attempt + 1,
            self.worker.spec.name,
            attempt.due_label,
            error,
        )
        self.sqs.send_message(
            QueueUrl=self.on_failure_queue_url,
            MessageBody=json.dumps(self.failure_record(attempt)),
        )

    def failure_record(self, attempt: _Attempt) -> dict[str, Any]:
        """What Lambda sends an asynchronous invocation's on-failure destination."""
        # InvokeError texts are "<function>: <Type>: <message>".
        parts = attempt.error.split(": ", 2)
        error_type = parts[1] if len(parts) == 3 else "Unhandled"
        message = parts[2] if len(parts) == 3 else attempt.error
        return {
            "version": "1.0",
            "timestamp": datetime.now(UTC).isoformat(),
            "requestContext": {
                "requestId": attempt.request_id,
                "functionArn": self.function_arn,
                "condition": "RetriesExhausted",
                "approximateInvokeCount": attempt.attempt + 1,
            },
            "requestPayload": attempt.event,
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "responsePayload": {"errorType": error_type, "errorMessage": message},
        }

    def pending(self) -> str:
        with self._lock:
            if self._busy or (self.next_due is not None and self.clock.now() >= self.next_due):
                return "work"
            if not self.retries:
                return "none"
            return "work" if min(r.retry_at for r in self.retries) <= time.time() else "retries"

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "function": self.worker.spec.name,
                "expression": self.schedule.expression,
                "next_due": self.next_due.isoformat() if self.next_due else None,
                "fired": len(self.fired),
                "retrying": len(self.retries),
            }
