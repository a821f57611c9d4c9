"""`recomengine create-admin`: an admin account from the command line."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from domain.errors import DomainError
from domain.passwords import check_password
from store.admins import create_admin
from store.db import create_pool
from store.passwords import hash_password
from store.settings import get_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `create-admin`."""
    parser = subparsers.add_parser("create-admin", help="create an admin account")
    parser.add_argument("--email", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument(
        "--password-env",
        default="RECOMENGINE_ADMIN_PASSWORD",
        help="environment variable holding the password (prompted when unset)",
    )
    parser.add_argument(
        "--operator", action="store_true", help="grant the operator role (the /ops console)"
    )
    parser.set_defaults(func=run)


async def _create(email: str, name: str, password: str, *, operator: bool) -> str:
    settings = get_settings()
    pool = await create_pool(settings, min_size=1, max_size=1)
    try:
        password_hash = hash_password(password, rounds=settings.bcrypt_rounds)
        admin = await create_admin(
            pool, email=email, name=name, password_hash=password_hash, is_operator=operator
        )
        return admin.id
    finally:
        await pool.close()


def run(args: argparse.Namespace) -> int:
    """Create the admin and print its id."""
    password = os.environ.get(args.password_env) or getpass.getpass("Password: ")
    try:
        check_password(password, email=args.email)
        admin_id = asyncio.run(_create(args.email, args.name, password, operator=args.operator))
    except DomainError as error:
        details = "; ".join(f"{e.field}: {e.message}" for e in error.errors)
        print(f"error: {error.detail} {details}".strip(), file=sys.stderr)
        return 1
    print(admin_id)
    return 0
