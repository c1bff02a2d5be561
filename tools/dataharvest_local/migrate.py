"""Apply the alembic migrations of this repo (used by `dataharvest up` and the tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dataharvest.db import database_url

REPO_ROOT = Path(__file__).resolve().parents[2]


def sqlalchemy_url(url: str | None = None) -> str:
    """The psycopg 3 dialect URL for SQLAlchemy, from a plain postgresql:// URL."""
    url = url or database_url()
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def alembic_config(url: str | None = None) -> Any:  # alembic.config.Config
    from alembic.config import Config

    cfg = Config(str(REPO_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    cfg.attributes["url"] = sqlalchemy_url(url)
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)
