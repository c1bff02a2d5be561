"""The Data API's routes (powertools' APIGatewayHttpResolver, request validation on, OpenAPI
at /openapi.json) and the Lambda entry `handle`: authenticate, authorize, route, audit.

Errors: 400 malformed (a cursor not made here, a body that is not JSON), 401 no / bad / expired
token, 403 a role that may not, 404 unknown or another client's (indistinguishable), 422 a value
that breaks a rule (`errors`: field and rule each).
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

import psycopg
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dataharvest import catapult, db, registry
from dataharvest.api import access, audit, queries, settings_store, uploads
from dataharvest.api.auth import AuthError, Principal, verify
from dataharvest.catapult.converge import due
from dataharvest.observability import logger

CLIENT_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
TRANSFORMER_PATTERN = r"^[a-z0-9_]{1,64}$"
PUBLIC_PATHS = frozenset({"/openapi.json"})
OutputName = Literal["portfolio-summary", "client-tax", "rejections", "quality-issues", "messages"]
Limit = Annotated[int, Query(ge=1, le=queries.MAX_LIMIT, description="rows per page")]
Cursor = Annotated[str | None, Query(max_length=512, description="`next` of the previous page")]
ClientId = Annotated[str, Path(pattern=CLIENT_PATTERN)]

app = APIGatewayHttpResolver(enable_validation=True)
registry_cache = registry.RegistryCache()
# What the current call is about, for its audit row (one invocation at a time per process).
CALL: dict[str, Any] = {}


def principal() -> Principal:
    return app.context["principal"]


def _yyyymmdd(day: date | None) -> str | None:
    return day.strftime("%Y%m%d") if day else None


def _stuck(item: dict[str, Any]) -> list[str]:
    return due([e for e in registry_cache.current() if e.enabled], item)


def _note(action: str, target: str | None, request: Any = None) -> None:
    CALL.update(action=action, target=target, request=request)


# -- errors ------------------------------------------------------------------------------------


def _error(status: int, message: str, **extra: Any) -> Response[dict[str, Any]]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body={"message": message, **extra},
    )


@app.exception_handler(RequestValidationError)
def _invalid(error: RequestValidationError) -> Response[dict[str, Any]]:
    errors = []
    for e in error.errors():
        location = [str(p) for p in e.get("loc", ())]
        errors.append(
            {
                "field": ".".join(location),
                "rule": e.get("type", "invalid"),
                "message": e.get("msg", ""),
            }
        )
    malformed = any(e["rule"] == "json_invalid" for e in errors)
    return _error(
        400 if malformed else 422,
        "the request body is not JSON" if malformed else "invalid request",
        errors=errors,
    )


@app.exception_handler(queries.BadCursor)
def _bad_cursor(error: queries.BadCursor) -> Response[dict[str, Any]]:
    return _error(400, str(error), errors=[{"field": "query.cursor", "rule": "cursor"}])


@app.exception_handler(access.NotVisible)
def _not_visible(error: access.NotVisible) -> Response[dict[str, Any]]:
    return _error(404, str(error))


# -- partner (and everyone above) ----------------------------------------------------------------


@app.get("/me", summary="who the token says the caller is")
def me() -> dict[str, Any]:
    p = principal()
    return {"subject": p.subject, "role": p.role, "client_id": p.client_id}


@app.get("/clients/<client_id>/status", summary="metastore progress of a client, by date")
def client_status(
    client_id: ClientId,
    date_from: Annotated[date | None, Query(alias="from")] = None,
    date_to: Annotated[date | None, Query(alias="to")] = None,
    limit: Limit = queries.DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    access.scope(principal(), client_id)
    return queries.status_page(
        client_id, _yyyymmdd(date_from), _yyyymmdd(date_to), limit, cursor, stuck=_stuck
    )


@app.get(
    "/clients/<client_id>/dates/<business_date>/<table>",
    summary="an output of a client and date (the tables of `dataharvest export`)",
)
def client_output(
    client_id: ClientId,
    business_date: Annotated[date, Path(description="YYYY-MM-DD")],
    table: Annotated[OutputName, Path()],
    limit: Limit = queries.DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    access.scope(principal(), client_id)
    return queries.output_page(
        db.shared_connection(), principal(), table, client_id, business_date, limit, cursor
    )


@app.get("/clients/<client_id>/loads", summary="load history of a client (newest first)")
def client_loads(
    client_id: ClientId,
    business_date: Annotated[date | None, Query(alias="date")] = None,
    limit: Limit = queries.DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    access.scope(principal(), client_id)
    return queries.load_page(
        db.shared_connection(), principal(), client_id, business_date, limit, cursor
    )


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: str = Field(
        pattern=r"^(clients|portfolios|accounts|transactions)_[0-9]{8}\.csv(\.gz)?$",
        description="{entity}_{YYYYMMDD}.csv or .csv.gz",
    )
    max_bytes: int | None = Field(default=None, ge=1, le=uploads.DEFAULT_MAX_BYTES)


@app.post("/clients/<client_id>/uploads", summary="a presigned S3 POST for one landing key")
def client_upload(client_id: ClientId, request: UploadRequest) -> Response[dict[str, Any]]:
    access.scope(principal(), client_id)
    _note("upload.presign", f"{client_id}/{request.filename}", request.model_dump())
    try:
        post = uploads.presign(client_id, request.filename, request.max_bytes)
    except ValueError as error:
        return _error(422, str(error), errors=[{"field": "body.max_bytes", "rule": "range"}])
    return Response(201, content_types.APPLICATION_JSON, post)


# -- operator ------------------------------------------------------------------------------------


@app.get("/status", summary="every client's metastore items (one page of a scan)")
def all_status(limit: Limit = queries.DEFAULT_LIMIT, cursor: Cursor = None) -> dict[str, Any]:
    return queries.all_status_page(limit, cursor, stuck=_stuck)


def _entry_json(entry: registry.TransformerEntry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "enabled": entry.enabled,
        "filter": entry.filter_pattern,
        "target": entry.target,
        "watch": list(entry.watch),
        "owner": entry.owner,
        "description": entry.description,
    }


@app.get("/registry", summary="the registered transformers")
def registry_list() -> dict[str, Any]:
    return {"items": [_entry_json(e) for e in registry.load_all()], "next": None}


class EnableRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backfill: bool = Field(
        default=True,
        description="converge every item to the registry now (APPLY / RETRACT what is due)",
    )


def _lookup(name: str) -> registry.TransformerEntry:
    try:
        return registry.get(name)
    except registry.RegistryError as error:
        raise access.NotVisible(str(error)) from None


def _sent(messages: list[Any]) -> dict[str, int]:
    applies = sum(m.action == "APPLY" for m in messages)
    return {"apply": applies, "retract": len(messages) - applies}


@app.post("/registry/<name>/enable", summary="enable a transformer (backfill unless false)")
def registry_enable(
    name: Annotated[str, Path(pattern=TRANSFORMER_PATTERN)],
    request: EnableRequest | None = None,
) -> dict[str, Any]:
    request = request or EnableRequest()
    _note("registry.enable", name, request.model_dump())
    _lookup(name)
    entry = registry.set_enabled(name, True)
    registry_cache.refresh()
    sent = catapult.backfill(entry) if request.backfill else []
    return {**_entry_json(entry), "backfill": _sent(sent)}


@app.post("/registry/<name>/disable", summary="disable a transformer (backfill: retract now)")
def registry_disable(
    name: Annotated[str, Path(pattern=TRANSFORMER_PATTERN)],
    request: EnableRequest | None = None,
) -> dict[str, Any]:
    request = request or EnableRequest(backfill=False)
    _note("registry.disable", name, request.model_dump())
    _lookup(name)
    entry = registry.set_enabled(name, False)
    registry_cache.refresh()
    sent = catapult.backfill(entry) if request.backfill else []
    return {**_entry_json(entry), "backfill": _sent(sent)}


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    client_id: str = Field(pattern=CLIENT_PATTERN)
    date_from: date = Field(alias="from")
    date_to: date = Field(alias="to")

    @model_validator(mode="after")
    def _ordered(self) -> ReplayRequest:
        if self.date_from > self.date_to:
            raise ValueError("from is after to")
        return self


@app.post("/registry/<name>/replay", summary="re-run a transformer over a client's dates")
def registry_replay(
    name: Annotated[str, Path(pattern=TRANSFORMER_PATTERN)], request: ReplayRequest
) -> dict[str, Any]:
    _note("registry.replay", name, request.model_dump(mode="json", by_alias=True))
    entry = _lookup(name)
    sent = catapult.replay(
        entry, request.client_id, _yyyymmdd(request.date_from), _yyyymmdd(request.date_to)
    )
    return {"name": name, "client_id": request.client_id, "dates": len(sent)}


QueueName = Annotated[str | None, Query(pattern=r"^[a-z0-9-]{1,80}$")]


def _sqs() -> Any:
    import boto3

    return boto3.client("sqs")


def _queues(sqs: Any, name: str | None) -> list[Any]:
    from dataharvest import dlq
    from dataharvest.config import environment

    stage = environment().stage
    try:
        return dlq.select(dlq.queues(sqs, stage), name, stage)
    except dlq.UnknownQueue as error:
        raise access.NotVisible(str(error)) from None


@app.get("/dlq", summary="dead-lettered messages of the stage's dead-letter queues")
def dlq_list(queue: QueueName = None) -> dict[str, Any]:
    from dataharvest import dlq

    sqs = _sqs()
    chosen = _queues(sqs, queue)
    letters = [letter.as_dict() for q in chosen for letter in dlq.list_dead_letters(sqs, q)]
    return {
        "queues": [{"name": q.name, "on_failure": q.on_failure} for q in chosen],
        "items": letters,
        "next": None,
    }


class RedriveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queue: str | None = Field(default=None, pattern=r"^[a-z0-9-]{1,80}$")


@app.post("/dlq/redrive", summary="move dead letters back (on-failure records: reconcile)")
def dlq_redrive(request: RedriveRequest | None = None) -> dict[str, Any]:
    from dataharvest import dlq

    request = request or RedriveRequest()
    _note("dlq.redrive", request.queue or "*", request.model_dump())
    sqs = _sqs()
    chosen = _queues(sqs, request.queue)
    # Moved messages first: the reconciler run for on-failure records then sees their items.
    moved = {q.name: dlq.redrive(sqs, q) for q in sorted(chosen, key=lambda q: q.on_failure)}
    return {"redriven": moved, "total": sum(moved.values())}


class SettingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    header_aliases: dict[str, dict[str, str]] | None = Field(
        default=None, description="{entity: {alias: column}}; replaces the client's aliases"
    )
    max_reject_ratio: Decimal | None = Field(default=None, ge=0, le=1)
    retention_days: int | None = Field(default=None, ge=1, le=100_000)
    max_inflated_bytes: int | None = Field(default=None, ge=1)
    max_inflation_ratio: Decimal | None = Field(default=None, ge=1)


@app.get("/clients/<client_id>/settings", summary="a client's settings (defaults if none)")
def settings_read(client_id: ClientId) -> dict[str, Any]:
    conn = db.shared_connection()
    with conn.transaction():
        return settings_store.read(conn, client_id)


@app.put("/clients/<client_id>/settings", summary="create or update a client's settings")
def settings_write(client_id: ClientId, request: SettingsRequest) -> Response[dict[str, Any]]:
    _note("settings.put", client_id, request.model_dump(mode="json", exclude_none=True))
    try:
        created, current = settings_store.write(
            db.shared_connection(), client_id, **request.model_dump(exclude_none=True)
        )
    except ValueError as error:
        return _error(
            422, str(error), errors=[{"field": "body.header_aliases", "rule": "settings"}]
        )
    return Response(201 if created else 200, content_types.APPLICATION_JSON, current)


@app.delete("/clients/<client_id>/settings", summary="drop a client's settings (defaults apply)")
def settings_delete(client_id: ClientId) -> dict[str, Any]:
    _note("settings.delete", client_id)
    if not settings_store.delete(db.shared_connection(), client_id):
        raise access.NotVisible(f"client {client_id!r} has no settings")
    return {"client_id": client_id, "deleted": True}


# -- admin ---------------------------------------------------------------------------------------


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=TRANSFORMER_PATTERN)
    filter: dict[str, Any]
    target_queue: str = Field(
        pattern=r"^[A-Za-z0-9_{}.-]{1,80}$", description="queue name; {stage} is the stage"
    )
    watch: list[str] = Field(default_factory=list)
    enabled: bool = True
    owner: str = ""
    description: str = ""
    backfill: bool = True


@app.post("/registry", summary="register (or replace) a transformer's registry entry")
def registry_register(request: RegisterRequest) -> Response[dict[str, Any]]:
    from dataharvest.config import environment

    _note("registry.register", request.name, request.model_dump(mode="json"))
    sqs = _sqs()
    queue_name = request.target_queue.format(stage=environment().stage)
    try:
        target = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        return _error(
            422,
            f"target queue {queue_name!r} does not exist (deploy the service first)",
            errors=[{"field": "body.target_queue", "rule": "exists"}],
        )
    entry = registry.TransformerEntry(
        name=request.name,
        filter_pattern=request.filter,
        target=target,
        enabled=request.enabled,
        watch=tuple(request.watch),
        owner=request.owner,
        description=request.description,
    )
    try:
        registry.put(entry)
    except registry.RegistryError as error:
        return _error(422, str(error), errors=[{"field": "body.filter", "rule": "registry"}])
    registry_cache.refresh()
    sent = catapult.backfill(entry) if request.backfill and entry.enabled else []
    return Response(
        201, content_types.APPLICATION_JSON, {**_entry_json(entry), "backfill": _sent(sent)}
    )


# -- OpenAPI ---------------------------------------------------------------------------------------


@app.get("/openapi.json", include_in_schema=False)
def openapi() -> dict[str, Any]:
    return json.loads(app.get_openapi_json_schema(title="DataHarvest Data API", version="1"))


# -- the Lambda entry ------------------------------------------------------------------------------


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Authenticate (401), authorize by route rule (403 / 404), route, then audit mutations."""
    http = (event.get("requestContext") or {}).get("http") or {}
    method = str(http.get("method", "GET")).upper()
    path = event.get("rawPath") or http.get("path") or "/"
    CALL.clear()
    if method == "GET" and path in PUBLIC_PATHS:
        return app.resolve(event, context)
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    who: Principal | None = None
    try:
        who = verify(headers.get("authorization"))
        access.authorize(who, method, path)
    except AuthError as error:
        response = _plain(401, str(error), {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    except access.Forbidden as error:
        response = _plain(403, str(error))
    except access.NotVisible as error:
        response = _plain(404, str(error))
    else:
        app.append_context(principal=who)
        try:
            response = _resolve(event, context, method, who)
        except Exception as error:
            _audit(event, who, method, path, 500, f"{type(error).__name__}: {error}")
            raise
        finally:
            app.clear_context()
    _audit(event, who, method, path, int(response.get("statusCode", 500)), response.get("body"))
    return response


def _resolve(event: dict[str, Any], context: Any, method: str, who: Principal) -> dict[str, Any]:
    """Route the request; a read whose database connection was cut under it (a restart, a
    proxy failover or idle timeout: the first use of a stale connection) is answered once
    more on a new connection instead of a 500. Writes are not retried: the connection may
    have died after their commit."""
    try:
        return app.resolve(event, context)
    except psycopg.OperationalError:
        if method != "GET" or not db.shared_connection_lost():
            raise
        logger.warning(
            "database connection lost; reconnecting for the read",
            extra={"path": event.get("rawPath")},
        )
        app.append_context(principal=who)  # resolve() cleared it
        return app.resolve(event, context)


def _plain(status: int, message: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": content_types.APPLICATION_JSON, **(headers or {})},
        "body": json.dumps({"message": message}),
        "isBase64Encoded": False,
    }


def _audit(
    event: dict[str, Any],
    who: Principal | None,
    method: str,
    path: str,
    status: int,
    body: Any,
) -> None:
    if method not in audit.MUTATING:
        return
    result = "ok" if status < 400 else (body if isinstance(body, str) else None)
    audit.record(
        db.shared_connection(),
        principal=who,
        method=method,
        path=path,
        action=CALL.get("action") or _action(method, path),
        target=CALL.get("target"),
        request=CALL.get("request"),
        status=status,
        result=result,
        request_id=(event.get("requestContext") or {}).get("requestId"),
    )


def _action(method: str, path: str) -> str:
    """A refused call's action, from its path (`POST /registry/x/disable` -> registry.disable)."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "clients":
        return f"{parts[2]}.{method.lower()}"
    if len(parts) >= 3:
        return f"{parts[0]}.{parts[2]}"
    return ".".join([*parts, method.lower()])
