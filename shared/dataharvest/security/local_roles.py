"""The local stack's side of the database roles: which URL each service's functions get."""

from __future__ import annotations

import logging

from dataharvest.security import roles

logger = logging.getLogger(__name__)


class ServiceDatabases:
    """service name -> environment overrides: DATABASE_URL as the service's login role.

    Services with no database (role None) get no DATABASE_URL at all, so a use of it fails
    loudly. Services that are not in roles.SERVICE_ROLES (the test fixtures) keep the owner's
    URL; tests/unit/test_security_roles.py makes sure every product service is mapped."""

    def __init__(self, owner_url: str):
        self.owner_url = owner_url
        self.urls = roles.local_role_urls(owner_url)

    def __call__(self, service: str) -> dict[str, str]:
        # The lake's local SQL catalog stands in for Glue: it is not data, it stays the owner's.
        env = {"LAKE_CATALOG_URL": self.owner_url}
        if service not in roles.SERVICE_ROLES:
            logger.info("%s has no database role; it connects as the owner", service)
            return env
        role = roles.role_for(service)
        env["DATABASE_URL"] = self.urls[role] if role else ""
        return env
