"""The service -> database role mapping (security/roles.py) covers every service, and URLs
carry any user and password percent-encoded."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from dataharvest.security import roles

SERVICES = Path(__file__).resolve().parents[2] / "services"


def test_every_service_has_a_database_role_or_says_it_has_none():
    names = set()
    for path in sorted(SERVICES.glob("*/serverless.yml")):
        text = path.read_text()
        names.add(
            next(
                line.split(":", 1)[1].strip()
                for line in text.splitlines()
                if line.startswith("service:")
            )
        )
    missing = sorted(names - set(roles.SERVICE_ROLES))
    assert not missing, f"add these to dataharvest.security.roles.SERVICE_ROLES: {missing}"


def test_group_roles_are_named_for_postgres_and_login_roles_follow():
    for role in [*filter(None, roles.SERVICE_ROLES.values()), roles.PARTNER_ROLE]:
        assert role.isidentifier() and role == role.lower() and len(role) <= 60
        assert roles.login_role(role) == f"{role}_fn"


def test_url_for_user_encodes_user_and_password():
    password = "p@ss:w/rd?&=%#"
    url = roles.url_for_user(
        "postgresql://owner:x@127.0.0.1:5432/dataharvest?sslmode=require", "u", password
    )
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1" and parts.port == 5432 and parts.path == "/dataharvest"
    assert unquote(parts.password) == password and parts.username == "u"
    assert parts.query == "sslmode=require"
