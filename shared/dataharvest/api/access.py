"""Who may call what: one rule per route, checked before the route runs (deny by default).

A route a role may not call answers 403; a partner asking for another client's data answers 404
(the same answer as for a client that does not exist, so ids are not confirmed). The routes
check the client scope again themselves (`scope`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dataharvest.api.auth import Principal

CLIENT = r"(?P<client_id>[^/]+)"


class Forbidden(Exception):
    """HTTP 403: the caller's role may not do this."""


class NotVisible(Exception):
    """HTTP 404: not found, or another client's data (indistinguishable on purpose)."""


@dataclass(frozen=True)
class Rule:
    methods: frozenset[str]
    path: re.Pattern[str]
    role: str  # the least role allowed

    def matches(self, method: str, path: str) -> re.Match[str] | None:
        return self.path.fullmatch(path) if method in self.methods else None


def _rule(methods: str, path: str, role: str) -> Rule:
    return Rule(frozenset(methods.split()), re.compile(path), role)


RULES: tuple[Rule, ...] = (
    _rule("GET", r"/me", "partner"),
    _rule("GET", rf"/clients/{CLIENT}/status", "partner"),
    _rule("GET", rf"/clients/{CLIENT}/dates/[^/]+/[^/]+", "partner"),
    _rule("GET", rf"/clients/{CLIENT}/loads", "partner"),
    _rule("POST", rf"/clients/{CLIENT}/uploads", "partner"),
    _rule("GET PUT DELETE", rf"/clients/{CLIENT}/settings", "operator"),
    _rule("GET", r"/status", "operator"),
    _rule("GET", r"/registry", "operator"),
    _rule("POST", r"/registry/[^/]+/(enable|disable|replay)", "operator"),
    _rule("POST", r"/registry", "admin"),
    _rule("GET", r"/dlq", "operator"),
    _rule("POST", r"/dlq/redrive", "operator"),
)


def authorize(principal: Principal, method: str, path: str) -> None:
    """Raise Forbidden / NotVisible unless `principal` may call `method path`."""
    for rule in RULES:
        found = rule.matches(method, path)
        if found is None:
            continue
        if not principal.at_least(rule.role):
            raise Forbidden(f"role {principal.role} may not call {method} {path}")
        client_id = found.groupdict().get("client_id")
        if client_id is not None:
            scope(principal, client_id)
        return
    raise NotVisible(f"no route {method} {path}")


def scope(principal: Principal, client_id: str) -> None:
    """A partner sees its own client only; anything else is 'not found'."""
    if principal.role == "partner" and principal.client_id != client_id:
        raise NotVisible(f"client {client_id!r} not found")
