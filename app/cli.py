"""The `caseapi` command. Thin: each command calls a service in one transaction."""

import argparse
import sys
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

import app.journal  # noqa: F401  (installs the audit/event hook on every session)
from app import migrate, seed
from app.agencies.models import Agency
from app.attachments import service as attachments
from app.attachments.storage import LocalStorage
from app.audit import service as audit
from app.auth import service as auth
from app.auth.models import ApiClient, Scope
from app.config import get_settings
from app.db import create_db_engine, transaction
from app.errors import AppError

DEMO_CLIENT = "demo"


class CommandError(Exception):
    """A failure with a one-line reason for the operator."""


def _engine() -> sa.Engine:
    return create_db_engine(get_settings().database_url)


def cmd_migrate(_: argparse.Namespace) -> None:
    engine = _engine()
    with engine.begin() as conn:
        migrate.upgrade(conn)
    print("schema at the newest revision")


def cmd_seed(_: argparse.Namespace) -> None:
    with transaction(_engine(), write=True) as session:
        added = seed.load(session, get_settings().seed_dir)
    print(f"seed loaded: {added} rows added" if added else "seed already loaded: nothing changed")


def cmd_client_create(args: argparse.Namespace) -> None:
    with transaction(_engine(), write=True) as session:
        client, key = auth.create_client(
            session, agency_code=args.agency, name=args.name, scopes=[Scope(s) for s in args.scope]
        )
    print(f"client {client.id} of {args.agency} with scopes {' '.join(client.scopes)}")
    print("the key is shown once; store it now:")
    print(key)


def cmd_client_list(_: argparse.Namespace) -> None:
    with transaction(_engine(), write=False) as session:
        rows = auth.list_clients(session)
    for client, code in rows:
        state = "revoked" if client.revoked_at else "active"
        print(f"{client.id}\t{code}\t{client.name}\t{','.join(client.scopes)}\t{state}")


def cmd_client_revoke(args: argparse.Namespace) -> None:
    with transaction(_engine(), write=True) as session:
        client = auth.revoke_client(session, args.id_or_key)
    print(f"client {client.id} revoked")


def cmd_audit_verify(_: argparse.Namespace) -> None:
    with transaction(_engine(), write=False) as session:
        result = audit.verify(session)
    if not result.ok:
        raise CommandError(
            f"audit chain broken at entry {result.first_bad_seq} (after {result.entries} good entries)"
        )
    print(f"audit chain intact: {result.entries} entries, head {result.head}")


def cmd_storage_sweep(args: argparse.Namespace) -> None:
    storage = LocalStorage(get_settings().storage_dir)
    counts = attachments.sweep(_engine(), storage, older_than=args.older_than)
    print(
        f"storage swept: {counts['recovered']} committed uploads moved into place, "
        f"{counts['staging_removed']} staging files and {counts['files_removed']} unreferenced files removed"
    )


def _serve(host: str, port: int, workers: int) -> None:
    import uvicorn

    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=False,
        server_header=False,
        access_log=get_settings().access_log,
    )


def cmd_serve(args: argparse.Namespace) -> None:
    _serve(args.host, args.port, args.workers)


def cmd_demo(_: argparse.Namespace) -> None:
    cmd_migrate(_)
    cmd_seed(_)
    settings = get_settings()
    with transaction(_engine(), write=True) as session:
        # Only the keys printed now work: earlier demo keys are revoked.
        for (old,) in session.execute(
            sa.select(ApiClient.id).where(ApiClient.name == DEMO_CLIENT, ApiClient.revoked_at.is_(None))
        ):
            auth.revoke_client(session, str(old))
        codes = session.execute(sa.select(Agency.code).order_by(Agency.code)).scalars().all()
        keys = []
        for code in codes:
            scopes = [Scope.read, Scope.write, Scope.personal_data]
            if code == "KZ-MVD":
                scopes.append(Scope.admin)
            _, key = auth.create_client(session, agency_code=code, name=DEMO_CLIENT, scopes=scopes)
            keys.append((code, key))
    print("demo keys (read, write, personal_data; KZ-MVD also admin):")
    for code, key in keys:
        print(f"  {code:<14} {key}")
    print(f"database: {settings.database_url}")
    print("explorer: http://127.0.0.1:8000/docs")
    _serve("127.0.0.1", 8000, 1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="caseapi", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="bring the schema to the newest revision").set_defaults(func=cmd_migrate)
    sub.add_parser("seed", help="load the article's data (idempotent)").set_defaults(func=cmd_seed)

    client = sub.add_parser("client", help="API clients").add_subparsers(dest="action", required=True)
    create = client.add_parser("create", help="create a client and print its key")
    create.add_argument("--agency", required=True, help="agency code, e.g. KZ-MVD")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--scope",
        action="append",
        choices=[s.value for s in Scope],
        default=[],
        help="repeat for several; default: read",
    )
    create.set_defaults(func=cmd_client_create)
    client.add_parser("list", help="one line per client").set_defaults(func=cmd_client_list)
    revoke = client.add_parser("revoke", help="revoke by id or by key")
    revoke.add_argument("id_or_key")
    revoke.set_defaults(func=cmd_client_revoke)

    serve = sub.add_parser("serve", help="serve the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("demo", help="migrate, seed, print demo keys, serve on 127.0.0.1:8000").set_defaults(
        func=cmd_demo
    )
    audit_cmd = sub.add_parser("audit", help="the audit trail").add_subparsers(dest="action", required=True)
    audit_cmd.add_parser("verify", help="check the hash chain").set_defaults(func=cmd_audit_verify)
    storage = sub.add_parser("storage", help="attachment files").add_subparsers(dest="action", required=True)
    sweep = storage.add_parser("sweep", help="remove files no attachment names; finish interrupted uploads")
    sweep.add_argument(
        "--older-than",
        type=float,
        default=3600.0,
        help="seconds a staging file must be untouched before it counts as abandoned (default 3600)",
    )
    sweep.set_defaults(func=cmd_storage_sweep)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except (CommandError, AppError) as exc:
        sys.exit(f"caseapi: {exc}")
    except sa_exc.OperationalError as exc:
        sys.exit(f"caseapi: database unavailable: {str(exc.orig).strip().splitlines()[0]}")
    except sa_exc.SQLAlchemyError as exc:
        sys.exit(f"caseapi: database error: {str(exc).strip().splitlines()[0]}")
