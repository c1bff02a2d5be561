"""Where a presigned upload points: the landing bucket's regional virtual-hosted URL in the
cloud (a browser posts there directly, without S3's redirect from the global endpoint), the
local endpoint path-style locally. Signing is offline: no request is made."""

from __future__ import annotations

import pytest

from dataharvest.api import uploads

BUCKET = "dataharvest-prod-landing-123456789012"


@pytest.fixture
def signing_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("LANDING_BUCKET", BUCKET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return monkeypatch


def test_cloud_upload_url_is_the_buckets_regional_endpoint(signing_env) -> None:
    signing_env.delenv("AWS_ENDPOINT_URL", raising=False)
    post = uploads.presign("acme-bank", "accounts_20240102.csv", 100)
    assert post["url"] == f"https://{BUCKET}.s3.eu-west-1.amazonaws.com/"
    assert post["fields"]["key"] == "acme-bank/accounts_20240102.csv"


def test_local_upload_url_is_the_local_endpoint(signing_env) -> None:
    signing_env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    post = uploads.presign("acme-bank", "accounts_20240102.csv", 100)
    assert post["url"] == f"http://127.0.0.1:4566/{BUCKET}"
