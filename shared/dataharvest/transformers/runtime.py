"""The transformer runtime every transformer service uses.

For one work message: reconcile it with the current metastore item (a message is a hint; a
newer one wins), take a per (client, date, transformer) lock, replace the transformer's output
for that client and date in ONE PostgreSQL transaction together with its audit.transformer_runs
row, and then set `<name>_done` / `<name>_version` / timestamps in the metastore conditionally on
the input versions still being current. RETRACT deletes the outputs and clears the flag, which
retracts whatever depends on it in turn.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import psycopg
from boto3.dynamodb.conditions import Attr
from psycopg import sql

from dataharvest import db, metastore, registry
from dataharvest.due import desired
from dataharvest.observability import logger
from dataharvest.ops import metrics
from dataharvest.work import WorkMessage, output_version


@dataclass(frozen=True)
class Transformer:
    name: str
    # Tables holding this transformer's output, keyed by (client_id, business_date).
    output_tables: tuple[str, ...]
    # What most transformers are: SQL statements run in order for an APPLY, inside the run's
    # transaction, with %(client_id)s and %(business_date)s bound; the first statement's row
    # count is the rows written (later ones write quality issues and the like).
    statements: tuple[str, ...] = ()
    # Instead of `statements`, for output that needs code (the publisher): writes the output
    # for one client and date (its old output is already deleted); returns the rows written.
    apply: Callable[[psycopg.Connection, str, date], int] | None = None
    # Optional effect after commit (the partner publisher sends its messages here); it also
    # runs when a redelivered message finds its run committed, so it must be idempotent.
    after_commit: Callable[[psycopg.Connection, WorkMessage], None] | None = None
    # Whether it writes audit.data_quality_issues (cleared with its output).
    writes_quality_issues: bool = False
    # Instead of `apply`, for output kept outside PostgreSQL (the lake exporter): replaces
    # (APPLY) or removes (RETRACT) the output of the message's client and date. It runs under
    # the run's lock and reads through the run's connection; it calls `still_current()` right
    # before its own commit, which the runtime's transaction cannot cover, and returns the rows
    # written, or None when the inputs moved on and nothing was changed.
    write_outside: (
        Callable[[psycopg.Connection, WorkMessage, Callable[[], bool]], int | None] | None
    ) = None


# A run that wrote at least this many rows ANALYZEs its output tables after its commit, so the
# readers it triggers (the other transformers, the publisher's statement, the lake exporter's
# COPY) plan on real statistics instead of waiting for autovacuum: at 1M transactions the
# outputs of a fresh table otherwise get rows=1 estimates and nested loops that run for
# minutes. Below it a misestimate costs milliseconds while ANALYZE still reads a sample of up
# to 30,000 rows (default_statistics_target 100) and updates pg_statistic, so small runs skip
# it and autovacuum's analyze (50 rows + 10% of the table changed) keeps them current.
ANALYZE_MIN_ROWS = 10_000


class StaleWork(Exception):
    """The inputs changed while the run was computing: its result is discarded."""


@dataclass(frozen=True)
class RunResult:
    outcome: str  # succeeded | duplicate | superseded | stale
    rows_written: int = 0


_registry = registry.RegistryCache()


def business_date_of(message: WorkMessage) -> date:
    return datetime.strptime(message.business_date, "%Y%m%d").date()


def _entry(name: str) -> registry.TransformerEntry:
    for entry in _registry.current():
        if entry.name == name:
            return entry
    _registry.refresh()
    for entry in _registry.entries:
        if entry.name == name:
            return entry
    raise registry.RegistryError(f"{name} is not registered")


def _is_current(entry: registry.TransformerEntry, message: WorkMessage) -> bool:
    """Whether the message still describes the item: same action due, same input versions."""
    item = metastore.get_item(message.client_id, message.business_date)
    action, versions = desired(entry, item)
    return action == message.action and (action == "RETRACT" or versions == message.input_versions)


def run(transformer: Transformer, message: WorkMessage) -> RunResult:
    """Run one work message; raises on transient errors so the platform retries it."""
    entry = _entry(transformer.name)
    if not _is_current(entry, message):
        # A newer stream change already produced (or will produce) the message that counts.
        logger.info("superseded work message", extra={"key": message.idempotency_key})
        return RunResult("superseded")
    started_at = datetime.now(UTC)
    started = time.monotonic()
    conn = None
    try:
        # Inside the try: a database that refuses connections is a failure to record too.
        conn = db.shared_connection()
        with conn.transaction():
            rows = _run_in_transaction(conn, transformer, entry, message, started_at, started)
    except StaleWork:
        assert conn is not None  # raised only from inside the transaction
        _record_run(conn, transformer, message, "stale", 0, started_at, started, None)
        logger.info("stale result discarded", extra={"key": message.idempotency_key})
        return RunResult("stale")
    except Exception as error:
        _record_failure(conn, transformer, message, started_at, started, error)
        raise
    if transformer.after_commit and message.action == "APPLY":
        # Also for a redelivered message whose run already committed: a crash (or a failed
        # send) between commit and this call must not lose the effect, so it is idempotent.
        transformer.after_commit(conn, message)
    if rows is not None and rows >= ANALYZE_MIN_ROWS:
        # Before the flag is published: the flag is what starts the readers of this output.
        analyze_outputs(conn, transformer)
    _mark_flag(transformer, entry, message, started_at)
    if rows is None:
        return RunResult("duplicate")
    log: dict[str, Any] = {"client_id": message.client_id, "business_date": message.business_date}
    seconds = time.monotonic() - started
    metrics.emit(
        "transformers",
        transformer.name,
        metrics.TRANSFORMER_RUN_SECONDS,
        seconds,
        metrics.Seconds,
        **log,
    )
    metrics.emit("transformers", transformer.name, metrics.TRANSFORMER_ROWS_WRITTEN, rows, **log)
    return RunResult("succeeded", rows)


def _run_in_transaction(
    conn: psycopg.Connection,
    transformer: Transformer,
    entry: registry.TransformerEntry,
    message: WorkMessage,
    started_at: datetime,
    started: float,
) -> int | None:
    day = business_date_of(message)
    db.advisory_xact_lock(
        conn, f"transformer:{message.client_id}:{message.business_date}:{transformer.name}"
    )
    done = conn.execute(
        "SELECT 1 FROM audit.transformer_runs WHERE idempotency_key = %s AND outcome = 'succeeded'",
        (message.idempotency_key,),
    ).fetchone()
    if done:
        return None
    for table in transformer.output_tables:
        conn.execute(
            f"DELETE FROM {table} WHERE client_id = %s AND business_date = %s",
            (message.client_id, day),
        )
    if transformer.writes_quality_issues:
        conn.execute(
            "DELETE FROM audit.data_quality_issues WHERE client_id = %s AND business_date = %s "
            "AND transformer = %s",
            (message.client_id, day, transformer.name),
        )
    if transformer.write_outside is not None:
        written = transformer.write_outside(conn, message, lambda: _is_current(entry, message))
        if written is None:
            raise StaleWork
        rows = written
    elif message.action == "APPLY" and transformer.apply is not None:
        rows = transformer.apply(conn, message.client_id, day)
    elif message.action == "APPLY" and transformer.statements:
        rows = run_statements(conn, transformer.statements, message.client_id, day)
    else:
        rows = 0
    # Last look before commit: if the inputs moved on, this result must not become visible.
    if not _is_current(entry, message):
        raise StaleWork
    _record_run(conn, transformer, message, "succeeded", rows, started_at, started, None)
    return rows


def analyze_outputs(conn: psycopg.Connection, transformer: Transformer) -> None:
    """ANALYZE a transformer's output tables, in autocommit, after its run committed.

    Never inside the run's transaction: ANALYZE holds SHARE UPDATE EXCLUSIVE on the table to
    the end of the transaction, which would serialise every client's run of the transformer.
    SKIP_LOCKED: when another run (or autovacuum) is analyzing the table, its statistics are
    being refreshed anyway, so this one skips instead of waiting. The function's role may
    ANALYZE its own outputs through the MAINTAIN privilege (migration 0013_analyze_outputs).

    The one place an error is deliberately not raised: the run's data is committed and
    correct, only the readers' plans are at stake, so a failure (or PostgreSQL's warning
    instead of an error, as for a missing privilege) is logged as a warning with the table.
    """
    warnings: list[str] = []

    def collect(notice: psycopg.errors.Diagnostic) -> None:
        if notice.severity_nonlocalized == "WARNING":
            warnings.append(notice.message_primary or "")

    conn.add_notice_handler(collect)
    try:
        for table in transformer.output_tables:
            del warnings[:]
            schema, name = table.split(".", 1)
            try:
                conn.execute(
                    sql.SQL("ANALYZE (SKIP_LOCKED) {}").format(sql.Identifier(schema, name))
                )
            except psycopg.Error as error:
                logger.warning(
                    "ANALYZE of a transformer output failed",
                    extra={"table": table, "error": f"{type(error).__name__}: {error}"},
                )
                continue
            for warning in warnings:
                logger.warning(
                    "ANALYZE of a transformer output skipped",
                    extra={"table": table, "error": warning},
                )
    finally:
        conn.remove_notice_handler(collect)


def run_statements(
    conn: psycopg.Connection, statements: tuple[str, ...], client_id: str, business_date: date
) -> int:
    """Run a transformer's statements for one client and date; the first one's row count."""
    params = {"client_id": client_id, "business_date": business_date}
    counts = [conn.execute(statement, params).rowcount for statement in statements]
    return counts[0]


def _record_run(
    conn: psycopg.Connection,
    transformer: Transformer,
    message: WorkMessage,
    outcome: str,
    rows: int,
    started_at: datetime,
    started: float,
    error: str | None,
) -> None:
    conn.execute(
        """
        INSERT INTO audit.transformer_runs (client_id, business_date, transformer, action,
            idempotency_key, input_versions, outcome, rows_written, duration_ms, error,
            started_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        """,
        (
            message.client_id,
            business_date_of(message),
            transformer.name,
            message.action,
            message.idempotency_key,
            json.dumps(message.input_versions),
            outcome,
            rows,
            int((time.monotonic() - started) * 1000),
            error,
            started_at,
        ),
    )


def _record_failure(
    conn: psycopg.Connection | None,
    transformer: Transformer,
    message: WorkMessage,
    started_at: datetime,
    started: float,
    error: BaseException,
) -> None:
    text = f"{type(error).__name__}: {error}"
    if conn is not None and not conn.broken:
        _record_run(conn, transformer, message, "failed", 0, started_at, started, text)
    metastore.update_attributes(
        message.client_id,
        message.business_date,
        {
            f"{transformer.name}_error": text[:1000],
            f"{transformer.name}_failed_at": datetime.now(UTC).isoformat(),
        },
    )


def _mark_flag(
    transformer: Transformer,
    entry: registry.TransformerEntry,
    message: WorkMessage,
    started_at: datetime,
) -> None:
    """Set or clear `<name>_done` only while the inputs are still the ones this run used."""
    name = transformer.name
    condition = Attr(metastore.PARTITION_KEY).exists()
    versions = message.input_versions
    if message.action == "RETRACT":
        # A RETRACT carries the versions of the image that last matched, and what ended the
        # match is usually a watched input being deleted or rejected, so those versions are
        # gone for good. Clear the flag only while the item still calls for a retraction, on
        # the condition that its watched attributes are still what they are now.
        action, versions = desired(
            entry, metastore.get_item(message.client_id, message.business_date)
        )
        if action != "RETRACT":
            logger.info(
                "item matches again; retraction flag not published",
                extra={"key": message.idempotency_key},
            )
            return
        for attribute in entry.watch:
            if attribute not in versions:
                condition = condition & Attr(attribute).not_exists()
    for attribute, value in versions.items():
        current = Attr(attribute).eq(value)
        # Numbers are stored as Number; compare their text form by trying both types.
        if value.lstrip("-").isdigit():
            current = current | Attr(attribute).eq(int(value))
        condition = condition & current
    finished = {f"{name}_started_at": started_at.isoformat()}
    finished[f"{name}_finished_at"] = datetime.now(UTC).isoformat()
    if message.action == "APPLY":
        to_set = {
            f"{name}_done": True,
            f"{name}_version": output_version(message.input_versions),
            **finished,
        }
        to_remove = [f"{name}_error"]
    else:
        to_set = {f"{name}_done": False, **finished}
        to_remove = [f"{name}_version", f"{name}_error"]
    written = metastore.update_attributes(
        message.client_id, message.business_date, to_set, to_remove, condition=condition
    )
    if written is None:
        logger.info(
            "inputs changed after commit; flag not published",
            extra={"key": message.idempotency_key},
        )


def make_handler(transformer: Transformer) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The Lambda handler of a transformer service: its SQS work queue, partial batch
    responses, one `run` per work message."""
    from aws_lambda_powertools.utilities.batch import (
        BatchProcessor,
        EventType,
        process_partial_response,
    )
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from dataharvest.deadline import guarded
    from dataharvest.observability import metrics, tracer

    processor = BatchProcessor(event_type=EventType.SQS)

    def record_handler(record: SQSRecord) -> None:
        message = WorkMessage.from_json(record.body)
        if message.transformer != transformer.name:
            raise ValueError(f"{transformer.name} received work for {message.transformer}")
        result = run(transformer, message)
        logger.info(
            "work message done",
            extra={
                "outcome": result.outcome,
                "rows": result.rows_written,
                "action": message.action,
                "client_id": message.client_id,
                "business_date": message.business_date,
            },
        )

    @logger.inject_lambda_context(correlation_id_path="Records[0].messageId")
    @tracer.capture_lambda_handler
    @metrics.log_metrics
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return process_partial_response(  # type: ignore[return-value]  # a TypedDict
            event=event,
            record_handler=guarded(record_handler),
            processor=processor,
            context=context,
        )

    return handler
