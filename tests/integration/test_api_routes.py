"""The Data API on the local stack, over HTTP: every route and role, the 401/403/404/400/422
answers, pagination, presigned uploads and the audit trail."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from pathlib import Path

import boto3
import jwt
import pytest
from api_support import call, run_acme, token
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dataharvest.api import auth, uploads

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(local_stack) -> str:
    assert local_stack.info.api_url, "the local stack serves no API"
    return local_stack.info.api_url


@pytest.fixture(scope="module")
def home(local_stack) -> Path:
    return local_stack.home


@pytest.fixture(scope="module")
def acme(local_stack, tmp_path_factory) -> str:
    """A client whose acme-bank files ran through the choreography (one rejection on 01-03)."""
    client = f"api-{uuid.uuid4().hex[:8]}"
    run_acme(
        client,
        lambda t: local_stack.runner.wait_quiet(t),
        tmp_path_factory.mktemp("acme"),
    )
    return client


# -- authentication ----------------------------------------------------------------------


def test_openapi_is_public_and_lists_the_routes(api) -> None:
    status, doc = call(api, "GET", "/openapi.json")
    assert status == 200
    assert "/clients/{client_id}/status" in doc["paths"]
    assert "/clients/{client_id}/dates/{business_date}/{table}" in doc["paths"]


def _forged(role: str = "operator") -> str:
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    now = int(time.time())
    claims = {
        "iss": auth.LOCAL_ISSUER,
        "aud": auth.LOCAL_AUDIENCE,
        "sub": "mallory",
        "iat": now,
        "exp": now + 600,
        auth.GROUPS_CLAIM: [role],
    }
    return jwt.encode(claims, other, algorithm="ES256")


@pytest.mark.parametrize("path", ["/clients/acme-x/status", "/registry", "/dlq", "/me"])
def test_no_forged_or_expired_token_is_401(api, home, path) -> None:
    assert call(api, "GET", path)[0] == 401
    assert call(api, "GET", path, token="not-a-jwt")[0] == 401
    status, body = call(api, "GET", path, token=_forged())
    assert (status, body["message"]) == (401, "the token's signature is not valid")
    expired = auth.create_token(home, "admin", ttl_s=60, now=time.time() - 3600)
    status, body = call(api, "GET", path, token=expired)
    assert (status, body["message"]) == (401, "the token has expired")
    # Signed with the right key but with no algorithm ("none") or HS256 over the public key.
    unsigned = jwt.encode({"sub": "x", auth.GROUPS_CLAIM: ["admin"]}, None, algorithm="none")
    assert call(api, "GET", path, token=unsigned)[0] == 401


def test_token_roles_are_what_the_handler_says(api, home) -> None:
    status, me = call(api, "GET", "/me", token(home, "partner", "acme-x"))
    assert (status, me["role"], me["client_id"]) == (200, "partner", "acme-x")
    status, me = call(api, "GET", "/me", token(home, "operator"))
    assert (status, me["role"], me["client_id"]) == (200, "operator", None)


# -- partners: own client only --------------------------------------------------------------------


def test_partner_reads_its_status_outputs_and_loads(api, home, acme) -> None:
    partner = token(home, "partner", acme)
    status, page = call(api, "GET", f"/clients/{acme}/status", partner)
    assert status == 200
    assert [i["sort_key"] for i in page["items"]] == ["20240102", "20240103"]
    first = page["items"][0]
    assert first["account_persisted"] and first["account_rows"] == 4
    assert page["next"] is None

    status, summary = call(
        api, "GET", f"/clients/{acme}/dates/2024-01-02/portfolio-summary", partner
    )
    assert status == 200 and summary["next"] is None
    by_ref = {r["portfolio_reference"]: r for r in summary["items"]}
    assert by_ref["P-2001"]["cash_balance"] == "5000.00"  # exact decimal text, never a float

    status, rejections = call(api, "GET", f"/clients/{acme}/dates/2024-01-03/rejections", partner)
    assert status == 200
    assert [(r["column_name"], r["value"]) for r in rejections["items"]] == [("currency", "euro")]

    for table in ("client-tax", "quality-issues", "messages"):
        status, page = call(api, "GET", f"/clients/{acme}/dates/2024-01-02/{table}", partner)
        assert status == 200 and isinstance(page["items"], list), table

    status, loads = call(api, "GET", f"/clients/{acme}/loads?limit=3", partner)
    assert status == 200 and len(loads["items"]) == 3 and loads["next"]
    rest = call(api, "GET", f"/clients/{acme}/loads?limit=100&cursor={loads['next']}", partner)[1]
    ids = [r["load_id"] for r in loads["items"] + rest["items"]]
    assert len(ids) == len(set(ids)) == 8 and ids == sorted(ids, reverse=True)


def test_partner_asking_for_another_client_is_404(api, home, acme) -> None:
    other = token(home, "partner", "someone-else")
    for path in (
        f"/clients/{acme}/status",
        f"/clients/{acme}/dates/2024-01-02/portfolio-summary",
        f"/clients/{acme}/loads",
        f"/clients/does-not-exist-{uuid.uuid4().hex[:6]}/status",
    ):
        status, body = call(api, "GET", path, other)
        assert status == 404, (path, body)
    assert call(api, "POST", f"/clients/{acme}/uploads", other, {"filename": "a.csv"})[0] == 404


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/registry/tax_transformer/disable", {}),
        ("POST", "/registry/tax_transformer/enable", {"backfill": False}),
        ("GET", "/registry", None),
        ("GET", "/dlq", None),
        ("POST", "/dlq/redrive", {}),
        ("GET", "/status", None),
        ("GET", "/clients/p-own/settings", None),
        ("PUT", "/clients/p-own/settings", {"retention_days": 10}),
        ("POST", "/registry", {}),
    ],
)
def test_partner_may_not_operate_403(api, home, db, method, path, body) -> None:
    partner = token(home, "partner", "p-own")
    status, answer = call(api, method, path, partner, body)
    assert status == 403, answer
    if method != "GET":
        row = db.execute(
            "SELECT role, status, caller_client FROM audit.api_calls WHERE path = %s "
            "ORDER BY call_id DESC LIMIT 1",
            (path,),
        ).fetchone()
        assert row == ("partner", 403, "p-own")


def test_operator_may_not_register_403(api, home) -> None:
    status, _ = call(api, "POST", "/registry", token(home, "operator"), {"name": "x"})
    assert status == 403


# -- validation ----------------------------------------------------------------------


def test_bad_requests_name_the_field_and_rule(api, home, acme) -> None:
    operator = token(home, "operator")
    status, body = call(api, "GET", f"/clients/{acme}/dates/2024-02-30/rejections", operator)
    assert status == 422 and body["errors"][0]["field"] == "path.business_date"
    status, body = call(api, "GET", f"/clients/{acme}/dates/2024-01-02/nope", operator)
    assert status == 422 and body["errors"][0]["field"] == "path.table"
    status, body = call(api, "GET", f"/clients/{acme}/status?limit=0", operator)
    assert status == 422 and body["errors"][0] == {
        "field": "query.limit",
        "rule": "greater_than_equal",
        "message": "Input should be greater than or equal to 1",
    }
    status, body = call(api, "GET", f"/clients/{acme}/loads?cursor=garbage", operator)
    assert status == 400 and body["errors"][0]["field"] == "query.cursor"
    status, body = call(api, "PUT", f"/clients/{acme}/settings", operator, raw=b"{not json")
    assert status == 400
    status, body = call(
        api, "PUT", f"/clients/{acme}/settings", operator, {"max_reject_ratio": "1.5"}
    )
    assert status == 422
    assert body["errors"][0]["field"] == "body.max_reject_ratio"
    assert body["errors"][0]["rule"] == "less_than_equal"


# -- pagination ----------------------------------------------------------------------


def test_ten_thousand_rows_each_exactly_once(api, home, db) -> None:
    client = f"page-{uuid.uuid4().hex[:8]}"
    db.execute(
        """INSERT INTO audit.rejections (client_id, business_date, entity, source_key,
               source_version, line_number, column_name, value, reason)
           SELECT %s, DATE '2024-05-01', 'accounts', %s, 'v1', n + 1, 'currency',
                  'row-' || n, 'not 3 upper-case letters'
           FROM generate_series(1, 10000) AS n""",
        (client, f"{client}/accounts_20240501.csv"),
    )
    partner = token(home, "partner", client)
    seen: list[str] = []
    cursor, pages = None, 0
    while True:
        query = "?limit=777" + (f"&cursor={cursor}" if cursor else "")
        status, page = call(
            api, "GET", f"/clients/{client}/dates/2024-05-01/rejections{query}", partner
        )
        assert status == 200
        seen.extend(r["value"] for r in page["items"])
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    assert pages == 13
    assert len(seen) == 10000 and set(seen) == {f"row-{n}" for n in range(1, 10001)}
    # A cursor of one table is not accepted by another.
    other_table = f"/clients/{client}/dates/2024-05-01/portfolio-summary"
    status, _ = call(api, "GET", f"{other_table}?cursor={page_cursor(api, home, client)}", partner)
    assert status == 400


def page_cursor(api: str, home: Path, client: str) -> str:
    partner = token(home, "partner", client)
    return call(api, "GET", f"/clients/{client}/dates/2024-05-01/rejections?limit=1", partner)[1][
        "next"
    ]


# -- presigned uploads -----------------------------------------------------------------------------


def _post(url: str, fields: dict[str, str], content: bytes) -> int:
    import requests

    response = requests.post(url, data=fields, files={"file": ("f.csv", content)}, timeout=30)
    return response.status_code


def test_presigned_upload_policy(api, home, db, local_stack) -> None:
    client = f"up-{uuid.uuid4().hex[:8]}"
    partner = token(home, "partner", client)
    status, post = call(
        api,
        "POST",
        f"/clients/{client}/uploads",
        partner,
        {"filename": "accounts_20240102.csv", "max_bytes": 2000},
    )
    assert status == 201, post
    assert post["key"] == f"{client}/accounts_20240102.csv"
    policy = json.loads(base64.b64decode(post["fields"]["policy"]))
    assert ["starts-with", "$key", f"{client}/"] in policy["conditions"]
    assert {"key": post["key"]} in policy["conditions"]
    assert ["content-length-range", 1, 2000] in policy["conditions"]
    bucket = os.environ["LANDING_BUCKET"]
    for condition in uploads.policy_conditions(bucket, client, post["key"], 2000):
        assert condition in policy["conditions"]
    example = Path(__file__).resolve().parents[2] / "examples/acme-bank/accounts_20240102.csv"
    body = example.read_bytes()
    assert _post(post["url"], post["fields"], body) in (200, 201, 204)
    s3 = boto3.client("s3")
    assert s3.head_object(Bucket=bucket, Key=post["key"])["ContentLength"] == len(body)

    # moto's server stores a POST without checking its policy (moto 5: no policy evaluation,
    # docs/DECISIONS.md), so S3's refusal is checked against S3's documented rules instead:
    # every form field must satisfy the signed conditions, and nothing else may be sent.
    size = len(body)
    assert policy_allows(policy, post["fields"], size)
    assert not policy_allows(
        policy, {**post["fields"], "key": "someone-else/accounts_20240102.csv"}, size
    )
    assert not policy_allows(
        policy, {**post["fields"], "key": f"{client}/../x/accounts_20240102.csv"}, size
    )
    assert not policy_allows(
        policy, {**post["fields"], "key": f"{client}/clients_20240102.csv"}, size
    )
    assert not policy_allows(policy, post["fields"], 2001)
    assert not policy_allows(policy, post["fields"], 0)
    assert not policy_allows(policy, {**post["fields"], "acl": "public-read"}, size)
    assert not policy_allows(policy, post["fields"], size, bucket="another-bucket")
    status, _ = call(
        api, "POST", f"/clients/{client}/uploads", partner, {"filename": "../x_20240102.csv"}
    )
    assert status == 422
    local_stack.runner.wait_quiet(120)


def policy_allows(policy: dict, fields: dict[str, str], size: int, bucket: str = "") -> bool:
    """S3's POST policy check (AWS docs, "Creating a POST policy"): each condition holds for
    the form, and each form field but the signature, the policy and the file is covered."""
    form = {k.lower(): v for k, v in fields.items()}
    form["bucket"] = bucket or os.environ["LANDING_BUCKET"]  # the bucket the form is posted to
    covered = {"policy", "x-amz-signature", "file"}  # need no condition (SigV4)
    for condition in policy["conditions"]:
        if isinstance(condition, dict):
            ((name, value),) = condition.items()
            name = name.lower()
            if form.get(name) != value:
                return False
            covered.add(name)
            continue
        op, *args = condition
        if op == "content-length-range":
            if not args[0] <= size <= args[1]:
                return False
            continue
        name, value = args[0].lstrip("$").lower(), args[1]
        covered.add(name)
        if op == "eq" and form.get(name) != value:
            return False
        if op == "starts-with" and not str(form.get(name, "")).startswith(value):
            return False
    return set(form) <= covered


# -- operators ----------------------------------------------------------------------


def test_operator_sees_every_client_and_the_registry(api, home, acme) -> None:
    operator = token(home, "operator")
    assert call(api, "GET", f"/clients/{acme}/status", operator)[0] == 200
    status, page = call(api, "GET", "/status?limit=50", operator)
    assert status == 200 and page["items"]
    status, registry = call(api, "GET", "/registry", operator)
    names = {e["name"]: e for e in registry["items"]}
    assert status == 200 and "tax_transformer" in names


def test_operator_disables_and_enables_a_transformer(api, home, db) -> None:
    operator = token(home, "operator")
    name = "lake_exporter"  # off for the whole session except the lake tests (conftest)
    status, entry = call(api, "POST", f"/registry/{name}/enable", operator, {"backfill": False})
    assert (status, entry["enabled"], entry["backfill"]) == (200, True, {"apply": 0, "retract": 0})
    status, entry = call(api, "POST", f"/registry/{name}/disable", operator)
    assert (status, entry["enabled"]) == (200, False)
    assert call(api, "POST", "/registry/no_such_thing/disable", operator)[0] == 404
    rows = db.execute(
        "SELECT action, target, role, status FROM audit.api_calls WHERE target = %s "
        "ORDER BY call_id DESC LIMIT 2",
        (name,),
    ).fetchall()
    assert rows == [
        ("registry.disable", name, "operator", 200),
        ("registry.enable", name, "operator", 200),
    ]


def test_operator_replays_a_date_range(api, home, acme, local_stack) -> None:
    operator = token(home, "operator")
    status, body = call(
        api,
        "POST",
        "/registry/tax_transformer/replay",
        operator,
        {"client_id": acme, "from": "2024-01-01", "to": "2024-01-31"},
    )
    assert (status, body["dates"]) == (200, 2)
    status, body = call(
        api,
        "POST",
        "/registry/tax_transformer/replay",
        operator,
        {"client_id": acme, "from": "2024-02-01", "to": "2024-01-31"},
    )
    assert status == 422
    local_stack.runner.wait_quiet(120)


def test_operator_settings_crud(api, home, db) -> None:
    operator = token(home, "operator")
    client = f"set-{uuid.uuid4().hex[:8]}"
    path = f"/clients/{client}/settings"
    status, body = call(api, "GET", path, operator)
    assert (status, body["stored"], body["max_reject_ratio"]) == (200, False, "0.10")
    status, body = call(
        api,
        "PUT",
        path,
        operator,
        {
            "header_aliases": {"accounts": {"Accout_Number": "account_number"}},
            "max_reject_ratio": "0.25",
        },
    )
    assert status == 201, body
    assert body["header_aliases"] == {"accounts": {"accout_number": "account_number"}}
    status, body = call(api, "PUT", path, operator, {"retention_days": 30})
    assert (status, body["retention_days"], body["max_reject_ratio"]) == (200, 30, "0.25")
    status, body = call(
        api, "PUT", path, operator, {"header_aliases": {"accounts": {"x": "no_such_column"}}}
    )
    assert status == 422 and "no_such_column" in body["message"]
    assert call(api, "DELETE", path, operator) == (200, {"client_id": client, "deleted": True})
    assert call(api, "DELETE", path, operator)[0] == 404
    assert call(api, "GET", path, operator)[1]["stored"] is False
    actions = [
        r[0]
        for r in db.execute(
            "SELECT action || ':' || status FROM audit.api_calls WHERE target = %s "
            "ORDER BY call_id",
            (client,),
        ).fetchall()
    ]
    assert actions == [
        "settings.put:201",
        "settings.put:200",
        "settings.put:422",
        "settings.delete:200",
        "settings.delete:404",
    ]


def test_operator_lists_and_redrives_dead_letters(api, home, acme, local_stack) -> None:
    from persistence_support import s3_event

    operator = token(home, "operator")
    dlq_url = local_stack.info.export("PersistenceDeadLetterQueueUrl")
    key = f"{acme}/accounts_20240102.csv"
    boto3.client("sqs").send_message(
        QueueUrl=dlq_url, MessageBody=s3_event(key, "ObjectCreated:Put")
    )
    status, body = call(api, "GET", "/dlq?queue=persistence-dlq", operator)
    assert status == 200
    assert [(i["queue"], i["keys"]) for i in body["items"]] == [("persistence-dlq", [key])]
    assert call(api, "GET", "/dlq?queue=no-such-dlq", operator)[0] == 404
    status, body = call(api, "POST", "/dlq/redrive", operator, {"queue": "persistence-dlq"})
    assert (status, body["total"]) == (200, 1)
    local_stack.runner.wait_quiet(120)
    assert call(api, "GET", "/dlq?queue=persistence-dlq", operator)[1]["items"] == []


# -- admins ----------------------------------------------------------------------


def test_admin_registers_a_transformer(api, home, db) -> None:
    admin = token(home, "admin")
    entry = {
        "name": "api_echo_probe",
        "filter": {"dynamodb": {"NewImage": {"never_set_attribute": {"BOOL": [True]}}}},
        "target_queue": "dataharvest-{stage}-echo-transformer",
        "watch": ["never_set_attribute"],
        "enabled": False,
        "backfill": False,
    }
    status, body = call(api, "POST", "/registry", admin, entry)
    assert status == 201, body
    assert body["enabled"] is False and body["target"].endswith("echo-transformer")
    status, body = call(api, "POST", "/registry", admin, {**entry, "target_queue": "nope"})
    assert status == 422 and body["errors"][0]["field"] == "body.target_queue"
    status, body = call(api, "POST", "/registry", admin, {**entry, "filter": {"x": 1}})
    assert status == 422
    assert (
        db.execute(
            "SELECT count(*) FROM audit.api_calls WHERE action = 'registry.register' "
            "AND target = 'api_echo_probe'"
        ).fetchone()[0]
        == 3
    )


def test_cli_url_prints_the_base_url(api, capsys) -> None:
    from dataharvest_local import cli

    assert cli.main(["url"]) == 0
    assert capsys.readouterr().out == f"{api}\n"


def test_a_read_after_the_server_cut_the_api_connection_is_answered(api, home, acme, db) -> None:
    partner = token(home, "partner", acme)
    path = f"/clients/{acme}/dates/2024-01-02/portfolio-summary"
    status, before = call(api, "GET", path, partner)
    assert status == 200 and before["items"]
    # What a database restart, a proxy failover or an idle timeout does to the API's open
    # connection.
    (cut,) = db.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename LIKE %s",
        ("dataharvest_api%",),
    ).fetchone()
    assert cut >= 1
    status, after = call(api, "GET", path, partner)
    assert status == 200
    assert after == before
    # A mutating call after a cut, too: its audit row goes through a new connection.
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename LIKE %s",
        ("dataharvest_api%",),
    )
    body = {"filename": "accounts_20240102.csv", "max_bytes": 2000}
    status, post = call(api, "POST", f"/clients/{acme}/uploads", partner, body)
    assert status == 201, post
    (audited,) = db.execute(
        "SELECT count(*) FROM audit.api_calls WHERE path = %s AND status = 201",
        (f"/clients/{acme}/uploads",),
    ).fetchone()
    assert audited >= 1
