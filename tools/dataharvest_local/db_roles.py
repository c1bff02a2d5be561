"""The local stack's side of the database roles (docs/DECISIONS.md, "Database roles per
service"): each service's functions connect as the service's own login role, so every
integration test proves the grants of migration 0010_service_roles suffice."""

from __future__ import annotations

import logging
import secrets

import psycopg
from psycopg import sql

from dataharvest.security import roles

logger = logging.getLogger(__name__)


def local_role_urls(owner_url: str) -> dict[str, str]:
    """Give each service's login role a fresh random password (local stack only) and return
    group role -> connection URL as its login role. In the cloud the login roles have no
    password: IAM authentication (security/connection.py)."""
    urls = {}
    with psycopg.connect(owner_url, autocommit=True) as conn:
        for group in sorted({r for r in roles.SERVICE_ROLES.values() if r}):
            password = secrets.token_urlsafe(24)
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(roles.login_role(group)), sql.Literal(password)
                )
            )
            urls[group] = roles.url_for_user(owner_url, roles.login_role(group), password)
    return urls


class ServiceDatabases:
    """service name -> environment overrides: DATABASE_URL as the service's login role.

    Services with no database (role None) get no DATABASE_URL at all, so a use of it fails
    loudly. Services that are not in roles.SERVICE_ROLES (the test fixtures) keep the owner's
    URL; tests/unit/test_role_mapping.py makes sure every product service is mapped."""

    def __init__(self, owner_url: str):
        self.owner_url = owner_url
        self.urls = local_role_urls(owner_url)

    def __call__(self, service: str) -> dict[str, str]:
        # The lake's local SQL catalog stands in for Glue: it is not data, it stays the owner's.
        env = {"LAKE_CATALOG_URL": self.owner_url}
        if service not in roles.SERVICE_ROLES:
            logger.info("%s has no database role; it connects as the owner", service)
            return env
        role = roles.role_for(service)
        env["DATABASE_URL"] = self.urls[role] if role else ""
        return env
