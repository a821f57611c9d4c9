"""`recomengine migrate`: apply (or roll back) the Alembic migrations."""

from __future__ import annotations

import argparse
from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(database_url: str | None = None) -> Config:
    """Alembic's configuration for this project, optionally for another database."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    if database_url:
        config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str | None = None, revision: str = "head") -> None:
    """Upgrade the schema to `revision`."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str | None = None, revision: str = "base") -> None:
    """Downgrade the schema to `revision`."""
    command.downgrade(alembic_config(database_url), revision)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `migrate`."""
    parser = subparsers.add_parser("migrate", help="upgrade the database schema")
    parser.add_argument("--revision", default="head")
    parser.add_argument("--downgrade", action="store_true", help="downgrade to --revision")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Apply the requested migration."""
    if args.downgrade:
        downgrade(revision=args.revision if args.revision != "head" else "base")
    else:
        upgrade(revision=args.revision)
    return 0
