"""The `dataharvest` command: local stack control, uploads, status, exports, registry, config."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Table
from rich.text import Text

from dataharvest.config import read_environment
from dataharvest.metastore import INPUT_PREFIX, plain
from dataharvest_local import ops_commands, ops_stage, progress, security_commands

# The export tables (dataharvest.exports.EXPORTS), named here so --help needs no import.
EXPORT_TABLES = ("portfolio-summary", "client-tax", "rejections", "quality-issues", "messages")
# `export snapshot-changes --client --table --version`: a snapshot export's change log.
SNAPSHOT_CHANGES = "snapshot-changes"
# Exports beyond the run summary's outputs: the clients file, personal data decrypted.
EXPORT_CHOICES = (*EXPORT_TABLES, "clients")
QUIET_TIMEOUT_S = 900
console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
# Piped output (CI logs, files) gets a wide table instead of rich's 80-column default.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def home() -> Path:
    return read_environment().home


# -- stack ---------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from dataharvest_local import client
    from dataharvest_local.stack import LocalStack

    if running := client.running_stack(home()):
        console.print(f"local stack already running ({client.state_file(home())})")
        if running.api_url:
            print(running.api_url)
        return 0
    # Checked here too: a detached stack would only say it exited.
    retry_delay_cap, crash_retry_s = _retry_delay_cap(), _crash_retry_seconds()
    if args.detach:
        started = time.monotonic()
        info = client.start_detached(home())
        console.print(
            f"local stack ready in {time.monotonic() - started:.1f} s "
            f"(AWS {info.endpoint_url}, control {info.control_url})"
        )
        if info.api_url:
            print(info.api_url)
        return 0
    stack = LocalStack(home(), retry_delay_cap=retry_delay_cap, crash_retry_s=crash_retry_s)
    info = stack.start()
    console.print(
        f"local stack ready in {stack.startup_seconds:.1f} s: AWS {info.endpoint_url}, "
        f"PostgreSQL {info.database_url}; Ctrl-C stops it"
    )
    if info.api_url:
        console.print(f"Data API and console: {info.api_url} (console: {info.api_url}/console/)")
        print(info.api_url, flush=True)
    stack.serve_forever()
    return 0


def _seconds_from_environment(name: str) -> int | None:
    value = os.environ.get(name)
    if not value:
        return None
    if not value.isdigit():
        raise usage_error(f"{name}={value!r} is not a number of seconds")
    return int(value)


def _retry_delay_cap() -> int | None:
    return _seconds_from_environment("DATAHARVEST_LOCAL_RETRY_SECONDS")


def _crash_retry_seconds() -> int | None:
    return _seconds_from_environment("DATAHARVEST_LOCAL_CRASH_RETRY_SECONDS")


def cmd_down(args: argparse.Namespace) -> int:
    from dataharvest_local import client

    stopped = client.stop_stack(home())
    console.print("local stack stopped" if stopped else "no local stack was running")
    return 0


# -- uploads ---------------------------------------------------------------------------------


def collect_files(paths: list[str]) -> list[Path]:
    # Routing's own rule, so a folder yields exactly the files persistence will route.
    from dataharvest.persistence.routing import is_upload_name

    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and is_upload_name(p.name))
            )
        elif path.is_file():
            files.append(path)
        else:
            raise SystemExit(f"dataharvest: {raw}: no such file or folder")
    return files


def describe_failure(failure: dict[str, Any]) -> str:
    """One line for a failing delivery the local stack will retry."""
    attempt = f"attempt {failure['attempt']}"
    if failure.get("max_attempts"):
        attempt += f" of {failure['max_attempts']}"
    what = "crashed" if failure["crashed"] else "failed"
    return (
        f"{failure['function']}: {failure['key']} {what} ({attempt}): {failure['error']}; "
        f"retrying in {failure['retry_in']} s"
    )


class Stalled(Exception):
    """Only failing deliveries are left; each is retried later (or dead-lettered)."""


def _wait_quiet(
    info,
    label: str,
    show_progress: bool | None = None,
    settled: Callable[[], tuple[int, int] | None] | None = None,
    detail: Callable[[], str] | None = None,
) -> dict[str, Any]:
    """Wait until the local stack is quiet, reporting failing deliveries and (on a terminal,
    or with `show_progress`) a progress line on stderr at most once a second: `settled` gives
    (done, total) keys, `detail` more (e.g. chunks)."""
    from dataharvest_local import client

    if ops_stage.target():
        console.print(
            f"{label}: sent to stage {ops_stage.target()}; its functions run asynchronously "
            "(`dataharvest --stage NAME status` shows how far they got)"
        )
        return {}

    deadline = time.monotonic() + QUIET_TIMEOUT_S
    started = time.monotonic()
    reported: set[tuple[str, str, int]] = set()
    with progress.Progress(show_progress) as reporter:
        while True:
            # Short waits, so the progress line can show what the stack is doing meanwhile.
            status = client.control(info, "/quiet?timeout=1", timeout=30)
            for failure in status.get("retrying", []):
                seen = (failure["source"], failure["message_id"], failure["attempt"])
                if seen not in reported:
                    reported.add(seen)
                    reporter.clear()
                    # Error texts are not markup, and a long one stays on one line.
                    console.print(
                        Text.assemble(("delivery failing: ", "yellow"), describe_failure(failure)),
                        soft_wrap=True,
                    )
            if status["quiet"]:
                break
            if status.get("stalled"):
                reporter.clear()
                console.print(
                    f"stopped waiting after {time.monotonic() - started:.1f} s: the only work "
                    f"left is {len(status['retrying'])} failing delivery(ies) waiting for a "
                    "retry (the queue's visibility timeout; DATAHARVEST_LOCAL_RETRY_SECONDS "
                    "shortens it). `dataharvest status` and `dataharvest dlq list` show what "
                    "is left.",
                    soft_wrap=True,
                )
                raise Stalled
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"dataharvest: the choreography did not go quiet within {QUIET_TIMEOUT_S} s"
                    f" ({status['in_flight']} invocation(s) in flight)"
                )
            reporter.update(
                lambda status=status: progress.waiting_line(
                    time.monotonic() - started,
                    status,
                    settled() if settled else None,
                    detail() if detail else "",
                )
            )
    console.print(
        f"quiet after {time.monotonic() - started:.1f} s "
        f"({status['invocations']} invocations in this stack so far)"
    )
    return status


def cmd_run(args: argparse.Namespace) -> int:
    import boto3

    from dataharvest_local import client

    _check_client_id(args.client)
    files = collect_files(args.paths)
    info = client.ensure_stack(home())
    if not files:
        raise SystemExit("dataharvest run: no files named {entity}_{YYYYMMDD}.csv[.gz] found")
    s3 = boto3.client("s3")
    bucket = os.environ["LANDING_BUCKET"]
    uploaded: list[tuple[str, str | None]] = []
    for path in files:
        key = f"{args.client}/{path.name}"
        with path.open("rb") as body:
            response = s3.put_object(Bucket=bucket, Key=key, Body=body)
        uploaded.append((key, response.get("VersionId")))
        console.print(f"uploaded {path} -> s3://{bucket}/{key}")
    try:
        with progress.UploadWatch(uploaded) as watch:
            _wait_quiet(info, f"{len(files)} file(s)", args.progress, watch.settled, watch.detail)
    except Stalled:
        # The metastore says how far it got (the outputs may be out of reach: the failure may
        # be the database's); the exit code says the work is not done.
        print_status(args.client, None, args.json)
        return 1
    print_status(args.client, None, args.json)
    print_outputs(args.client, args.json)
    ops_commands.print_outcomes(uploaded, args.json)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    import boto3

    from dataharvest_local import client

    _check_client_id(args.client)
    info = client.ensure_stack(home())
    s3 = boto3.client("s3")
    bucket = os.environ["LANDING_BUCKET"]
    for name in args.names:
        s3.delete_object(Bucket=bucket, Key=f"{args.client}/{name}")
        console.print(f"removed s3://{bucket}/{args.client}/{name}")
    try:
        _wait_quiet(info, f"{len(args.names)} removal(s)", args.progress)
    except Stalled:
        print_status(args.client, None, args.json)
        return 1
    print_status(args.client, None, args.json)
    ops_commands.print_outcomes([(f"{args.client}/{n}", None) for n in args.names], args.json)
    return 0


def _check_client_id(client_id: str) -> None:
    from dataharvest.persistence.routing import CLIENT_ID, is_client_id

    if not is_client_id(client_id):
        raise usage_error(f"--client {client_id!r} is not a client id (^{CLIENT_ID.pattern}$)")


# -- status ----------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:

    ops_commands.ensure_stack()
    return print_status(args.client, args.date, args.json)


def status_items(client_id: str | None, business_date: str | None) -> list[dict[str, Any]]:
    """The metastore items, each with `stuck`: the enabled transformers it still needs work
    from (due but not done for the current versions; dataharvest.due.need)."""
    from dataharvest import metastore, registry
    from dataharvest.catapult.converge import due

    items = list(metastore.client_items(client_id) if client_id else metastore.all_items())
    if business_date:
        items = [i for i in items if i[metastore.SORT_KEY] == _yyyymmdd(business_date)]
    entries = [e for e in registry.load_all() if e.enabled]
    return sorted(
        ({**plain(i), "stuck": due(entries, i)} for i in items),
        key=lambda i: (i[metastore.PARTITION_KEY], i[metastore.SORT_KEY]),
    )


def print_status(client_id: str | None, business_date: str | None, as_json: bool) -> int:
    items = status_items(client_id, business_date)
    if as_json:
        print(json.dumps(items, indent=2, sort_keys=True))
        return 0
    done_flags = sorted({k for item in items for k in item if k.endswith("_done")})
    table = Table(title="metastore")
    table.add_column("client")
    table.add_column("date")
    for prefix in INPUT_PREFIX.values():
        table.add_column(prefix)
    for flag in done_flags:
        table.add_column(flag.removesuffix("_done").removesuffix("_transformer"))
    snapshot_versions = sorted(
        {k for item in items for k in item if k.endswith("_snapshot_version")}
    )
    if snapshot_versions:
        table.add_column("snapshots")
    table.add_column("stuck")
    for item in items:
        cells = [item["partition_key"], item["sort_key"]]
        for prefix in INPUT_PREFIX.values():
            if item.get(f"{prefix}_persisted"):
                cells.append(
                    f"[green]✔[/] {item.get(f'{prefix}_rows', 0)} rows"
                    + (
                        f", {item[f'{prefix}_rejections']} rej"
                        if item.get(f"{prefix}_rejections")
                        else ""
                    )
                )
            elif item.get(f"{prefix}_error"):
                cells.append("[red]✘ rejected[/]")
            else:
                cells.append("-")
        for flag in done_flags:
            cells.append(
                "[green]✔[/]"
                if item.get(flag)
                else ("[red]✘[/]" if item.get(flag.replace("_done", "_error")) else "-")
            )
        if snapshot_versions:
            cells.append(snapshot_cell(item, snapshot_versions))
        cells.append("[red]" + ", ".join(item["stuck"]) + "[/]" if item["stuck"] else "")
        table.add_row(*cells)
    out.print(table)
    errors = [
        (i["partition_key"], i["sort_key"], k, v)
        for i in items
        for k, v in i.items()
        if k.endswith("_error") and v
    ]
    for client_id_, date, key, value in errors:
        out.print(f"[red]{client_id_} {date} {key}:[/] {value}")
    if any(item["stuck"] for item in items):
        out.print(
            "stuck: transformers due but not done for the current input versions "
            "(work in flight, or failed for good: `dataharvest dlq list`, `dataharvest reconcile`)"
        )
    return 0


def snapshot_cell(item: dict[str, Any], version_keys: list[str]) -> str:
    """`table v: +inserts ~updates -deletes =unchanged` per snapshot table on the item."""
    parts = []
    for key in version_keys:
        if key in item:
            p = key.removesuffix("_version")
            parts.append(
                f"{p.removesuffix('_snapshot')} {item[key]}: +{item.get(p + '_inserts', 0)} "
                f"~{item.get(p + '_updates', 0)} -{item.get(p + '_deletes', 0)} "
                f"={item.get(p + '_unchanged', 0)}"
            )
    return "; ".join(parts)


# -- exports -------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from datetime import datetime

    from dataharvest import db, exports

    if args.table == SNAPSHOT_CHANGES:
        return cmd_export_snapshot_changes(args)
    if args.date is None:
        raise usage_error(f"export {args.table}: --date is required")
    if args.version is not None or args.snapshot_table is not None:
        raise usage_error(f"export {args.table}: --table and --version are for {SNAPSHOT_CHANGES}")
    day = datetime.strptime(_yyyymmdd(args.date), "%Y%m%d").date()
    ops_commands.ensure_stack()
    with db.connect() as conn:
        ops_commands.require_client(conn, args.client)
        records = exports.rows(conn, args.table, args.client, day)
    if args.format == "json":
        print(exports.to_json(args.table, records))
    else:
        sys.stdout.write(exports.to_csv(args.table, records, raw=args.raw))
    return 0


def cmd_export_snapshot_changes(args: argparse.Namespace) -> int:
    from dataharvest import db
    from dataharvest.snapshots import exports as snapshot_exports
    from dataharvest.snapshots import tables
    from dataharvest_local import client

    if args.snapshot_table is None or args.version is None:
        raise usage_error(f"export {SNAPSHOT_CHANGES}: --table and --version are required")
    if args.date is not None:
        raise usage_error(f"export {SNAPSHOT_CHANGES}: no --date (the version names the export)")
    client.ensure_stack(home())
    with db.connect() as conn:
        table = tables.get(conn, args.client, args.snapshot_table)
        if table is None:
            print(
                f"dataharvest export: no snapshot table {args.snapshot_table!r} for client "
                f"{args.client}",
                file=sys.stderr,
            )
            return 1
        known = conn.execute(
            "SELECT status, reason FROM snapshots.exports WHERE client_id = %s "
            "AND table_name = %s AND export_version = %s ORDER BY export_id DESC LIMIT 1",
            (args.client, args.snapshot_table, args.version),
        ).fetchone()
        if known is None:
            print(
                f"dataharvest export: no export {args.version} of {args.snapshot_table} "
                f"received for {args.client}",
                file=sys.stderr,
            )
            return 1
        if known[0] != "applied":
            console.print(f"export {args.version} was {known[0]}: {known[1]}")
        records = snapshot_exports.change_rows(conn, table, args.version)
    if args.format == "json":
        print(snapshot_exports.to_json(records))
    else:
        sys.stdout.write(snapshot_exports.to_csv(table, records, raw=args.raw))
    return 0


def print_outputs(client_id: str, as_json: bool) -> int:
    """Rows per output per business date of a client (stderr with --json: stdout stays JSON)."""
    from dataharvest import db, exports

    with db.connect() as conn:
        counts = exports.output_counts(conn, client_id)
    table = Table(title=f"outputs of {client_id}")
    for column in ("date", *EXPORT_TABLES):
        table.add_column(column, justify="right")
    for row in counts:
        table.add_row(*(str(value) for value in row.values()))
    (console if as_json else out).print(table)
    return 0


# -- transformer registry --------------------------------------------------------------------


def cmd_transformers(args: argparse.Namespace) -> int:
    from dataharvest import catapult, registry
    from dataharvest_local import client

    ops_commands.ensure_stack()
    if args.action == "list":
        entries = registry.load_all()
        if args.json:
            print(json.dumps([{**e.__dict__, "watch": list(e.watch)} for e in entries], indent=2))
            return 0
        table = Table(title="transformers")
        for column in ("name", "enabled", "owner", "watch", "target"):
            table.add_column(column)
        for e in entries:
            table.add_row(
                e.name, "yes" if e.enabled else "no", e.owner, ", ".join(e.watch), e.target
            )
        out.print(table)
        return 0
    if args.action == "register":
        entry = registry.register(Path(args.target), read_environment().stage)
        console.print(f"registered {entry.name} -> {entry.target}")
    elif args.action in ("enable", "disable"):
        entry = registry.set_enabled(args.target, args.action == "enable")
        console.print(f"{entry.name} {args.action}d")
    if args.action in ("register", "enable") and not args.no_backfill:
        sent = catapult.backfill(entry)
        applies = sum(m.action == "APPLY" for m in sent)
        console.print(
            f"backfill: {applies} APPLY and {len(sent) - applies} RETRACT sent "
            "(items brought to what the registry says now)"
        )
    if args.action == "replay":
        entry = registry.get(args.target)
        sent = catapult.replay(
            entry, args.client, _yyyymmdd(args.date_from), _yyyymmdd(args.date_to)
        )
        console.print(f"replay: APPLY sent for {len(sent)} date(s) of {args.client}")
    if args.action in ("register", "enable", "replay"):
        _wait_quiet(client.running_stack(home()), f"transformers {args.action}", args.progress)
    return 0


def usage_error(message: str) -> SystemExit:
    """Bad usage or bad arguments: one line on stderr, exit code 2 (docs/SPEC.md §5.3)."""
    print(f"dataharvest: {message}", file=sys.stderr)
    return SystemExit(2)


def _yyyymmdd(value: str) -> str:
    from datetime import datetime

    digits = value.replace("-", "")
    try:
        if not re.fullmatch(r"[0-9]{8}", digits):  # \d would take any script's digits
            raise ValueError(digits)
        datetime.strptime(digits, "%Y%m%d")
    except ValueError:
        raise usage_error(f"{value!r} is not a date (YYYY-MM-DD or YYYYMMDD)") from None
    return digits


# -- persistence: per-client settings and the dead-letter queue ------------------------------


def cmd_config(args: argparse.Namespace) -> int:
    from dataharvest import db
    from dataharvest.persistence import settings

    ops_commands.ensure_stack()
    with db.connect() as conn:
        if ops_commands.config_action(conn, args):
            return 0
        try:
            if args.action == "set-alias":
                settings.set_alias(conn, args.client, args.entity, args.alias, args.column)
                console.print(
                    f"{args.client}: header {settings.normalize_header(args.alias)!r} in "
                    f"{args.entity} files now means {args.column}"
                )
            elif args.action == "set-max-reject-ratio":
                ratio = settings.set_max_reject_ratio(conn, args.client, args.ratio)
                console.print(f"{args.client}: max_reject_ratio {ratio}")
            elif args.action == "set-retention":
                days = settings.set_retention_days(conn, args.client, args.days)
                console.print(f"{args.client}: raw inputs kept {days} days after their date")
            elif args.action == "set-inflation-limits":
                size, ratio = settings.set_inflation_limits(
                    conn, args.client, args.max_inflated_bytes, args.max_inflation_ratio
                )
                console.print(
                    f"{args.client}: max_inflated_bytes {size}, max_inflation_ratio {ratio}"
                )
        except ValueError as error:
            raise SystemExit(f"dataharvest config {args.action}: {error}") from None
        current = settings.get_settings(conn, args.client).as_dict()
    if args.action == "show":
        print(json.dumps(current, indent=2, sort_keys=True))
    return 0


def cmd_retention(args: argparse.Namespace) -> int:
    from dataharvest import db
    from dataharvest.persistence.retention import apply_retention
    from dataharvest_local import client

    today = None
    if args.as_of:
        from datetime import date

        digits = _yyyymmdd(args.as_of)
        today = date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    client.ensure_stack(home())
    with db.connect() as conn:
        expired = apply_retention(conn, today, args.client)
    if expired:
        _wait_quiet(client.running_stack(home()), "retention")
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "client_id": e.client_id,
                        "entity": e.entity,
                        "business_date": e.business_date.isoformat(),
                        "retention_days": e.retention_days,
                    }
                    for e in expired
                ],
                indent=2,
            )
        )
    else:
        console.print(f"{len(expired)} input(s) expired and retracted")
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    import boto3

    from dataharvest import dlq
    from dataharvest_local import client

    ops_commands.ensure_stack()
    sqs = boto3.client("sqs")
    stage = read_environment().stage
    try:
        chosen = dlq.select(dlq.queues(sqs, stage), args.queue, stage)
    except dlq.UnknownQueue as error:
        raise usage_error(str(error)) from None
    if args.action == "redrive":
        # Moved messages first: the reconciler run for on-failure records then sees their items.
        moved = 0
        for queue in sorted(chosen, key=lambda q: q.on_failure):
            handled = dlq.redrive(sqs, queue)
            moved += handled
            if not handled:
                console.print(f"{queue.name}: empty")
            elif queue.on_failure:
                what = (
                    "replicas re-applied from the change log"
                    if queue.name == dlq.SNAPSHOT_APPLIER_FAILURES
                    else "reconciler run"
                )
                console.print(f"{queue.name}: {handled} record(s); {what}, records deleted")
            else:
                console.print(f"{queue.name}: moved {handled} message(s) back to their queue")
        if moved and not args.no_wait:
            _wait_quiet(client.running_stack(home()), "dlq redrive", args.progress)
        return 0
    letters = [letter for queue in chosen for letter in dlq.list_dead_letters(sqs, queue)]
    if args.json:
        print(json.dumps([letter.as_dict() for letter in letters], indent=2))
        return 0
    table = Table(title=f"dead letters ({len(letters)} in {len(chosen)} queue(s))")
    for column in ("queue", "message id", "receives", "first sent", "about"):
        table.add_column(column)
    for letter in letters:
        table.add_row(
            letter.queue,
            letter.message_id,
            str(letter.receive_count),
            letter.first_received,
            "\n".join(letter.keys),
        )
    out.print(table)
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from dataharvest import catapult
    from dataharvest_local import client

    date_from = _yyyymmdd(args.date_from) if args.date_from else None
    date_to = _yyyymmdd(args.date_to) if args.date_to else None
    if date_from and date_to and date_from > date_to:
        raise usage_error(f"--from {args.date_from} is after --to {args.date_to}")
    info = client.ensure_stack(home())
    try:
        decisions = catapult.reconcile(args.client, date_from, date_to)
    except catapult.DispatchError as error:
        raise SystemExit(f"dataharvest reconcile: some sends failed: {error}") from None
    for decision in decisions:
        m = decision.message
        console.print(f"{m.client_id} {m.business_date}: {m.transformer} {m.action}")
    console.print(f"reconcile: {len(decisions)} work message(s) dispatched")
    if decisions and not args.no_wait:
        _wait_quiet(info, "reconcile", args.progress)
    if args.json:
        print(json.dumps([d.message.__dict__ for d in decisions], indent=2, default=str))
    return 0


# -- snapshot tables -------------------------------------------------------------------------


def cmd_snapshots(args: argparse.Namespace) -> int:
    from dataharvest import db
    from dataharvest.persistence.routing import is_client_id
    from dataharvest.snapshots import ingest, tables
    from dataharvest_local import client

    if args.client is not None and not is_client_id(args.client):
        raise usage_error(f"{args.client!r} is not a client id")
    if args.action == "register":
        try:
            definition = tables.parse_definition(
                args.client,
                args.table,
                args.key,
                args.columns,
                delimiter=args.delimiter,
                header=not args.no_header,
            )
        except tables.TableError as error:
            raise usage_error(f"snapshots register: {error}") from None
        client.ensure_stack(home())
        with db.connect() as conn:
            try:
                created = tables.register(conn, definition)
            except tables.TableError as error:
                print(f"dataharvest snapshots register: {error}", file=sys.stderr)
                return 1
        console.print(
            f"{args.client}: snapshot table {args.table} "
            + ("registered" if created else "was registered already (unchanged)")
        )
        return 0
    client.ensure_stack(home())
    with db.connect() as conn:
        listed = []
        for table in tables.list_tables(conn, args.client):
            exports = ingest.exports_of(conn, table.client_id, table.table)
            applied = [e for e in exports if e.status == "applied"]
            listed.append(
                {
                    **table.as_dict(),
                    "last_applied_version": applied[-1].export_version if applied else None,
                    "exports": len(exports),
                }
            )
    if args.json:
        print(json.dumps(listed, indent=2))
        return 0
    view = Table(title="snapshot tables")
    for column in ("client", "table", "key", "columns", "delimiter", "header", "last applied"):
        view.add_column(column)
    for t in listed:
        view.add_row(
            t["client_id"],
            t["table"],
            ",".join(t["key"]),
            ",".join(t["columns"]),
            t["delimiter"],
            "yes" if t["header"] else "no",
            t["last_applied_version"] or "-",
        )
    out.print(view)
    return 0


# -- the lake --------------------------------------------------------------------------------

LAKE_EXPORTER = "lake_exporter"


def cmd_query(args: argparse.Namespace) -> int:
    from dataharvest.lake.location import read_lake_location
    from dataharvest_local import client
    from dataharvest_local import lake_query as query

    client.ensure_stack(home())
    try:
        result = query.run_query(args.sql, read_lake_location())
    except query.QueryError as error:
        print(f"dataharvest query: {error}", file=sys.stderr)
        return 1
    if args.format == "csv":
        sys.stdout.write(query.to_csv(result))
    elif args.format == "json":
        sys.stdout.write(query.to_json(result))
    else:
        table = Table(show_lines=False)
        for column in result.columns:
            table.add_column(column)
        for row in result.rows:
            table.add_row(*(query.text(v) for v in row))
        out.print(table)
    return 0


def cmd_lake_expire(args: argparse.Namespace) -> int:
    """`lake expire`: what the lake exporter's daily maintenance does, now: expire every lake
    table's snapshots past its history limits, delete the files only they reached, then the
    table's orphan files (`--dry-run`: list the orphans, change nothing)."""
    from datetime import UTC, datetime

    from dataharvest import db
    from dataharvest.lake import catalog as lake_catalog
    from dataharvest.lake import maintenance
    from dataharvest.lake.location import read_lake_location
    from dataharvest_local import client

    client.ensure_stack(home())
    lake = read_lake_location()
    with db.connect() as conn:
        done = maintenance.maintain(
            conn, lake, datetime.now(UTC), lake_catalog.open_catalog(lake), dry_run=args.dry_run
        )
    table = Table(title="lake expire" + (" (dry run: nothing changed)" if args.dry_run else ""))
    orphan_column = "orphans found" if args.dry_run else "orphans deleted"
    for column in ("table", "snapshots expired", "files deleted", orphan_column, "history kept"):
        table.add_column(column)
    for m in done:
        table.add_row(
            m.table,
            str(m.expired.snapshots),
            str(m.expired.files_deleted),
            str(len(m.orphans.paths) if args.dry_run else m.orphans.deleted),
            str(m.history_kept),
        )
    out.print(table)
    if args.dry_run:
        for m in done:
            for path in m.orphans.paths:
                out.print(f"orphan: {path}")
    return 0


