"""Bearer tokens: who is calling and in which role.

Tokens are JWTs shaped like Cognito ID tokens: the role is a group (`cognito:groups`), a
partner's client id is the custom claim `custom:client_id`. In the cloud they come from the
stage's Cognito user pool (the HTTP API's JWT authorizer checks them first; the handler checks
them again against the pool's JWKS). Locally `dataharvest token create` signs them with an ES256
key kept under DATAHARVEST_HOME, and the local API verifies them with its public half.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jwt

ROLES = ("partner", "operator", "admin")  # each role can do what the one before it can
GROUPS_CLAIM = "cognito:groups"
CLIENT_CLAIM = "custom:client_id"
LOCAL_ISSUER = "dataharvest-local"
LOCAL_AUDIENCE = "dataharvest-api"
ALGORITHM = "ES256"
CLIENT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Environment: the local key (set by the local API front for its workers), or the pool.
LOCAL_KEY_ENV = "DATAHARVEST_API_LOCAL_KEY"
COGNITO_ISSUER_ENV = "COGNITO_ISSUER"
COGNITO_AUDIENCE_ENV = "COGNITO_APP_CLIENT_ID"
LEEWAY_S = 5


class AuthError(Exception):
    """The request is not authenticated (HTTP 401); the message says why."""


@dataclass(frozen=True)
class Principal:
    subject: str
    role: str
    client_id: str | None  # a partner's own client; None for operators and admins

    def at_least(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def key_path(home: Path) -> Path:
    return home / "api" / "signing-key.pem"


def ensure_signing_key(home: Path) -> Path:
    """The local ES256 private key (P-256), created on first use, readable by its owner only."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = key_path(home)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    os.replace(partial, path)  # two first uses at once: one key wins, both read it after
    return path


def parse_ttl(text: str) -> int:
    """`90s`, `15m`, `1h`, `7d` (or plain seconds) -> seconds; ValueError when malformed."""
    found = re.fullmatch(r"([0-9]{1,7})([smhd]?)", text.strip())
    if not found or int(found[1]) == 0:
        raise ValueError(f"--ttl {text!r}: expected a positive duration like 90s, 15m, 1h or 7d")
    return int(found[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[found[2]]


def create_token(
    home: Path,
    role: str,
    client_id: str | None = None,
    ttl_s: int = 3600,
    subject: str | None = None,
    now: float | None = None,
) -> str:
    """A local bearer token; ValueError for a role/client combination the API would refuse."""
    if role not in ROLES:
        raise ValueError(f"--role {role!r}: expected one of {', '.join(ROLES)}")
    if role == "partner" and not client_id:
        raise ValueError("a partner token needs --client ID")
    if client_id is not None and not CLIENT_ID.fullmatch(client_id):
        raise ValueError(f"--client {client_id!r} is not a client id ({CLIENT_ID.pattern})")
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "iss": LOCAL_ISSUER,
        "aud": LOCAL_AUDIENCE,
        "sub": subject or f"local-{role}-{uuid.uuid4().hex[:8]}",
        "iat": issued,
        "exp": issued + ttl_s,
        "token_use": "id",
        GROUPS_CLAIM: [role],
    }
    if role == "partner":
        claims[CLIENT_CLAIM] = client_id
    key = ensure_signing_key(home).read_bytes()
    return jwt.encode(claims, key, algorithm=ALGORITHM)


@lru_cache(maxsize=4)
def _local_public_key(path: str, mtime_ns: int) -> Any:
    from cryptography.hazmat.primitives import serialization

    del mtime_ns  # cache key only: a new key file is read again
    return serialization.load_pem_private_key(Path(path).read_bytes(), None).public_key()


@lru_cache(maxsize=2)
def _jwks_client(issuer: str) -> jwt.PyJWKClient:
    # Cognito publishes the pool's keys here; PyJWKClient caches them per cold start.
    return jwt.PyJWKClient(f"{issuer}/.well-known/jwks.json", cache_keys=True)


def verify(authorization: str | None, environ: dict[str, str] | None = None) -> Principal:
    """The caller of a request with this Authorization header; AuthError (401) otherwise."""
    environ = environ if environ is not None else dict(os.environ)
    if not authorization:
        raise AuthError("missing bearer token (Authorization: Bearer <token>)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("the Authorization header must be 'Bearer <token>'")
    token = token.strip()
    local_key = environ.get(LOCAL_KEY_ENV)
    try:
        if local_key:
            path = Path(local_key)
            key = _local_public_key(str(path), path.stat().st_mtime_ns)
            issuer, audience = LOCAL_ISSUER, LOCAL_AUDIENCE
        else:
            issuer = environ.get(COGNITO_ISSUER_ENV) or ""
            audience = environ.get(COGNITO_AUDIENCE_ENV) or ""
            if not issuer or not audience:
                raise AuthError("the API has no token issuer configured")
            key = _jwks_client(issuer).get_signing_key_from_jwt(token).key
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM] if local_key else ["RS256"],
            audience=audience,
            issuer=issuer,
            leeway=LEEWAY_S,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("the token has expired") from None
    except jwt.InvalidSignatureError:
        raise AuthError("the token's signature is not valid") from None
    except (jwt.InvalidTokenError, jwt.PyJWKClientError) as error:
        raise AuthError(f"the token is not valid: {error}") from None
    return principal_from_claims(claims)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    groups = claims.get(GROUPS_CLAIM) or []
    if isinstance(groups, str):
        groups = [groups]
    roles = [g for g in groups if g in ROLES]
    if not roles:
        raise AuthError("the token carries no role (cognito:groups: partner, operator or admin)")
    role = max(roles, key=ROLES.index)
    client_id = claims.get(CLIENT_CLAIM)
    if role == "partner":
        if not isinstance(client_id, str) or not CLIENT_ID.fullmatch(client_id):
            raise AuthError("a partner token must carry its client id (custom:client_id)")
    else:
        client_id = None
    return Principal(subject=str(claims["sub"]), role=role, client_id=client_id)
