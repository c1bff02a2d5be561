"""The landing bucket's CORS rule: the console's origin may POST an upload (presigned, see
dataharvest.api.uploads) from a browser and read the new version's id; no other origin, method
or request header is allowed. Checked on the deployed template (serverless.yml, as packaged for
a stage with its console origin), on the local bucket's rules, and with real cross-origin
requests to the local S3 endpoint (whose answers follow the bucket's rules, like S3's)."""

from __future__ import annotations

import os
import uuid
from typing import Any

import boto3
import pytest
import requests
from api_support import EXAMPLES, call, token

from dataharvest_local import slsconfig
from dataharvest_local.provision import s3_cors_configuration

CLOUD_CONSOLE = "https://d111111abcdef8.cloudfront.net"


def cors_allows(
    rules: list[dict[str, Any]], origin: str, method: str, headers: tuple[str, ...] = ()
) -> bool:
    """S3's CORS evaluation (AWS docs, "How does Amazon S3 evaluate the CORS configuration"):
    some rule names the origin (or a `*` pattern matching it), the method, and every request
    header. S3 API rule member names."""
    for rule in rules:
        origins = rule.get("AllowedOrigins", [])
        if origin not in origins and "*" not in origins:
            continue
        if method not in rule.get("AllowedMethods", []):
            continue
        allowed = [h.lower() for h in rule.get("AllowedHeaders", [])]
        if all(h.lower() in allowed or "*" in allowed for h in headers):
            return True
    return False


def assert_console_post_only(rules: list[dict[str, Any]], console: str) -> None:
    assert cors_allows(rules, console, "POST")
    for method in ("PUT", "GET", "HEAD", "DELETE"):
        assert not cors_allows(rules, console, method), method
    # Any other origin, including the console's host on another scheme or port.
    for other in (
        "https://evil.example",
        console.replace("https://", "http://").replace("http://127", "https://127"),
        console + "0",
        "null",
    ):
        assert other != console
        for method in ("POST", "PUT", "GET"):
            assert not cors_allows(rules, other, method), (other, method)
    # No request header is allowed (a form POST needs none), so no preflighted request either.
    assert not cors_allows(rules, console, "POST", ("Authorization",))
    assert not cors_allows(rules, console, "POST", ("x-amz-acl",))
    for rule in rules:
        assert "*" not in rule.get("AllowedOrigins", [])
        assert rule.get("ExposeHeaders") == ["x-amz-version-id"]


def _cors_rules(file: slsconfig.ServerlessFile) -> dict[str, list[dict[str, Any]]]:
    return {
        name: s3_cors_configuration(r["Properties"]["CorsConfiguration"])["CORSRules"]
        for name, r in file.resources.items()
        if r["Type"] == "AWS::S3::Bucket" and "CorsConfiguration" in r["Properties"]
    }


def test_deployed_landing_bucket_allows_posts_from_the_console_origin_only() -> None:
    root = slsconfig.load(
        slsconfig.root_file(),
        "prod",
        "eu-west-1",
        environ={**os.environ, "DATAHARVEST_CONSOLE_ORIGIN": CLOUD_CONSOLE},
    )
    rules = _cors_rules(root)
    # The landing bucket is the only bucket of the stage a browser may send anything to.
    assert set(rules) == {"LandingBucket"}
    assert_console_post_only(rules["LandingBucket"], CLOUD_CONSOLE)
    api = slsconfig.load(slsconfig.REPO_ROOT / "services/api/serverless.yml", "prod")
    assert _cors_rules(api) == {}


def test_undeployed_console_origin_matches_no_browser() -> None:
    environ = {k: v for k, v in os.environ.items() if k != "DATAHARVEST_CONSOLE_ORIGIN"}
    root = slsconfig.load(slsconfig.root_file(), "prod", "eu-west-1", environ=environ)
    (rule,) = _cors_rules(root)["LandingBucket"]
    assert rule["AllowedOrigins"] == ["https://console.invalid"]


@pytest.fixture
def console_origin(stack_info) -> str:
    assert stack_info.api_url.startswith("http://127.0.0.1:")
    return stack_info.api_url


def test_local_landing_bucket_rules_allow_the_console_origin_only(console_origin) -> None:
    rules = boto3.client("s3").get_bucket_cors(Bucket=os.environ["LANDING_BUCKET"])["CORSRules"]
    assert_console_post_only(rules, console_origin)


def test_local_endpoint_answers_cross_origin_requests_by_the_rules(
    console_origin, stack_info, local_stack
) -> None:
    client = f"cors-{uuid.uuid4().hex[:8]}"
    status, post = call(
        stack_info.api_url,
        "POST",
        f"/clients/{client}/uploads",
        token(local_stack.home, "partner", client),
        {"filename": "accounts_20240102.csv"},
    )
    assert status == 201, post
    other = "http://localhost:" + console_origin.rsplit(":", 1)[1]  # same port, other origin

    def preflight(origin: str, method: str) -> requests.Response:
        return requests.options(
            post["url"],
            headers={"Origin": origin, "Access-Control-Request-Method": method},
            timeout=30,
        )

    allowed = preflight(console_origin, "POST")
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == console_origin
    assert allowed.headers["Access-Control-Allow-Methods"] == "POST"
    # A browser refuses PUT: the answer does not list it.
    assert "PUT" not in preflight(console_origin, "PUT").headers.get(
        "Access-Control-Allow-Methods", ""
    )
    assert preflight(other, "POST").status_code == 403
    assert "Access-Control-Allow-Origin" not in preflight(other, "POST").headers

    body = (EXAMPLES / "accounts_20240102.csv").read_bytes()

    def upload(origin: str) -> requests.Response:
        return requests.post(
            post["url"],
            data=post["fields"],
            files={"file": ("accounts_20240102.csv", body)},
            headers={"Origin": origin},
            timeout=30,
        )

    answer = upload(console_origin)
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == console_origin
    assert answer.headers["Access-Control-Expose-Headers"] == "x-amz-version-id"
    head = boto3.client("s3").head_object(Bucket=os.environ["LANDING_BUCKET"], Key=post["key"])
    assert answer.headers["x-amz-version-id"] == head["VersionId"]
    # S3 stores a POST from any origin (CORS is the browser's rule), but tells the browser
    # nothing it may read: no Access-Control-Allow-Origin for another origin.
    foreign = upload(other)
    assert "Access-Control-Allow-Origin" not in foreign.headers
    assert foreign.headers["x-amz-version-id"] != answer.headers["x-amz-version-id"]
    local_stack.runner.wait_quiet(120)
