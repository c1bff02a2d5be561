"""The local API front: HTTP requests on a loopback port become API Gateway HTTP API (payload
2.0) events for the api service's own handler, run in Lambda-like worker processes (the same
ones the runner uses); the handler's response becomes the HTTP response. The console's static
files are served beside it (S3 + CloudFront do that in the cloud).

Nothing of the API is implemented here: no routing, no auth. A request the handler fails on
answers 500 like API Gateway does for a failed integration.
"""

from __future__ import annotations

import base64
import json
import logging
import mimetypes
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from dataharvest.api.auth import LOCAL_KEY_ENV, ensure_signing_key
from dataharvest_local.instances import InvokeError, Worker
from dataharvest_local.slsconfig import LOCAL_ACCOUNT_ID

log = logging.getLogger(__name__)
PORT_ENV = "DATAHARVEST_API_PORT"
# What the infra stack's landing bucket CORS rule allows uploads from (serverless.yml).
CONSOLE_ORIGIN_ENV = "DATAHARVEST_CONSOLE_ORIGIN"
WORKERS_ENV = "DATAHARVEST_API_WORKERS"
CONSOLE_PREFIX = "/console/"
MAX_BODY = 10 * 1024 * 1024  # API Gateway's payload limit
TEXT_TYPES = ("text/", "application/json", "application/x-www-form-urlencoded")


def security_headers(upload_origin: str | None = None) -> dict[str, str]:
    """The console's response headers; `upload_origin` (the S3 endpoint presigned uploads go
    to) is the one other origin its scripts may connect to."""
    connect = "'self'" + (f" {upload_origin}" if upload_origin else "")
    return {
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src {connect}; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'self'"
        ),
    }


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def http_event(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
    now: float | None = None,
) -> dict[str, Any]:
    """The API Gateway HTTP API payload-2.0 event of one request (the `$default` route)."""
    now = time.time() if now is None else now
    raw_path, _, raw_query = target.partition("?")
    joined: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        name = name.lower()
        if name == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    query: dict[str, str] = {}
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value
    content_type = joined.get("content-type", "")
    is_text = not body or content_type.startswith(TEXT_TYPES)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": unquote(raw_path),
        "rawQueryString": raw_query,
        "headers": joined,
        "requestContext": {
            "accountId": LOCAL_ACCOUNT_ID,
            "apiId": "local",
            "domainName": joined.get("host", "localhost"),
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": unquote(raw_path),
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": joined.get("user-agent", ""),
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": "$default",
            "stage": "$default",
            "time": datetime.fromtimestamp(now, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": not is_text,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if body:
        event["body"] = body.decode() if is_text else base64.b64encode(body).decode()
    return event


def http_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body of a payload-2.0 Lambda response (API Gateway's rules: a value
    without statusCode is a 200 JSON body)."""
    if not isinstance(result, dict) or "statusCode" not in result:
        return 200, [("Content-Type", "application/json")], json.dumps(result).encode()
    headers = [(k, str(v)) for k, v in (result.get("headers") or {}).items()]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((name, str(v)) for v in values)
    headers.extend(("Set-Cookie", c) for c in result.get("cookies") or [])
    body = result.get("body") or ""
    payload = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
    return int(result["statusCode"]), headers, payload


class WorkerPool:
    """A few instances of the API function; a request takes whichever is free."""

    def __init__(self, workers: list[Worker]):
        self.workers = workers
        self.free: queue.Queue[Worker] = queue.Queue()
        for worker in workers:
            self.free.put(worker)

    def invoke(self, event: dict[str, Any]) -> Any:
        worker = self.free.get()
        try:
            return worker.invoke(event).result
        finally:
            self.free.put(worker)

    def warm(self) -> None:
        for worker in self.workers:
            threading.Thread(target=_warm, args=(worker,), daemon=True).start()

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


def _warm(worker: Worker) -> None:
    try:
        worker.warm()
    except InvokeError as error:
        log.warning("API warm-up failed: %s", error)


class LocalApi:
    """The HTTP front on 127.0.0.1; `url` is the API's base URL."""

    def __init__(
        self,
        invoke: Callable[[dict[str, Any]], Any],
        console_dir: Path,
        port: int = 0,
        upload_origin: str | None = None,
    ):
        self.invoke = invoke
        self.console_dir = console_dir.resolve()
        self.security_headers = security_headers(upload_origin)
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                front.serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> str:
        self.thread.start()
        return self.url

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- one request -----------------------------------------------------------------------

    def serve(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.partition("?")[0]
        if request.command in ("GET", "HEAD") and (path == "/" or path.startswith(CONSOLE_PREFIX)):
            self._static(request, path)
            return
        length = int(request.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(
                request,
                413,
                [("Content-Type", "application/json")],
                b'{"message":"payload too large"}',
            )
            return
        body = request.rfile.read(length) if length else b""
        event = http_event(
            request.command,
            request.path,
            list(request.headers.items()),
            body,
            request.client_address[0],
        )
        try:
            status, headers, payload = http_response(self.invoke(event))
        except InvokeError as error:
            log.error("API invocation failed: %s", error)
            status, headers = 500, [("Content-Type", "application/json")]
            payload = b'{"message":"Internal Server Error"}'
        self._send(request, status, headers, payload)

    def _static(self, request: BaseHTTPRequestHandler, path: str) -> None:
        if path == "/":
            self._send(request, 302, [("Location", CONSOLE_PREFIX)], b"")
            return
        relative = path[len(CONSOLE_PREFIX) :] or "index.html"
        file = (self.console_dir / unquote(relative)).resolve()
        if not file.is_relative_to(self.console_dir) or not file.is_file():
            self._send(request, 404, [("Content-Type", "text/plain")], b"not found")
            return
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind == "application/javascript":
            kind += "; charset=utf-8"
        headers = [
            ("Content-Type", kind),
            ("Cache-Control", "no-cache"),
            *self.security_headers.items(),
        ]
        self._send(request, 200, headers, file.read_bytes())

    @staticmethod
    def _send(
        request: BaseHTTPRequestHandler, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        request.send_response(status)
        for name, value in headers:
            if name.lower() not in ("content-length", "connection"):
                request.send_header(name, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(body)


def start_local_api(provisioner: Any, runner: Any, home: Path, port: int = 0) -> LocalApi | None:
    """Serve the stack's HTTP API function (the one with `httpApi` events), if it has one, on
    `port` (0: DATAHARVEST_API_PORT, else any free one).

    Presigned uploads point at the local AWS endpoint (the workers' AWS_ENDPOINT_URL, on
    loopback like this front), so a browser on this machine reaches them; the console's
    Content-Security-Policy lets its scripts connect there."""
    for stack in provisioner.stacks.values():
        for key, definition in stack.file.functions.items():
            if not any("httpApi" in event for event in definition.get("events") or []):
                continue
            spec = runner.function_spec(stack, key)
            spec.environment[LOCAL_KEY_ENV] = str(ensure_signing_key(home))
            count = max(1, int(os.environ.get(WORKERS_ENV) or 2))
            workers = [Worker(spec, runner.log_dir, i) for i in range(count)]
            pool = WorkerPool(workers)
            pool.warm()
            api = LocalApi(
                pool.invoke,
                stack.file.directory / "console",
                port or int(os.environ.get(PORT_ENV) or 0),
                upload_origin=origin_of(provisioner.endpoint_url),
            )
            api.pool = pool  # type: ignore[attr-defined]
            api.start()
            return api
    return None


def stop_local_api(api: LocalApi | None) -> None:
    if api is None:
        return
    api.stop()
    api.pool.stop()  # type: ignore[attr-defined]