def cmd_lake_backfill(args: argparse.Namespace) -> int:
    """`lake backfill`: what the registry's backfill sweep does when the exporter is registered,
    narrowed to a client and date range: every item of the range that the exporter's filter
    matches and whose current versions it has not exported gets an APPLY."""
    from dataharvest import catapult, metastore, registry
    from dataharvest_local import client

    date_from, date_to = _yyyymmdd(args.date_from), _yyyymmdd(args.date_to)
    if date_from > date_to:
        raise usage_error(f"--from {args.date_from} is after --to {args.date_to}")
    info = client.ensure_stack(home())
    try:
        entry = registry.get(LAKE_EXPORTER)
    except registry.RegistryError as error:
        print(
            f"dataharvest lake backfill: {error} (dataharvest transformers register "
            "services/lake_exporter)",
            file=sys.stderr,
        )
        return 1
    items = metastore.client_items(args.client) if args.client else metastore.all_items()
    in_range = (i for i in items if date_from <= i[metastore.SORT_KEY] <= date_to)
    try:
        decisions = catapult.converge([entry], in_range, "lake-backfill")
    except catapult.DispatchError as error:
        print(f"dataharvest lake backfill: some sends failed: {error}", file=sys.stderr)
        return 1
    console.print(f"lake backfill: {len(decisions)} date(s) sent to {LAKE_EXPORTER}")
    if decisions and not args.no_wait:
        _wait_quiet(info, "lake backfill")
    return 0


