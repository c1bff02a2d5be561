"""Which PostgreSQL role each service connects as: the ONE place that maps a deployed service
to its database role (docs/DECISIONS.md, "Database roles per service").

The roles and their grants are created by migrations (0010_service_roles); each group role
`dataharvest_<x>` (NOLOGIN) has a login role `dataharvest_<x>_fn` that the service's functions
use: with an IAM token in the cloud (security/connection.py), with a password the local stack
sets locally. Migrations, the CLI and admin paths use the owner's URL.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

# serverless service name -> group role; None: the service does not use the database.
# A new service gets a line here and its grants in a migration (docs/DECISIONS.md).
SERVICE_ROLES: dict[str, str | None] = {
    "dataharvest-persistence": "dataharvest_persistence",
    "dataharvest-relationship-transformer": "dataharvest_relationship_transformer",
    "dataharvest-transaction-transformer": "dataharvest_transaction_transformer",
    "dataharvest-sum-deposit-transformer": "dataharvest_sum_deposit_transformer",
    "dataharvest-tax-transformer": "dataharvest_tax_transformer",
    "dataharvest-partner-publisher": "dataharvest_partner_publisher",
    "dataharvest-lake-exporter": "dataharvest_lake_exporter",
    "dataharvest-snapshot-applier": "dataharvest_snapshot_applier",
    "dataharvest-operations": "dataharvest_operations",
    # Operator rights; a partner's request switches to PARTNER_ROLE (api/queries.py).
    "dataharvest-api": "dataharvest_api",
    "dataharvest-catapult": None,
    # No functions: the console's bucket, CloudFront and WAF (us-east-1).
    "dataharvest-console-edge": None,
}
# A partner's reads through the API: NOLOGIN, SELECT only, under row-level security keyed on
# the session setting below (bound from the verified token in the same transaction).
PARTNER_ROLE = "dataharvest_api_partner"
CLIENT_SETTING = "dataharvest.client_id"


def login_role(group: str) -> str:
    """The LOGIN member of a group role (the user a function connects as)."""
    return f"{group}_fn"


def role_for(service: str) -> str | None:
    """The group role of a service; KeyError for a service nobody gave a role yet."""
    return SERVICE_ROLES[service]


def url_for_user(url: str, user: str, password: str | None) -> str:
    """`url` with another user and password, both percent-encoded."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = quote(user, safe="")
    if password is not None:
        netloc += ":" + quote(password, safe="")
    netloc += "@" + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
