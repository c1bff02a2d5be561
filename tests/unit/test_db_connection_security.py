"""Connection URLs in the cloud (security/connection.py): verified TLS against the shipped CA
bundle, an IAM token for the function's own user, every credential percent-encoded."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import pytest

from dataharvest.security import connection


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    path = tmp_path / "rds bundle.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("DATABASE_CA_BUNDLE", str(path))
    return path


def test_build_url_encodes_credentials_and_verifies_the_certificate(bundle):
    url = connection.build_url("svc", "pa:ss/w@rd&x=1", "proxy.example", 5432, "dataharvest")
    parts = urlsplit(url)
    assert parts.hostname == "proxy.example" and parts.username == "svc"
    assert unquote(parts.password) == "pa:ss/w@rd&x=1"
    query = parse_qs(parts.query)
    assert query["sslmode"] == ["verify-full"] and query["sslrootcert"] == [str(bundle)]


def test_iam_url_carries_a_signed_token_for_the_function_user(bundle, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    rds = boto3.client("rds", region_name="eu-west-1")  # signs locally, no request is sent
    env = {"DATABASE_USER": "dataharvest_tax_transformer_fn", "DATABASE_HOST": "prx.example"}
    url = connection.iam_database_url(env, rds=rds)
    parts = urlsplit(url)
    token = unquote(parts.password)
    assert parts.username == "dataharvest_tax_transformer_fn" and parts.port == 5432
    assert token.startswith("prx.example:5432/?Action=connect")
    assert "DBUser=dataharvest_tax_transformer_fn" in token and "X-Amz-Signature=" in token
    assert parse_qs(parts.query)["sslmode"] == ["verify-full"]


def test_no_user_means_no_iam_url():
    assert connection.iam_database_url({"DATABASE_HOST": "prx.example"}) is None


def test_without_a_ca_bundle_nothing_connects(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_CA_BUNDLE", str(tmp_path / "missing.pem"))
    with pytest.raises(connection.MissingCaBundle):
        connection.build_url("u", "p", "h", 5432, "d")


def test_the_package_ships_the_roots_rds_proxy_chains_to(monkeypatch):
    from datetime import UTC, datetime

    from cryptography import x509

    monkeypatch.delenv("DATABASE_CA_BUNDLE", raising=False)
    bundle = connection.ca_bundle()
    assert bundle == connection.BUNDLED_CA
    certificates = x509.load_pem_x509_certificates(bundle.read_bytes())
    subjects = {c.subject.rfc4514_string() for c in certificates}
    assert {f"CN=Amazon Root CA {n},O=Amazon,C=US" for n in (1, 2, 3, 4)} <= subjects
    assert any("Starfield Services Root Certificate Authority - G2" in s for s in subjects)
    assert len(certificates) == 5
    for certificate in certificates:
        # Self-signed roots, CAs, valid now and for years to come.
        assert certificate.issuer == certificate.subject
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.value.ca
        assert certificate.not_valid_after_utc > datetime(2030, 1, 1, tzinfo=UTC)
    url = connection.build_url("u", "p", "prx.example", 5432, "d")
    assert url.endswith(f"sslrootcert={bundle}") or "amazon-trust-roots.pem" in url
