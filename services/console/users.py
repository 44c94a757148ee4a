"""Create console users: `python -m services.console.users create --email E --role R`.

Prints the e-mail, a generated password and (with `--with-totp`) the TOTP secret, as JSON.
Without `--with-totp` the user enrols an authenticator at first sign-in.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from services.console.domain import Role, hash_password, new_password, new_totp_secret
from services.console.settings import ConsoleSettings
from services.console.store import ConsoleStore, new_user
from shared.db import create_engine, migrate, session_factory

MIGRATIONS = Path(__file__).parent / "migrations"


async def create_user(
    database_url: str,
    email: str,
    role: Role,
    password: str | None = None,
    with_totp: bool = False,
    replace: bool = False,
) -> dict[str, object]:
    """Add a user (or, with `replace`, reset one) and return its one-time credentials."""
    password = password or new_password()
    engine = create_engine(database_url)
    try:
        store = ConsoleStore(session_factory(engine))
        user = new_user(email, role, hash_password(password))
        secret = new_totp_secret() if with_totp else None
        codes = user.enrol(secret) if secret else []
        existing = await store.user_by_email(user.email)
        if existing is not None:
            if not replace:
                raise SystemExit(f"a user {user.email} already exists")
            user.id, user.session_epoch = existing.id, existing.session_epoch + 1
            await store.save_user(user)
        else:
            await store.add_user(user)
    finally:
        await engine.dispose()
    return {
        "email": user.email,
        "role": role.value,
        "password": password,
        "totp_secret": secret,
        "recovery_codes": codes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.console.users")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a console user")
    create.add_argument("--email", required=True)
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--with-totp", action="store_true", help="enrol TOTP now, print secret")
    create.add_argument("--replace", action="store_true", help="reset an existing user")
    args = parser.parse_args(argv)
    url = ConsoleSettings().db_url
    migrate(MIGRATIONS, url)
    created = asyncio.run(
        create_user(
            url, args.email, Role(args.role), with_totp=args.with_totp, replace=args.replace
        )
    )
    json.dump(created, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