# -- the Data API ----------------------------------------------------------------------------


def cmd_url(args: argparse.Namespace) -> int:
    from dataharvest_local import client

    info = client.ensure_stack(home())
    if not info.api_url:
        print("dataharvest url: the local stack serves no API (services/api)", file=sys.stderr)
        return 1
    print(info.api_url)
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from dataharvest.api import auth

    try:
        ttl = auth.parse_ttl(args.ttl)
        token = auth.create_token(home(), args.role, args.client, ttl)
    except ValueError as error:
        raise usage_error(f"token create: {error}") from None
    print(token)
    return 0


# -- parser ----------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Bad usage: one line on stderr and exit code 2 (docs/SPEC.md §5.3), not argparse's
    usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise usage_error(f"{self.prog.removeprefix('dataharvest').strip() or 'usage'}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dataharvest", description=__doc__)
    parser.add_argument(
        "--stage",
        metavar="NAME",
        help="work on a deployed stage's resources (your AWS credentials and region) instead "
        "of the local stack: status, uploads, export, transformers, dlq, config",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    up = sub.add_parser("up", help="start the local stack (foreground unless --detach)")
    up.add_argument("--detach", action="store_true")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop the local stack").set_defaults(func=cmd_down)

    run = sub.add_parser("run", help="upload files, wait until quiet, print the result")
    run.add_argument("paths", nargs="+", metavar="PATH")
    run.add_argument("--client", required=True)
    run.add_argument("--json", action="store_true")
    progress.add_flags(run)
    run.set_defaults(func=cmd_run)

    remove = sub.add_parser("remove", help="delete uploaded objects, wait until quiet")
    remove.add_argument("names", nargs="+", metavar="NAME")
    remove.add_argument("--client", required=True)
    remove.add_argument("--json", action="store_true")
    progress.add_flags(remove)
    remove.set_defaults(func=cmd_remove)

    status = sub.add_parser("status", help="metastore progress, flags, counts, errors")
    status.add_argument("--client")
    status.add_argument("--date")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    export = sub.add_parser("export", help="print an output of a client and date (csv or json)")
    export.add_argument(
        "table",
        choices=(*EXPORT_CHOICES, SNAPSHOT_CHANGES),
        metavar="TABLE",
        help=", ".join((*EXPORT_CHOICES, SNAPSHOT_CHANGES)),
    )
    export.add_argument("--client", required=True)
    export.add_argument("--date", help="YYYY-MM-DD or YYYYMMDD (every TABLE but snapshot-changes)")
    export.add_argument(
        "--table", dest="snapshot_table", help="snapshot-changes: the snapshot table"
    )
    export.add_argument("--version", help="snapshot-changes: the export version")
    export.add_argument("--format", choices=("csv", "json"), default="csv")
    export.add_argument(
        "--raw",
        action="store_true",
        help="csv: print text cells as stored, even those a spreadsheet would run as a formula "
        "(=, +, -, @, tab, CR); by default they get a leading '",
    )
    export.set_defaults(func=cmd_export)

    transformers = sub.add_parser("transformers", help="edit the transformer registry")
    tsub = transformers.add_subparsers(dest="action", required=True)
    tlist = tsub.add_parser("list", help="registered transformers")
    tlist.add_argument("--json", action="store_true")
    treg = tsub.add_parser("register", help="register a service's transformer.yml")
    treg.add_argument("target", metavar="SERVICE_DIR_OR_FILE")
    treg.add_argument(
        "--no-backfill",
        action="store_true",
        help="do not dispatch APPLY for items that already match",
    )
    progress.add_flags(treg)
    ten = tsub.add_parser(
        "enable", help="enable a transformer and converge every item (unless --no-backfill)"
    )
    ten.add_argument("target", metavar="NAME")
    ten.add_argument("--no-backfill", action="store_true")
    progress.add_flags(ten)
    tdis = tsub.add_parser("disable", help="disable a transformer")
    tdis.add_argument("target", metavar="NAME")
    trep = tsub.add_parser("replay", help="re-run a transformer over a date range")
    trep.add_argument("target", metavar="NAME")
    trep.add_argument("--client", required=True)
    trep.add_argument("--from", dest="date_from", required=True)
    trep.add_argument("--to", dest="date_to", required=True)
    progress.add_flags(trep)
    transformers.set_defaults(func=cmd_transformers)

    config = sub.add_parser("config", help="per-client persistence settings")
    csub = config.add_subparsers(dest="action", required=True)
    alias = csub.add_parser("set-alias", help="map a (misspelled) header name to a column")
    alias.add_argument("--client", required=True)
    alias.add_argument("--entity", required=True, choices=tuple(INPUT_PREFIX))
    alias.add_argument("alias", metavar="ALIAS")
    alias.add_argument("column", metavar="COLUMN")
    ratio = csub.add_parser(
        "set-max-reject-ratio", help="share of rejected rows above which a file is rejected"
    )
    ratio.add_argument("--client", required=True)
    ratio.add_argument("ratio", metavar="RATIO", help="between 0 and 1, e.g. 0.10")
    keep = csub.add_parser("set-retention", help="days raw inputs are kept after their date")
    keep.add_argument("--client", required=True)
    keep.add_argument("days", metavar="DAYS", help="whole days, default 400")
    inflation = csub.add_parser(
        "set-inflation-limits", help="how far an upload may inflate before it is rejected"
    )
    inflation.add_argument("--client", required=True)
    inflation.add_argument(
        "--max-inflated-bytes", metavar="N", help="bytes after inflation (default 20 GiB)"
    )
    inflation.add_argument(
        "--max-inflation-ratio",
        metavar="R",
        help="inflated bytes per compressed byte, at least 1 (default 100)",
    )
    ops_commands.add_config_parsers(csub)
    show = csub.add_parser("show", help="a client's settings as JSON")
    show.add_argument("--client", required=True)
    config.set_defaults(func=cmd_config)

    retention = sub.add_parser("retention", help="age raw inputs out by business date")
    rsub = retention.add_subparsers(dest="action", required=True)
    rapply = rsub.add_parser(
        "apply", help="retract inputs past their client's retention, drop their partitions"
    )
    rapply.add_argument("--as-of", help="the day to count from (default: today)")
    rapply.add_argument("--client", help="only this client's inputs (default: every client)")
    rapply.add_argument("--json", action="store_true")
    retention.set_defaults(func=cmd_retention)

    dead = sub.add_parser("dlq", help="the dead-letter queues of the stage")
    dsub = dead.add_subparsers(dest="action", required=True)
    dlist = dsub.add_parser("list", help="dead-lettered messages, and what each is about")
    dlist.add_argument("--queue", metavar="NAME", help="one queue (e.g. persistence-dlq)")
    dlist.add_argument("--json", action="store_true")
    drive = dsub.add_parser(
        "redrive",
        help="move them back to their queues (on-failure records: run the reconciler)",
    )
    drive.add_argument("--queue", metavar="NAME", help="one queue (default: every one)")
    drive.add_argument("--no-wait", action="store_true", help="do not wait until quiet")
    progress.add_flags(drive)
    dead.set_defaults(func=cmd_dlq)

    recon = sub.add_parser(
        "reconcile", help="re-dispatch transformers due but not done for the current versions"
    )
    recon.add_argument("--client")
    recon.add_argument("--from", dest="date_from", metavar="D", help="YYYY-MM-DD or YYYYMMDD")
    recon.add_argument("--to", dest="date_to", metavar="D", help="YYYY-MM-DD or YYYYMMDD")
    recon.add_argument("--json", action="store_true", help="print the dispatched messages")
    recon.add_argument("--no-wait", action="store_true", help="do not wait until quiet")
    progress.add_flags(recon)
    recon.set_defaults(func=cmd_reconcile)

    query = sub.add_parser(
        "query", help="SQL over the lake tables (named like PostgreSQL's: raw.transactions, ...)"
    )
    query.add_argument("sql", help='e.g. "SELECT count(*) FROM raw.transactions"')
    query.add_argument("--format", choices=("table", "csv", "json"), default="table")
    query.set_defaults(func=cmd_query)

    lake = sub.add_parser("lake", help="the lake tier (Iceberg tables)")
    lake_sub = lake.add_subparsers(dest="action", required=True)
    fill = lake_sub.add_parser(
        "backfill", help="export dates persisted before the lake exporter was registered"
    )
    fill.add_argument("--from", dest="date_from", metavar="D", required=True)
    fill.add_argument("--to", dest="date_to", metavar="D", required=True)
    fill.add_argument("--client", metavar="ID")
    fill.add_argument("--no-wait", action="store_true", help="do not wait until quiet")
    fill.set_defaults(func=cmd_lake_backfill)
    expire = lake_sub.add_parser(
        "expire",
        help="expire snapshots past each table's history limit, delete files only they reached, "
        "and orphan files older than a day (the exporter's daily maintenance, now)",
    )
    expire.add_argument(
        "--dry-run", action="store_true", help="list the orphan files; expire and delete nothing"
    )
    expire.set_defaults(func=cmd_lake_expire)

    snapshots = sub.add_parser("snapshots", help="snapshot tables (full exports -> deltas)")
    ssub = snapshots.add_subparsers(dest="action", required=True)
    sreg = ssub.add_parser("register", help="register a snapshot table of a client")
    sreg.add_argument("table")
    sreg.add_argument("--client", required=True)
    sreg.add_argument("--key", required=True, help="COL[,COL...]: the key (composite allowed)")
    sreg.add_argument(
        "--columns", required=True, help="COL[:TYPE],... in file order; TYPE default text"
    )
    sreg.add_argument("--delimiter", default=",", help="one character (default ',')")
    sreg.add_argument("--no-header", action="store_true", help="files have no header row")
    sreg.set_defaults(func=cmd_snapshots)
    slist = ssub.add_parser("list", help="registered snapshot tables and their last export")
    slist.add_argument("--client")
    slist.add_argument("--json", action="store_true")
    slist.set_defaults(func=cmd_snapshots)
    ops_commands.add_parsers(sub)
    url = sub.add_parser("url", help="the local Data API's base URL")
    url.set_defaults(func=cmd_url)
    token = sub.add_parser("token", help="local bearer tokens for the Data API")
    token_sub = token.add_subparsers(dest="action", required=True)
    create = token_sub.add_parser("create", help="print a signed token (alone) on stdout")
    create.add_argument("--role", required=True, choices=("partner", "operator", "admin"))
    create.add_argument("--client", metavar="ID", help="the partner's client id")
    create.add_argument("--ttl", default="1h", help="lifetime: 90s, 15m, 1h, 7d (default 1h)")
    token.set_defaults(func=cmd_token)
    security_commands.add_parser(sub)
    return parser


class _Stderr:
    """Whatever sys.stderr is at the time of the write (tests swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _logs_to_stderr() -> None:
    """The library's structured log lines (powertools writes them to stdout, where Lambda
    wants them) go to stderr in the CLI: stdout is the command's output (`--json`)."""
    import logging

    from dataharvest.observability import logger

    handler = logger.registered_handler
    if isinstance(handler, logging.StreamHandler):
        handler.setStream(_Stderr())  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    _logs_to_stderr()
    args = build_parser().parse_args(argv)
    if args.stage:
        ops_commands.check_stage_command(args)
        ops_commands.use_stage(args.stage)
    try:
        return args.func(args)
    except Stalled:
        return 1


def entry() -> NoReturn:
    """The `dataharvest` command: `main`, then a quick exit. Tearing the interpreter down
    (freeing botocore's service models, psycopg, rich...) took 0.3-0.4 s of every command
    after its work was done; what a normal exit does that matters (atexit: logging, temporary
    files; the streams' buffers) is done here first. An error raised out of `main` exits the
    normal way."""
    code = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    main_thread = threading.main_thread()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not main_thread):
        sys.exit(code)  # a thread still working: the normal exit waits for it
    os._exit(code)


if __name__ == "__main__":
    entry()
