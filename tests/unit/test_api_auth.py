"""Local tokens, the role rules and the event conversion of the local API front (no services)."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from dataharvest.api import access, auth
from dataharvest_local.api_server import http_event, http_response


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {auth.LOCAL_KEY_ENV: str(auth.ensure_signing_key(tmp_path))}


def test_token_round_trip_per_role(tmp_path, env) -> None:
    partner = auth.verify("Bearer " + auth.create_token(tmp_path, "partner", "acme"), env)
    assert (partner.role, partner.client_id) == ("partner", "acme")
    operator = auth.verify("Bearer " + auth.create_token(tmp_path, "operator", "acme"), env)
    assert (operator.role, operator.client_id) == ("operator", None)  # the claim is a partner's
    assert auth.verify("bearer " + auth.create_token(tmp_path, "admin"), env).at_least("operator")


def test_expired_and_foreign_tokens_are_refused(tmp_path, env) -> None:
    old = auth.create_token(tmp_path, "admin", ttl_s=10, now=time.time() - 100)
    with pytest.raises(auth.AuthError, match="expired"):
        auth.verify(f"Bearer {old}", env)
    other_home = tmp_path / "other"
    foreign = auth.create_token(other_home, "admin")
    with pytest.raises(auth.AuthError, match="signature"):
        auth.verify(f"Bearer {foreign}", env)
    for header in (None, "", "Basic abc", "Bearer "):
        with pytest.raises(auth.AuthError):
            auth.verify(header, env)


def test_key_file_is_private(tmp_path) -> None:
    assert auth.ensure_signing_key(tmp_path).stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604800), ("30", 30)]
)
def test_ttl(text, seconds) -> None:
    assert auth.parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "1w", "-1h", "h", "1.5h"])
def test_bad_ttl(text) -> None:
    with pytest.raises(ValueError):
        auth.parse_ttl(text)


def test_every_route_has_a_rule() -> None:
    from dataharvest.api.app import PUBLIC_PATHS, app

    admin = auth.Principal("a", "admin", None)
    for route in app._static_routes + app._dynamic_routes:
        path = re.sub(r"<(\w+)>", "x-1", route.path)
        for method in route.method.split("|") if isinstance(route.method, str) else route.method:
            if path in PUBLIC_PATHS:
                continue
            access.authorize(admin, method, path)  # NotVisible would mean: no rule


def test_partner_scope_and_roles() -> None:
    partner = auth.Principal("p", "partner", "acme")
    access.authorize(partner, "GET", "/clients/acme/status")
    with pytest.raises(access.NotVisible):
        access.authorize(partner, "GET", "/clients/other/status")
    with pytest.raises(access.Forbidden):
        access.authorize(partner, "POST", "/registry/x/disable")
    with pytest.raises(access.Forbidden):
        access.authorize(auth.Principal("o", "operator", None), "POST", "/registry")
    with pytest.raises(access.NotVisible):
        access.authorize(partner, "GET", "/no/such/route")


def test_http_event_and_response() -> None:
    event = http_event(
        "POST",
        "/clients/a%2Db/status?limit=5&x=1&x=2",
        [
            ("Host", "h"),
            ("Cookie", "a=1; b=2"),
            ("X-Y", "1"),
            ("X-Y", "2"),
            ("Content-Type", "application/json"),
        ],
        b'{"a": 1}',
        "127.0.0.1",
        now=0,
    )
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert event["rawPath"] == "/clients/a-b/status"
    assert event["queryStringParameters"] == {"limit": "5", "x": "1,2"}
    assert event["headers"]["x-y"] == "1,2" and event["cookies"] == ["a=1", "b=2"]
    assert event["body"] == '{"a": 1}' and event["isBase64Encoded"] is False
    assert event["requestContext"]["http"]["method"] == "POST"
    status, headers, body = http_response({"statusCode": 201, "body": "ok", "cookies": ["c=1"]})
    assert (status, body, ("Set-Cookie", "c=1") in headers) == (201, b"ok", True)
    assert http_response({"a": 1})[0] == 200


def test_cli_token_create_prints_the_token_alone(tmp_path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "dataharvest_local.cli",
            "token",
            "create",
            "--role",
            "partner",
            "--client",
            "acme",
            "--ttl",
            "15m",
        ],
        capture_output=True,
        text=True,
        env={"DATAHARVEST_HOME": str(tmp_path), "PATH": ""},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    token = run.stdout.strip()
    assert run.stdout == token + "\n" and token.count(".") == 2
    env = {auth.LOCAL_KEY_ENV: str(auth.key_path(tmp_path))}
    assert auth.verify(f"Bearer {token}", env).client_id == "acme"


@pytest.mark.parametrize(
    "argv",
    [
        ["--role", "partner"],
        ["--role", "root"],
        ["--role", "operator", "--ttl", "soon"],
        ["--role", "partner", "--client", "Bad_Id"],
    ],
)
def test_cli_token_create_bad_arguments_exit_2(tmp_path, argv) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "dataharvest_local.cli", "token", "create", *argv],
        capture_output=True,
        text=True,
        env={"DATAHARVEST_HOME": str(tmp_path), "PATH": ""},
        check=False,
    )
    assert run.returncode == 2
    assert "Traceback" not in run.stderr and run.stdout == ""


def test_binary_bodies_are_base64() -> None:
    event = http_event("POST", "/x", [("Content-Type", "application/gzip")], b"\x1f\x8b", "::1")
    assert event["isBase64Encoded"] is True and event["body"] == "H4s="
