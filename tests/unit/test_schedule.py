"""The local scheduler's pure parts: rate and AWS cron expressions, coalescing of missed due
times, the pausable clock, schedule event configs, the checker's scheduled time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from dataharvest.ops import late
from dataharvest_local.schedule import (
    ScheduleClock,
    ScheduleError,
    ScheduleEvent,
    parse,
    scheduled_event,
)

ANCHOR = datetime(2030, 6, 1, 10, 7, 30, tzinfo=UTC)


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def test_rate_counts_from_the_anchor() -> None:
    rate = parse("rate(15 minutes)")
    assert rate.next_after(ANCHOR, ANCHOR) == ANCHOR + timedelta(minutes=15)
    assert rate.next_after(ANCHOR + timedelta(minutes=15), ANCHOR) == ANCHOR + timedelta(minutes=30)
    assert rate.next_after(ANCHOR + timedelta(minutes=44), ANCHOR) == ANCHOR + timedelta(minutes=45)
    assert parse("rate(1 day)").next_after(ANCHOR, ANCHOR) == ANCHOR + timedelta(days=1)
    assert parse("rate(2 hours)").next_after(ANCHOR, ANCHOR) == ANCHOR + timedelta(hours=2)


@pytest.mark.parametrize(
    "expression",
    ["rate(1 minutes)", "rate(5 minute)", "rate(0 minutes)", "rate(5 weeks)", "rate(x minutes)"],
)
def test_bad_rates(expression: str) -> None:
    with pytest.raises(ScheduleError):
        parse(expression)


@pytest.mark.parametrize(
    ("expression", "after", "due"),
    [
        # Weekdays at 06:00: from Saturday to Monday.
        ("cron(0 6 ? * MON-FRI *)", at(2030, 6, 1, 10, 0), at(2030, 6, 3, 6, 0)),
        ("cron(0 6 ? * 2-6 *)", at(2030, 6, 1, 10, 0), at(2030, 6, 3, 6, 0)),
        # Steps: every 15 minutes; strictly after the given time.
        ("cron(0/15 * * * ? *)", at(2030, 6, 1, 10, 7), at(2030, 6, 1, 10, 15)),
        ("cron(0/15 * * * ? *)", at(2030, 6, 1, 10, 15), at(2030, 6, 1, 10, 30)),
        ("cron(*/15 * * * ? *)", at(2030, 6, 1, 10, 45, 30), at(2030, 6, 1, 11, 0)),
        ("cron(5-20/5 8 * * ? *)", at(2030, 6, 1, 8, 16), at(2030, 6, 1, 8, 20)),
        ("cron(5-20/5 8 * * ? *)", at(2030, 6, 1, 8, 21), at(2030, 6, 2, 8, 5)),
        # Lists, month names, rolling into the next year.
        ("cron(0 0,12 1 JAN,JUL ? *)", at(2030, 7, 1, 12, 0), at(2031, 1, 1, 0, 0)),
        # L: the last day of the month (a leap February).
        ("cron(0 12 L * ? *)", at(2028, 2, 1, 0, 0), at(2028, 2, 29, 12, 0)),
        # W: the nearest weekday, within the month.
        ("cron(0 9 15W * ? *)", at(2030, 6, 1, 0, 0), at(2030, 6, 14, 9, 0)),
        ("cron(0 9 1W * ? *)", at(2030, 5, 31, 12, 0), at(2030, 6, 3, 9, 0)),
        ("cron(0 9 30W * ? *)", at(2030, 6, 20, 0, 0), at(2030, 6, 28, 9, 0)),
        ("cron(0 9 LW * ? *)", at(2030, 6, 20, 0, 0), at(2030, 6, 28, 9, 0)),
        # #: the nth weekday; nL: the last one (1 = SUN ... 7 = SAT).
        ("cron(0 10 ? * 6#3 *)", at(2030, 6, 1, 0, 0), at(2030, 6, 21, 10, 0)),
        ("cron(0 10 ? * FRI#3 *)", at(2030, 3, 1, 0, 0), at(2030, 3, 15, 10, 0)),
        ("cron(0 10 ? * 2L *)", at(2030, 6, 1, 0, 0), at(2030, 6, 24, 10, 0)),
        ("cron(0 10 ? * L *)", at(2030, 6, 1, 0, 0), at(2030, 6, 1, 10, 0)),
        # A year field.
        ("cron(30 23 ? * SUN 2031)", at(2030, 6, 1, 0, 0), at(2031, 1, 5, 23, 30)),
    ],
)
def test_cron_next_due(expression: str, after: datetime, due: datetime) -> None:
    assert parse(expression).next_after(after, ANCHOR) == due


def test_a_cron_past_its_last_year_is_never_due() -> None:
    cron = parse("cron(0 0 1 1 ? 2030)")
    with pytest.raises(ScheduleError, match="never due"):
        cron.next_after(at(2030, 1, 1, 0, 0), ANCHOR)
    assert cron.following(at(2030, 1, 1, 0, 0), ANCHOR) is None
    assert cron.following(at(2029, 6, 1, 0, 0), ANCHOR) == at(2030, 1, 1, 0, 0)
    # A clock that jumps past the last due time fires that one, then nothing.
    assert cron.latest_due(at(2030, 1, 1, 0, 0), at(2031, 6, 1, 0, 0), ANCHOR) == at(
        2030, 1, 1, 0, 0
    )


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("cron(0 6 * * *)", "6 fields"),
        ("cron(0 6 * * * *)", "exactly one"),
        ("cron(0 6 ? * ? *)", "exactly one"),
        ("cron(60 6 * * ? *)", "between 0 and 59"),
        ("cron(0 24 * * ? *)", "between 0 and 23"),
        ("cron(0 6 * FOO ? *)", "month"),
        ("cron(0 6 ? * FUN *)", "day-of-week"),
        ("cron(0/0 6 * * ? *)", "step"),
        ("cron(30-10 6 * * ? *)", "backwards"),
        ("cron(0 6 ? * 2#6 *)", "between 1 and 5"),
        ("cron(0 6 * * ? 1969)", "between 1970"),
        ("every 5 minutes", "rate"),
    ],
)
def test_bad_crons(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse(expression)


def test_missed_due_times_coalesce_into_the_latest() -> None:
    rate = parse("rate(15 minutes)")
    first = rate.next_after(ANCHOR, ANCHOR)
    assert rate.latest_due(first, first + timedelta(minutes=50), ANCHOR) == first + timedelta(
        minutes=45
    )
    cron = parse("cron(0 * * * ? *)")
    assert cron.latest_due(at(2030, 6, 1, 11, 0), at(2030, 6, 1, 14, 59), ANCHOR) == at(
        2030, 6, 1, 14, 0
    )
    assert cron.latest_due(at(2030, 6, 1, 11, 0), at(2030, 6, 1, 11, 0), ANCHOR) == at(
        2030, 6, 1, 11, 0
    )


def test_a_paused_clock_moves_only_when_told() -> None:
    clock = ScheduleClock(ANCHOR, paused=True)
    assert clock.paused and clock.now() == ANCHOR
    assert clock.advance(timedelta(minutes=20)) == ANCHOR + timedelta(minutes=20)
    assert clock.now() == ANCHOR + timedelta(minutes=20)
    with pytest.raises(ValueError, match="does not go back"):
        clock.set(ANCHOR)
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(timedelta(seconds=-1))
    clock.resume()
    assert not clock.paused
    assert ANCHOR + timedelta(minutes=20) <= clock.now() < ANCHOR + timedelta(minutes=21)
    running = ScheduleClock()
    assert abs(running.now() - datetime.now(UTC)) < timedelta(seconds=1)


def test_schedule_event_configs() -> None:
    assert ScheduleEvent.from_config("rate(15 minutes)") == [ScheduleEvent("rate(15 minutes)")]
    both = ScheduleEvent.from_config(
        {"rate": ["rate(1 hour)", "cron(0 6 ? * MON *)"], "input": {"k": 1}}
    )
    assert both == [
        ScheduleEvent("rate(1 hour)", {"k": 1}),
        ScheduleEvent("cron(0 6 ? * MON *)", {"k": 1}),
    ]
    assert ScheduleEvent.from_config({"rate": "rate(1 hour)", "enabled": False}) == []
    with pytest.raises(ScheduleError, match="inputTransformer"):
        ScheduleEvent.from_config({"rate": "rate(1 hour)", "inputTransformer": {}})


def test_the_checker_runs_as_of_the_scheduled_time() -> None:
    event = scheduled_event(at(2030, 6, 3, 4, 15), "eu-west-1", "123456789012", "arn:rule")
    assert event["time"] == "2030-06-03T04:15:00Z"
    assert late.scheduled_time(event) == at(2030, 6, 3, 4, 15)
    assert late.scheduled_time({}) is None  # a direct invocation: the current time
    with pytest.raises(ValueError, match="ISO 8601"):
        late.scheduled_time({"detail-type": "Scheduled Event", "time": "yesterday"})


class _Spec:
    name = "dataharvest-x-local-tick"


class _Worker:
    """A function instance that records its events and fails the first `failures` of them."""

    spec = _Spec()

    def __init__(self, failures: int = 0) -> None:
        self.events: list[dict] = []
        self.failures = failures

    def invoke(self, event: dict):
        from dataharvest_local.instances import Invocation, InvokeError

        self.events.append(event)
        if len(self.events) <= self.failures:
            raise InvokeError(f"{self.spec.name}: RuntimeError: boom {len(self.events)}")
        return Invocation(None, {})


class _Queue:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send_message(self, QueueUrl: str, MessageBody: str) -> None:
        self.sent.append({"url": QueueUrl, "body": json.loads(MessageBody)})


def _mapping(worker: _Worker, clock: ScheduleClock, queue: _Queue | None = None, **options):
    import threading

    from dataharvest_local.mappings import Activity
    from dataharvest_local.schedule import ScheduleMapping

    return ScheduleMapping(
        worker,  # type: ignore[arg-type]
        Activity(),
        threading.Event(),
        event=ScheduleEvent("rate(15 minutes)"),
        index=1,
        clock=clock,
        region="eu-west-1",
        account="123456789012",
        function_arn="arn:aws:lambda:eu-west-1:123456789012:function:tick",
        sqs=queue,
        on_failure_queue_url="https://queue/failures" if queue else None,
        **options,
    )


def test_a_schedule_fires_once_per_move_of_the_clock_as_of_the_latest_window() -> None:
    clock, worker = ScheduleClock(ANCHOR, paused=True), _Worker()
    mapping = _mapping(worker, clock)
    assert not mapping.poll_once() and mapping.pending() == "none"
    clock.advance(timedelta(minutes=50))
    assert mapping.pending() == "work"
    assert mapping.poll_once()
    (event,) = worker.events
    assert event["detail-type"] == "Scheduled Event" and event["source"] == "aws.events"
    assert event["time"] == f"{ANCHOR + timedelta(minutes=45):%Y-%m-%dT%H:%M:%SZ}"
    assert mapping.next_due == ANCHOR + timedelta(minutes=60)
    assert not mapping.poll_once() and mapping.pending() == "none"


def test_failures_are_retried_then_sent_to_the_destination() -> None:
    clock, worker, queue = ScheduleClock(ANCHOR, paused=True), _Worker(failures=3), _Queue()
    mapping = _mapping(worker, clock, queue, max_retry_attempts=2, retry_delay_cap=0)
    clock.advance(timedelta(minutes=15))
    assert mapping.poll_once()  # attempt 1 fails
    assert mapping.activity.failures_now()[0].attempt == 1
    assert mapping.pending() == "work"  # the retry is due at once (cap 0)
    assert mapping.poll_once() and mapping.poll_once()  # attempts 2 and 3 fail
    assert len(worker.events) == 3 and mapping.pending() == "none"
    assert mapping.activity.failures == 3 and mapping.activity.failures_now() == []
    (sent,) = queue.sent
    record = sent["body"]
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestPayload"] == worker.events[0] == worker.events[2]
    assert record["responsePayload"] == {"errorType": "RuntimeError", "errorMessage": "boom 3"}


def test_without_a_destination_an_exhausted_event_is_dropped_with_an_error(caplog) -> None:
    clock, worker = ScheduleClock(ANCHOR, paused=True), _Worker(failures=1)
    mapping = _mapping(worker, clock, max_retry_attempts=0)
    clock.advance(timedelta(minutes=15))
    assert mapping.poll_once()
    assert any(
        r.levelname == "ERROR" and "dropped after 1 attempts" in r.getMessage()
        for r in caplog.records
    )
