"""How a function reaches PostgreSQL in the cloud: through RDS Proxy, TLS verified against the
Amazon Trust Services roots the proxy's ACM certificate chains to (sslmode=verify-full),
authenticated by a short-lived IAM token for its own database user: no password in any
function (docs/DECISIONS.md, "Database connections").

Environment (serverless.yml of each service): DATABASE_HOST (the proxy endpoint),
DATABASE_USER (the service's login role, security/roles.py), DATABASE_NAME, DATABASE_PORT;
DATABASE_CA_BUNDLE overrides the bundle shipped in the package.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

# RDS Proxy presents a certificate from AWS Certificate Manager, which chains to the Amazon
# Trust Services roots (not to the RDS CA bundle, which signs the DB instances' own
# certificates). The roots are in the repository and in every zip
# (scripts/extract-amazon-trust-roots.py writes them from certifi's copy of Mozilla's store).
BUNDLED_CA = Path(__file__).parent / "certs" / "amazon-trust-roots.pem"


class MissingCaBundle(RuntimeError):
    pass


def ca_bundle() -> Path:
    """The CA bundle to verify the proxy's certificate; fails closed when there is none."""
    path = Path(os.environ.get("DATABASE_CA_BUNDLE") or BUNDLED_CA)
    if not path.is_file():
        raise MissingCaBundle(
            f"no CA bundle at {path} (DATABASE_CA_BUNDLE, or the package's "
            "certs/amazon-trust-roots.pem): the database is never reached without certificate "
            "verification"
        )
    return path


def tls_query() -> str:
    return f"sslmode=verify-full&sslrootcert={quote(str(ca_bundle()), safe='/')}"


def build_url(user: str, password: str, host: str, port: int | str, dbname: str) -> str:
    """A postgresql:// URL, user and password percent-encoded (a token or a generated password
    may hold '@', ':', '/', '&'), TLS verified."""
    return (
        f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/"
        f"{quote(dbname, safe='')}?{tls_query()}"
    )


def iam_database_url(environ: dict[str, str] | None = None, rds: Any = None) -> str | None:
    """The URL with a fresh IAM auth token (valid 15 minutes, only needed to connect), or None
    when DATABASE_USER is not set (then the secret is used: migrations and admin paths)."""
    env = os.environ if environ is None else environ
    user = env.get("DATABASE_USER")
    host = env.get("DATABASE_HOST")
    if not user or not host:
        return None
    port = int(env.get("DATABASE_PORT") or os.environ.get("DATABASE_PORT") or 5432)
    if rds is None:
        import boto3

        rds = boto3.client("rds")
    token = rds.generate_db_auth_token(DBHostname=host, Port=port, DBUsername=user)
    dbname = env.get("DATABASE_NAME") or os.environ.get("DATABASE_NAME") or "dataharvest"
    return build_url(user, token, host, port, dbname)
