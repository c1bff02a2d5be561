"""The operations commands of `dataharvest` (issue 17): `uploads`, `late check`, `schedule`,
`alarms evaluate`, `config set-expectations` / `set-alarm-reject-ratio`, what `run` and
`remove` print per key, and `--stage NAME`. Registered by dataharvest_local.cli.build_parser."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from datetime import UTC, date, datetime
from typing import Any

from rich.table import Table
from rich.text import Text

from dataharvest.ops import alarms, late, outcomes
from dataharvest_local import ops_stage as stage
from dataharvest_local import progress


def _cli():
    from dataharvest_local import cli

    return cli


def ensure_stack() -> Any:
    """The local stack's info (started when not running); None against a deployed stage."""
    if stage.target():
        return None
    from dataharvest_local import client

    return client.ensure_stack(_cli().home())


def require_client(conn: Any, client_id: str) -> None:
    if not outcomes.known_client(conn, client_id):
        raise _cli().usage_error(f"unknown client {client_id!r}: nothing was ever uploaded for it")


def parse_date(value: str) -> date:
    digits = _cli()._yyyymmdd(value)
    return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))


def parse_instant(value: str | None) -> datetime | None:
    """`--at`: an ISO 8601 time (UTC unless it names an offset)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _cli().usage_error(
            f"{value!r} is not a time (ISO 8601, e.g. 2024-01-02T06:30:00+01:00)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- uploads ---------------------------------------------------------------------------------


def cmd_uploads(args: argparse.Namespace) -> int:
    from dataharvest import db

    day = parse_date(args.date) if args.date else None
    ensure_stack()
    with db.connect() as conn:
        require_client(conn, args.client)
        rows = outcomes.uploads(conn, args.client, day)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title=f"uploads of {args.client}" + (f" on {args.date}" if args.date else ""))
    for column in (
        "load",
        "date",
        "entity",
        "key",
        "status",
        "rows",
        "loaded",
        "rejected",
        "current",
        "finished",
        "reason",
    ):
        table.add_column(column)
    for r in rows:
        table.add_row(
            str(r["load_id"]),
            r["business_date"] or "",
            r["entity"] or "",
            r["source_key"],
            r["status"],
            str(r["rows_total"]),
            str(r["rows_loaded"]),
            str(r["rows_rejected"]),
            "yes" if r["is_current"] else "",
            r["finished_at"] or "",
            r["reason"] or "",
        )
    _cli().out.print(table)
    return 0


# -- run / remove: what became of each key ---------------------------------------------------


def print_outcomes(
    uploaded: list[tuple[str, str | None]], as_json: bool
) -> list[outcomes.KeyOutcome]:
    """One line per key: loaded (rows, rejections), rejected whole (reason), unroutable
    (reason), unchanged, retracted. With --json on stderr (stdout stays the status JSON)."""
    from dataharvest import db

    with db.connect() as conn:
        found = [outcomes.key_outcome(conn, key, version) for key, version in uploaded]
    cli = _cli()
    colour = {"loaded": "green", "rejected": "red", "unroutable": "red", "retracted": "yellow"}
    target = cli.console if as_json else cli.out
    for item in found:
        style = colour.get(item.outcome, "default")
        # One line per key, never wrapped: it is read (and grepped) whole.
        target.print(
            Text.assemble((item.key, "bold"), ": ", (item.outcome, style), f": {item.detail}"),
            soft_wrap=True,
        )
    return found


# -- late inputs and alarms ------------------------------------------------------------------


def cmd_late(args: argparse.Namespace) -> int:
    from dataharvest import db

    now = parse_instant(args.at)
    ensure_stack()
    os.environ[alarms.LOCAL_FLAG] = "1"
    with db.connect() as conn:
        found, cleared = late.check(conn, now, args.client)
    transitions = alarms.evaluate_queue_ages(now)
    if args.json:
        print(
            json.dumps(
                {
                    "late": [_late_dict(f) for f in found],
                    "cleared": [_late_dict(f) for f in cleared],
                    "alarms": [t.__dict__ for t in transitions],
                },
                indent=2,
            )
        )
        return 0
    console = _cli().console
    for f in found:
        console.print(
            f"late: {f.client_id} {f.entity} {f.business_date} (due {f.due_at:%Y-%m-%d %H:%M} UTC)"
        )
    for f in cleared:
        console.print(f"arrived since: {f.client_id} {f.entity} {f.business_date}")
    console.print(f"late check: {len(found)} input(s) newly late, {len(cleared)} cleared")
    return 0


def _late_dict(found: late.LateInput) -> dict[str, str]:
    return {
        "client_id": found.client_id,
        "entity": found.entity,
        "business_date": found.business_date.isoformat(),
        "due_at": found.due_at.isoformat(),
    }


def cmd_alarms(args: argparse.Namespace) -> int:
    now = parse_instant(args.at)
    ensure_stack()
    os.environ[alarms.LOCAL_FLAG] = "1"
    transitions = alarms.evaluate_queue_ages(now)
    for t in transitions:
        _cli().console.print(f"{t.alarm}: {t.state}" + (" (notified)" if t.notified else ""))
    return 0


# -- the local scheduler ---------------------------------------------------------------------


def parse_duration(value: str) -> int:
    """`--advance`: `90s`, `15m`, `2h`, `3d` or plain seconds."""
    found = re.fullmatch(r"([0-9]{1,7})([smhd]?)", value.strip())
    if not found:
        raise _cli().usage_error(f"--advance {value!r}: expected a duration like 90s, 15m, 2h, 3d")
    return int(found[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[found[2]]


def cmd_schedule(args: argparse.Namespace) -> int:
    """The local stack's schedule clock and each function's schedule; `--advance` moves the
    clock forward (the due schedules run, and the command waits until quiet)."""
    from dataharvest_local import client

    seconds = parse_duration(args.advance) if args.advance else None
    info = ensure_stack()
    path = "/schedule" + (f"?advance={seconds}" if seconds is not None else "")
    body = client.control(info, path, timeout=30)
    if seconds and not args.no_wait:
        _cli()._wait_quiet(info, f"schedule clock +{args.advance}", args.progress)
        body = client.control(info, "/schedule", timeout=30)
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    clock = "paused" if body["paused"] else "running"
    table = Table(title=f"schedules (clock {body['now']}, {clock})")
    for column in ("function", "expression", "next due", "runs", "retrying"):
        table.add_column(column)
    for entry in body["schedules"]:
        table.add_row(
            entry["function"],
            entry["expression"],
            entry["next_due"] or "never again",
            str(entry["fired"]),
            str(entry["retrying"]),
        )
    _cli().out.print(table)
    return 0


# -- config additions ------------------------------------------------------------------------


def config_action(conn: Any, args: argparse.Namespace) -> bool:
    """The operations `config` actions; False when `args.action` is not one of them."""
    console = _cli().console
    if args.action == "set-expectations":
        try:
            expectation = late.Expectation(
                client_id=args.client,
                entities=late.parse_entities(args.entities),
                due_by=late.parse_time(args.by),
                timezone=late.parse_timezone(args.tz),
                weekdays=late.parse_days(args.days),
                lag_days=args.lag_days,
                effective_from=datetime.now(UTC).date(),
            )
        except late.ExpectationError as error:
            raise _cli().usage_error(str(error)) from None
        if not 0 <= args.lag_days <= 31:
            raise _cli().usage_error(f"--lag-days {args.lag_days}: between 0 and 31")
        with conn.transaction():
            late.set_expectation(conn, expectation)
        stored = late.get_expectations(conn, args.client)[0]
        print(json.dumps(stored.as_dict(), indent=2))
        return True
    if args.action == "set-alarm-reject-ratio":
        try:
            with conn.transaction():
                ratio = outcomes.set_alarm_reject_ratio(conn, args.client, args.ratio)
        except ValueError as error:
            raise _cli().usage_error(f"config set-alarm-reject-ratio: {error}") from None
        console.print(f"{args.client}: alarm when more than {ratio} of a file's rows are rejected")
        return True
    return False


def add_config_parsers(csub: Any) -> None:
    expect = csub.add_parser(
        "set-expectations", help="which inputs a client delivers and by when (late-file alarms)"
    )
    expect.add_argument("--client", required=True)
    expect.add_argument("--entities", required=True, help="e.g. clients,portfolios,accounts")
    expect.add_argument("--by", required=True, metavar="HH:MM", help="due time, local")
    expect.add_argument("--tz", required=True, help="IANA time zone, e.g. Europe/Berlin")
    expect.add_argument("--days", default="mon-fri", help="business-date weekdays (mon-fri)")
    expect.add_argument(
        "--lag-days",
        type=int,
        default=0,
        help="the input of date D is due on D + this many days (default 0)",
    )
    ratio = csub.add_parser(
        "set-alarm-reject-ratio", help="share of rejected rows in a file that raises the alarm"
    )
    ratio.add_argument("--client", required=True)
    ratio.add_argument("ratio", metavar="RATIO", help="between 0 and 1 (default 0.05)")


def add_parsers(sub: Any) -> None:
    uploads = sub.add_parser("uploads", help="the load history of a client (audit.file_loads)")
    uploads.add_argument("--client", required=True)
    uploads.add_argument("--date", help="YYYY-MM-DD or YYYYMMDD")
    uploads.add_argument("--json", action="store_true")
    uploads.set_defaults(func=cmd_uploads)

    late_parser = sub.add_parser("late", help="late and missing inputs")
    lsub = late_parser.add_subparsers(dest="action", required=True)
    check = lsub.add_parser("check", help="the scheduled checker (checkLate), run now")
    check.add_argument("--at", help="the time to check as of (ISO 8601; default now)")
    check.add_argument("--client", help="only this client")
    check.add_argument("--json", action="store_true")
    late_parser.set_defaults(func=cmd_late)

    schedule = sub.add_parser(
        "schedule", help="the local scheduler: its clock and each function's schedule"
    )
    schedule.add_argument(
        "--advance", metavar="DURATION", help="move the clock forward (90s, 15m, 2h, 3d)"
    )
    schedule.add_argument("--no-wait", action="store_true", help="do not wait until quiet")
    schedule.add_argument("--json", action="store_true")
    progress.add_flags(schedule)
    schedule.set_defaults(func=cmd_schedule)

    alarm_parser = sub.add_parser("alarms", help="the stage's alarms (local evaluation)")
    asub = alarm_parser.add_subparsers(dest="action", required=True)
    evaluate = asub.add_parser("evaluate", help="evaluate the queue-age alarms now")
    evaluate.add_argument("--at", help="the time to evaluate as of (ISO 8601; default now)")
    alarm_parser.set_defaults(func=cmd_alarms)


def check_stage_command(args: argparse.Namespace) -> None:
    """--stage: only the commands that work against a deployed stage; one line otherwise."""
    allowed = args.command in stage.STAGE_COMMANDS and not (
        args.command == "transformers" and args.action not in stage.TRANSFORMER_ACTIONS
    )
    if not allowed:
        what = args.command + (f" {args.action}" if getattr(args, "action", None) else "")
        raise _cli().usage_error(
            f"{what} works on the local stack only; with --stage: "
            "status, uploads, export, transformers list|enable|disable|replay, dlq, config"
        )


def use_stage(name: str) -> None:
    try:
        stage.use(name)
    except (stage.StageError, KeyError) as error:
        print(f"dataharvest --stage {name}: {error}", file=sys.stderr)
        raise SystemExit(1) from None
