"""The `caseapi` command. Thin: each command calls a service in one transaction."""

import argparse
import contextlib
import errno
import fcntl
import functools
import itertools
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeVar

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from app import seed, supervisor
from app.agencies import service as agencies
from app.agencies.models import AgencyCreate, AgencyKind
from app.attachments import service as attachments
from app.attachments.storage import LocalStorage, StorageOfAnotherDatabase
from app.audit import service as audit
from app.audit.models import AuditEntryPublic
from app.auth import service as auth
from app.auth.models import Scope
from app.core import migrate
from app.core.chain import HashedStored
from app.core.config import ConfigError, Settings
from app.core.db import create_db_engine
from app.core.errors import AppError, database_reason
from app.core.journal import CLI
from app.core.records import AuditVerification
from app.core.secrets import audit_key
from app.core.types import clock_skew
from app.core.uow import Database, Row, Tx, run_with_database
from app.federation import service as federation
from app.federation.identity import identity
from app.federation.models import AgencyDirectory, PeerStatus
from app.identifiers import notices
from app.version import version
from app.webhooks import delivery

T = TypeVar("T")
DEMO_CLIENT = "demo"
EXIT_CODES = (
    "exit status: 0 done (also when the reader of the output stopped early, as `| head` does); "
    "1 failed, with a one-line reason on stderr; 2 a bad setting or usage"
)
# The exit status of a setting the service cannot run with (as for a usage error).
EXIT_SETTING = 2


class CommandError(Exception):
    """A failure with a one-line reason for the operator."""


def _one_line(exc: ValidationError, name: Callable[[str], str]) -> str:
    """Pydantic's errors on one line, each after the name of what was wrong (never the value given)."""
    return "; ".join(f"{name(str(err['loc'][0]))}: {err['msg']}" for err in exc.errors())


def _engine(settings: Settings) -> sa.Engine:
    return create_db_engine(settings.database_url)


def _run(settings: Settings, work: Callable[[Tx], Awaitable[T]]) -> T:
    """`await work(tx)` in one unit of work on the command's database."""
    return _read(settings, lambda db: db.run(work))


def _read(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    """`await work(db)`: reads outside a transaction, or units of work of its own."""
    return run_with_database(
        settings.database_url, work, audit_key=audit_key(settings), timeout=settings.pool_timeout_seconds
    )


def cmd_migrate(_: argparse.Namespace, settings: Settings) -> None:
    _migrate(settings)
    print("schema at the newest revision")


def _migrate(settings: Settings) -> None:
    with _engine(settings).begin() as conn:
        migrate.upgrade(conn)


def cmd_seed(_: argparse.Namespace, settings: Settings) -> None:
    added = _run(settings, lambda tx: seed.load(tx, settings.seed_dir))
    print(f"seed loaded: {added} rows added" if added else "seed already loaded: nothing changed")


def cmd_client_create(args: argparse.Namespace, settings: Settings) -> None:
    scopes = [Scope(s) for s in args.scope]
    client, key = _run(
        settings, lambda tx: auth.create_client(tx, agency_code=args.agency, name=args.name, scopes=scopes)
    )
    print(f"client {client.id} of {args.agency} with scopes {' '.join(client.scopes)}")
    print("the key is shown once; store it now:")
    print(key)


def cmd_client_list(_: argparse.Namespace, settings: Settings) -> None:
    for client in _read(settings, auth.list_clients):
        state = "revoked" if client.revoked_at else "active"
        print(f"{client.id}\t{client.agency_code}\t{client.name}\t{','.join(client.scopes)}\t{state}")


def cmd_client_revoke(args: argparse.Namespace, settings: Settings) -> None:
    client = _run(settings, lambda tx: auth.revoke_client(tx, args.id_or_key))
    print(f"client {client.id} revoked")


def cmd_agency_create(args: argparse.Namespace, settings: Settings) -> None:
    fields = {"code": args.code, "name": args.name, "kind": args.kind, "country": args.country}
    try:
        data = AgencyCreate.model_validate(fields)
    except ValidationError as exc:
        raise CommandError(_one_line(exc, lambda field: f"--{field}")) from None

    async def create(tx: Tx) -> Row:
        if args.parent:
            data.parent_id = (await agencies.get_agency_by_code(tx, args.parent)).id
        return await agencies.create_agency(tx, None, data)

    agency = _run(settings, create)
    print(f"agency {agency.code} created; its id:")
    print(agency.id)


def cmd_agency_list(_: argparse.Namespace, settings: Settings) -> None:
    for agency in _read(settings, agencies.agencies_with_parents):
        fields = (agency.id, agency.code, agency.name, agency.kind.value, agency.country, agency.parent_code)
        print("\t".join("-" if value is None else str(value) for value in fields))


def cmd_agency_set_parent(args: argparse.Namespace, settings: Settings) -> None:
    async def move(tx: Tx) -> tuple[Row, Row | None, bool]:
        agency = await agencies.get_agency_by_code(tx, args.code, for_update=True)
        parent = None if args.none else await agencies.get_agency_by_code(tx, args.parent)
        return agency, parent, await agencies.set_parent(tx, CLI, agency, parent.id if parent else None)

    agency, parent, changed = _run(settings, move)
    where = f"under {parent.code}" if parent else "at the top of the hierarchy"
    print(f"agency {agency.code} {'now' if changed else 'already'} {where}")


def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> None:
    """The whole chain from genesis; progress on stderr when it is a terminal."""
    expected = args.expect_head
    found = expected is None
    total = _read(settings, audit.head_seq)
    show = sys.stderr.isatty() and total > 0
    step = max(total // 100, 1)

    def seen(entry: HashedStored) -> None:
        nonlocal found
        found = found or entry.hash == expected
        if show and entry.seq % step == 0:
            print(
                f"\rverifying the audit chain: {min(entry.seq * 100 // total, 100)}%", end="", file=sys.stderr
            )

    result = _read(settings, lambda db: audit.check(db, full=True, on_entry=seen))
    if show:
        print("\r" + " " * 40 + "\r", end="", file=sys.stderr)
    if not result.ok:
        raise CommandError(_finding(result))
    if not found:
        raise CommandError(
            f"head {expected} is not in the audit chain ({result.entries} entries, head {result.head})"
        )
    print(f"audit chain intact: {result.entries} entries, head {result.head}")


def _finding(result: AuditVerification) -> str:
    if result.first_bad_seq is not None:
        return f"audit chain broken at entry {result.first_bad_seq} (after {result.entries} good entries)"
    return f"audit chain not verified: {result.reason} ({result.entries} entries verify, head {result.head})"


def cmd_audit_reset_checkpoint(args: argparse.Namespace, settings: Settings) -> None:
    key = audit_key(settings)
    result = _run(settings, lambda tx: audit.reset_checkpoint(tx, key, pre_key_head=args.pre_key_head))
    if not result.ok:
        raise CommandError(_finding(result))
    print(f"audit checkpoint recorded: {result.entries} entries, head {result.head}")


def cmd_audit_list(args: argparse.Namespace, settings: Settings) -> None:
    """The whole instance's log, streamed in seq order: one line per entry, tab-separated, or JSON."""

    async def stream(db: Database) -> None:
        rows = audit.host_entries(db, after=args.after, case_id=args.case_id, action=args.action)
        left = args.limit
        # A reader that stops (`| head`) ends it through main()'s BrokenPipeError.
        async for row in rows:
            if left == 0:
                return
            entry = AuditEntryPublic.model_validate(row, from_attributes=True)
            if args.json:
                print(entry.model_dump_json())
            else:
                fields = entry.model_dump(mode="json", exclude={"prev_hash"})
                print("\t".join("-" if v is None else _text(v) for v in fields.values()))
            if left is not None:
                left -= 1

    _read(settings, stream)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError("expected a whole number, 0 or more")
    return int(text)


def _text(value: object) -> str:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, dict) else str(value)


def cmd_storage_sweep(args: argparse.Namespace, settings: Settings) -> None:
    """Without --apply it only lists: a sweep pointed at the wrong place costs nothing."""
    storage = LocalStorage(settings.storage_dir)
    report = _read(
        settings, lambda db: attachments.sweep(db, storage, older_than=args.older_than, apply=args.apply)
    )
    move, remove = ("moved", "removed") if args.apply else ("would move", "would remove")
    for sha256 in report.recovered:
        print(f"{move} into place: {sha256} (a committed upload)")
    for name in report.staging_removed:
        print(f"{remove} staging file: {name}")
    for sha256 in report.files_removed:
        print(f"{remove} unreferenced file: {sha256}")
    summary = (
        f"{len(report.recovered)} committed uploads {move} into place, {len(report.staging_removed)} "
        f"staging files and {len(report.files_removed)} unreferenced files {remove}"
    )
    print(
        f"storage swept: {summary}" if args.apply else f"dry run, nothing changed: {summary}; --apply does it"
    )


def cmd_instance_show(_: argparse.Namespace, settings: Settings) -> None:
    me = identity(settings)
    print(f"instance {me.instance_id}")
    print(f"public key: {json.dumps(me.jwk, sort_keys=True)}")
    print("thumbprint (give it to the operators of your peers):")
    print(me.thumbprint)


def cmd_peer_add(args: argparse.Namespace, settings: Settings) -> None:
    peer, directory, synced, placed = _add_peer(settings, args.url, args.thumbprint)
    for line in _peer_added(settings, peer, directory, synced, placed):
        print(line)
    print("its id:")
    print(peer.instance_id)


def _add_peer(
    settings: Settings, url: str, thumbprint: str
) -> tuple[Row, AgencyDirectory | None, int | None, list[Row]]:
    """Trust the instance at `url` if its key has `thumbprint`, and hold its
    agencies once it trusts this instance too (`directory` None until then);
    also those of them held under another instance's agencies."""
    me = identity(settings)

    async def add(db: Database) -> tuple[Row, AgencyDirectory | None, int | None, list[Row]]:
        document = await federation.fetch_document(url)
        async with db.transaction() as tx:
            peer = await federation.add_peer(tx, me, url, thumbprint, document)
            directory = await federation.fetch_agencies(me, peer)
            synced = None if directory is None else await federation.sync_agencies(tx, peer, directory)
            placed = await federation.placed_elsewhere(tx, peer.instance_id)
        return peer, directory, synced, placed

    try:
        return _read(settings, add)
    except federation.PeerError as exc:
        raise CommandError(str(exc)) from None


def _peer_added(
    settings: Settings, peer: Row, directory: AgencyDirectory | None, synced: int | None, placed: list[Row]
) -> list[str]:
    lines = [f"peer {peer.instance_id} at {peer.url} trusted with key {peer.thumbprint}"]
    if directory is None:
        lines.append(
            f"its agencies follow once it has added {settings.instance_id} as a peer: a serving "
            "instance then holds them within CASEAPI_FEDERATION_DIRECTORY_SECONDS, or run this again"
        )
    else:
        lines.append(f"its agencies held here: {len(directory.items)} ({synced} added or changed)")
    lines += [
        f"{agency.code} is held under {agency.parent_code} of {agency.parent_home or 'this instance'}: "
        f"under TLP:AMBER it sees that agency's cases, and {peer.instance_id} mirrors them"
        for agency in placed
    ]
    return lines


async def _peer_statuses(db: Database) -> list[PeerStatus]:
    return [await federation.peer_status(db, peer) for peer in await federation.list_peers(db)]


def cmd_peer_list(_: argparse.Namespace, settings: Settings) -> None:
    for status in _read(settings, _peer_statuses):
        print("\t".join("-" if value is None else str(value) for value in status.model_dump().values()))


def cmd_peer_remove(args: argparse.Namespace, settings: Settings) -> None:
    try:
        withdrawn = _run(settings, lambda tx: federation.remove_peer(tx, args.instance_id))
    except federation.PeerError as exc:
        raise CommandError(str(exc)) from None
    print(f"peer {args.instance_id} removed: its signed requests are refused from now on")
    if withdrawn:
        print(f"mirrors of its cases deleted here: {withdrawn}")


def cmd_deliver(args: argparse.Namespace, settings: Settings) -> None:
    _read(settings, lambda db: delivery.deliver(db, settings, once=args.once))


def cmd_hits_process(_: argparse.Namespace, settings: Settings) -> None:
    done = _read(settings, lambda db: notices.process(db, settings))
    print(
        f"hit notices: {done.searches} searches processed, {done.notices} hit.received events written, "
        f"{done.terms_purged} search terms past retention purged"
    )


def _serve(settings: Settings, host: str, port: int, workers: int, fd: int | None = None) -> None:
    """Serve on host:port, or on the listening socket `fd` when one is given. Each
    worker's create_app() reads its settings from the same environment as this command."""
    import uvicorn

    from app.core.observability.serving import metrics_directory, uvicorn_options

    with metrics_directory(workers):
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=host,
            port=port,
            fd=fd,
            workers=workers,
            server_header=False,
            access_log=settings.access_log,
            **uvicorn_options(settings),
        )


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    _serve(settings, args.host, args.port, args.workers, fd=args.fd)


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port, or a one-line failure.

    Listening at once, not only bound: on Linux two sockets with SO_REUSEADDR
    may both bind a port that no one listens on yet.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = "port in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise CommandError(f"cannot listen on {host}:{port}: {reason}") from None
    return sock


def cmd_demo(args: argparse.Namespace, settings: Settings) -> None:
    if args.federation:
        _federated_demo(args, settings)
        return
    # Before the port (as for every command that writes): on PostgreSQL an
    # unset audit key is one line naming it.
    audit_key(settings)
    # The port first: a demo that cannot serve must not revoke the keys of
    # the one already serving there, nor touch its database.
    with _listen(args.host, args.port) as sock:
        _demo(args, settings, sock)


def _demo(args: argparse.Namespace, settings: Settings, sock: socket.socket) -> None:
    cmd_migrate(args, settings)
    cmd_seed(args, settings)
    keys = _run(settings, lambda tx: _demo_keys(tx, ADMIN_AGENCY))
    _print_demo(settings, keys, ADMIN_AGENCY, f"{_url_host(args.host)}:{sock.getsockname()[1]}")
    _serve(settings, args.host, args.port, 1, fd=sock.fileno())


def _print_demo(settings: Settings, keys: list[tuple[str, str]], admin: str, address: str) -> None:
    print(f"demo keys (read, write, personal_data; {admin} also admin):")
    for code, key in keys:
        print(f"  {code:<14} {key}")
    print(f"database: {make_url(settings.database_url).render_as_string(hide_password=True)}")
    print(f"explorer: http://{address}/docs", flush=True)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# The agency whose demo key also has `admin` (on one instance, or on its home in a federation).
ADMIN_AGENCY = "KZ-MVD"
_DEMO_KEYS = sa.select(auth.CLIENTS.c.id).where(
    auth.CLIENTS.c.name == DEMO_CLIENT, auth.CLIENTS.c.revoked_at.is_(None)
)
# The agencies this instance is home of: a peer's agencies get their keys at home.
_CODES = (
    sa.select(agencies.AGENCIES.c.code)
    .where(agencies.AGENCIES.c.home_instance.is_(None))
    .order_by(agencies.AGENCIES.c.code)
)


async def _demo_keys(tx: Tx, admin: str) -> list[tuple[str, str]]:
    """A new demo key for every agency, by code (`admin` also gets that scope).
    Only the keys printed now work: earlier demo keys are revoked."""
    for old in await tx.all(_DEMO_KEYS):
        await auth.revoke_client(tx, str(old.id))
    keys = []
    for agency in await tx.all(_CODES):
        scopes = [Scope.read, Scope.write, Scope.personal_data]
        if agency.code == admin:
            scopes.append(Scope.admin)
        _, key = await auth.create_client(tx, agency_code=agency.code, name=DEMO_CLIENT, scopes=scopes)
        keys.append((agency.code, key))
    return keys


@dataclass(frozen=True)
class _Country:
    """One instance of the federation demo: it hosts the seed's agencies of its country."""

    instance_id: str
    directory: str
    country: str  # ISO 3166-1 alpha-2, as the seed's agencies name it
    name: str
    admin: str


# Kazakhstan's Ministry of Interior and Ukraine's law enforcement, each on a server of its own.
FEDERATION = (
    _Country("kz.caseapi", "kz", "KZ", "Kazakhstan", "KZ-MVD"),
    _Country("ua.caseapi", "ua", "UA", "Ukraine", "UA-LE"),
)
# How long the demo waits for the first deliveries before it says they are late.
DELIVERY_WAIT = 30.0


@dataclass(frozen=True)
class _Member:
    """A country's instance as the demo runs it: its settings (the same as the
    environment of its `caseapi serve` process) and where it listens."""

    country: _Country
    shown: str  # its directory, as the operator named it
    home: Path
    settings: Settings
    env: dict[str, str]
    sock: socket.socket
    url: str

    @property
    def instance_id(self) -> str:
        return self.country.instance_id

    @property
    def title(self) -> str:
        country = self.country
        return f"{country.name}'s instance, the seed's agencies of {country.country}, in {self.shown}"

    def say(self, line: str) -> None:
        print(f"{self.instance_id}: {line}", flush=True)


def _member(args: argparse.Namespace, country: _Country, sock: socket.socket) -> _Member:
    shown = os.path.join(args.dir, country.directory)
    home = Path(shown).resolve()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot make {shown}: {exc.strerror}") from None
    database_url = f"sqlite:///{home / 'caseapi.db'}"
    settings = Settings(
        database_url=database_url,
        key_file=home / "caseapi.key",
        instance_id=country.instance_id,
        instance_key_file=home / "caseapi-instance.key",
        storage_dir=home / "caseapi-files",
    )
    env = {
        "CASEAPI_DATABASE_URL": database_url,
        "CASEAPI_KEY_FILE": str(settings.key_file),
        "CASEAPI_INSTANCE_ID": country.instance_id,
        "CASEAPI_INSTANCE_KEY_FILE": str(settings.instance_key_file),
        "CASEAPI_STORAGE_DIR": str(settings.storage_dir),
    }
    host = args.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"  # the peers' address of a server listening everywhere
    elif host == "::":
        host = "::1"
    url = f"http://{_url_host(host)}:{sock.getsockname()[1]}"
    return _Member(country, shown, home, settings, env, sock, url)


def _federated_demo(args: argparse.Namespace, settings: Settings) -> None:
    """Kazakhstan's and Ukraine's instances from one command, each with its own
    directory (database, audit key, instance key, files), peered as operators
    peer them, the Kyiv case seeded at its lead's home and delivered to the
    other as a mirror; both served until Ctrl-C."""
    last_port = args.port + len(FEDERATION) - 1
    if args.port and not 0 < args.port <= last_port <= 65535:
        raise CommandError(f"--port {args.port}: the instances need ports {args.port} to {last_port}")
    try:
        with contextlib.ExitStack() as held:
            # The ports first, as for one demo: a demo that cannot serve touches no database.
            socks = [
                held.enter_context(_listen(args.host, args.port + n if args.port else 0))
                for n in range(len(FEDERATION))
            ]
            held.enter_context(_demo_lock(args.dir))
            members = [_member(args, country, sock) for country, sock in zip(FEDERATION, socks, strict=True)]
            _serve_federation(members, settings.seed_dir)
    except KeyboardInterrupt:
        # Serving ends without one (serve_until_stopped): this one came while starting.
        raise CommandError("interrupted while starting: nothing is served") from None
    except supervisor.ChildFailed as exc:
        raise CommandError(str(exc)) from None


@contextlib.contextmanager
def _demo_lock(directory: str) -> Iterator[None]:
    """One federation demo per directory: a second one, on other ports, would
    re-peer the instances at its own addresses and revoke the keys in use."""
    try:
        os.makedirs(directory, exist_ok=True)
        lock = open(os.path.join(directory, "demo.lock"), "w")  # noqa: SIM115 (held until the demo ends)
    except OSError as exc:
        raise CommandError(f"cannot use {directory}: {exc.strerror}") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CommandError(f"another `caseapi demo --federation` serves from {directory}") from None
        yield


def _serve_federation(members: list[_Member], seed_dir: Path) -> None:
    for member in members:
        member.say(member.title)
        _migrate(member.settings)
        member.say("schema at the newest revision")
        added = _run(
            member.settings,
            functools.partial(seed.load, seed_dir=seed_dir, countries={member.country.country}, cases=False),
        )
        member.say(_seeded(added))
    children: list[supervisor.Child] = []
    with supervisor.stopping(children):
        for member in members:
            argv = [sys.executable, "-m", "app", "serve", "--fd", str(member.sock.fileno())]
            env = supervisor.child_env(member.env)
            children.append(
                supervisor.spawn(member.instance_id, member.url, argv, env, str(member.home), member.sock)
            )
            # Served by the child from now on: a child that stops leaves no one listening.
            member.sock.close()
        deadline = time.monotonic() + supervisor.START_TIMEOUT
        for child in children:
            child.wait_ready(deadline)
        _peer_federation(members)
        for member in members:
            # Each case only at its lead's home: the others receive it by delivery.
            added = _run(
                member.settings,
                functools.partial(seed.load, seed_dir=seed_dir, countries={member.country.country}),
            )
            member.say(f"cases: {_seeded(added)}")
        _await_deliveries(members)
        for member in members:
            print(f"\n{member.instance_id}: {member.title}")
            keys = _run(member.settings, functools.partial(_demo_keys, admin=member.country.admin))
            _print_demo(member.settings, keys, member.country.admin, member.url.removeprefix("http://"))
        print(f"\nserving {' and '.join(m.instance_id for m in members)} until Ctrl-C", flush=True)
        supervisor.serve_until_stopped(children)


def _seeded(added: int) -> str:
    return f"seed loaded: {added} rows added" if added else "seed already loaded: nothing changed"


def _peer_federation(members: list[_Member]) -> None:
    """Each instance adds each other one with `caseapi peer add`'s own steps and the
    thumbprint the other's operator would give (`caseapi instance show`); an instance
    added before it trusted the adder is added again, for its agencies."""
    again = []
    for member, other in itertools.permutations(members, 2):
        if _peer_with(member, other) is None:
            again.append((member, other))
    for member, other in again:
        _peer_with(member, other)


def _peer_with(member: _Member, other: _Member) -> AgencyDirectory | None:
    thumbprint = identity(other.settings).thumbprint
    peer, directory, synced, placed = _add_peer(member.settings, other.url, thumbprint)
    for line in _peer_added(member.settings, peer, directory, synced, placed):
        member.say(line)
    return directory


def _await_deliveries(members: list[_Member]) -> None:
    """Until every instance's peers have acknowledged what they should hold (its
    mirrors are readable there), or say which peer is late, and why."""
    deadline = time.monotonic() + DELIVERY_WAIT
    for member in members:
        while (late := [s for s in _read(member.settings, _peer_statuses) if s.pending]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
        for status in late:
            reason = f" ({status.last_error})" if status.last_error else ""
            member.say(
                f"{status.pending} changes not yet acknowledged by {status.instance_id}{reason}: "
                "`caseapi peer list` in its directory follows it"
            )
        if not late:
            member.say("its peers have acknowledged every change they should hold")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help, with its default where it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, []) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _command(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]", name: str, text: str
) -> argparse.ArgumentParser:
    """A command (or group) whose help is also its description."""
    return commands.add_parser(
        name, help=text, description=text[0].upper() + text[1:] + ".", formatter_class=_Help
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caseapi",
        description="caseapi: case information exchanged between law-enforcement agencies.",
        epilog=EXIT_CODES,
        formatter_class=_Help,
    )
    parser.add_argument("--version", action="version", version=f"caseapi {version()}")
    # Every command but these needs a schema at the newest revision, and the
    # audit key (every other command writes or verifies the audit chain).
    parser.set_defaults(needs_schema=True, needs_key=True)
    sub = parser.add_subparsers(dest="command", required=True)
    _command(sub, "migrate", "bring the schema to the newest revision").set_defaults(
        func=cmd_migrate, needs_schema=False, needs_key=False
    )
    _command(sub, "seed", "load the article's data (idempotent)").set_defaults(func=cmd_seed)

    agency = _command(sub, "agency", "agencies").add_subparsers(dest="action", required=True)
    agency_create = _command(agency, "create", "create an agency and print its id")
    agency_create.add_argument("--code", required=True, help="unique short code, e.g. KZ-MVD")
    agency_create.add_argument("--name", required=True, help="the agency's full name")
    agency_create.add_argument(
        "--kind", required=True, choices=[k.value for k in AgencyKind], help="what kind of body it is"
    )
    agency_create.add_argument("--country", help="ISO 3166-1 alpha-2; omit for international bodies")
    agency_create.add_argument("--parent", metavar="CODE", help="the agency it belongs to")
    agency_create.set_defaults(func=cmd_agency_create)
    _command(agency, "list", "one line per agency").set_defaults(func=cmd_agency_list)
    set_parent = _command(agency, "set-parent", "move an agency in the hierarchy (audited)")
    set_parent.add_argument("code", help="the agency to move")
    new_parent = set_parent.add_mutually_exclusive_group(required=True)
    new_parent.add_argument("--parent", metavar="CODE", help="the agency it belongs to from now on")
    new_parent.add_argument("--none", action="store_true", help="no parent: a top-level agency")
    set_parent.set_defaults(func=cmd_agency_set_parent)

    client = _command(sub, "client", "API clients").add_subparsers(dest="action", required=True)
    create = _command(client, "create", "create a client and print its key")
    create.add_argument("--agency", required=True, help="agency code, e.g. KZ-MVD")
    create.add_argument("--name", required=True, help="what the key is for, e.g. the tool that holds it")
    create.add_argument(
        "--scope",
        action="append",
        choices=[s.value for s in Scope],
        default=[],
        help="repeat for several (read, when none is given)",
    )
    create.set_defaults(func=cmd_client_create)
    _command(client, "list", "one line per client").set_defaults(func=cmd_client_list)
    revoke = _command(client, "revoke", "revoke by id or by key")
    revoke.add_argument("id_or_key", help="the client's id (caseapi client list) or its key")
    revoke.set_defaults(func=cmd_client_revoke)

    serve = _command(sub, "serve", "serve the API")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="the port to listen on")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (each with its own pools)")
    serve.add_argument(
        "--fd",
        type=int,
        metavar="N",
        help="serve on the listening socket inherited as file descriptor N (from a supervisor, "
        "or `caseapi demo --federation`); --host and --port are then not used",
    )
    serve.set_defaults(func=cmd_serve)

    deliver_cmd = _command(sub, "deliver", "deliver webhooks (without serving the API)")
    deliver_cmd.add_argument("--once", action="store_true", help="deliver what is due, then exit")
    deliver_cmd.set_defaults(func=cmd_deliver)

    hits = _command(sub, "hits", "hit/no-hit searches").add_subparsers(dest="action", required=True)
    _command(
        hits, "process", "write the hit.received events of queued searches; purge search terms past retention"
    ).set_defaults(func=cmd_hits_process)

    demo = _command(sub, "demo", "migrate, seed, print demo keys, serve (127.0.0.1:8000)")
    demo.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    demo.add_argument(
        "--port",
        type=int,
        default=8000,
        help="the port to listen on (0: any free one); with --federation Ukraine's instance takes the next",
    )
    demo.add_argument(
        "--federation",
        action="store_true",
        help="two federating instances, Kazakhstan's (kz.caseapi) and Ukraine's (ua.caseapi), each "
        "with its own database and keys in a directory under --dir, the Kyiv case at its lead's home "
        "and mirrored on the other; both served until Ctrl-C",
    )
    demo.add_argument(
        "--dir",
        default="caseapi-demo",
        help="with --federation: where the instances keep their files (kz/ and ua/ in it)",
    )
    # Its audit key is checked by cmd_demo: a federation's instances each have their own.
    demo.set_defaults(func=cmd_demo, needs_schema=False, needs_key=False)
    audit_cmd = _command(sub, "audit", "the audit trail").add_subparsers(dest="action", required=True)
    verify = _command(audit_cmd, "verify", "check the whole hash chain")
    verify.add_argument(
        "--expect-head", metavar="HASH", help="fail unless this hash, recorded earlier, is in the chain"
    )
    verify.set_defaults(func=cmd_audit_verify)
    reset = _command(
        audit_cmd,
        "reset-checkpoint",
        "after a finding is explained: walk the whole chain and record its head",
    )
    reset.add_argument(
        "--pre-key-head",
        metavar="HASH",
        help="the last entry written before the chain was keyed: entries up to it may be unkeyed",
    )
    reset.set_defaults(func=cmd_audit_reset_checkpoint)
    listing = _command(audit_cmd, "list", "the whole instance's log, one line per entry")
    listing.add_argument("--case-id", type=uuid.UUID, metavar="UUID", help="only the entries of this case")
    listing.add_argument("--action", help="only the entries of this action, e.g. personal_data.disclosed")
    listing.add_argument("--after", type=_count, default=0, metavar="SEQ", help="entries after this seq")
    listing.add_argument("--limit", type=_count, metavar="N", help="at most N entries")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=cmd_audit_list)
    instance = _command(sub, "instance", "this instance among its peers (federation)")
    _command(
        instance.add_subparsers(dest="action", required=True),
        "show",
        "print the instance id, its public key (JWK) and, last, the key's thumbprint",
    ).set_defaults(func=cmd_instance_show, needs_schema=False, needs_key=False)
    peer = _command(sub, "peer", "the instances this one trusts").add_subparsers(dest="action", required=True)
    peer_add = _command(peer, "add", "trust the instance at URL if its key has THUMBPRINT; print its id")
    peer_add.add_argument("--url", required=True, help="the peer's base URL, without /api/v1")
    peer_add.add_argument(
        "--thumbprint", required=True, help="the key thumbprint its operator gave you (caseapi instance show)"
    )
    peer_add.set_defaults(func=cmd_peer_add)
    _command(
        peer, "list", "one line per peer: id, URL, thumbprint, last success, last error, pending changes"
    ).set_defaults(func=cmd_peer_list)
    peer_remove = _command(peer, "remove", "stop trusting a peer")
    peer_remove.add_argument("instance_id", help="the peer's instance id (caseapi peer list)")
    peer_remove.set_defaults(func=cmd_peer_remove)
    storage = _command(sub, "storage", "attachment files").add_subparsers(dest="action", required=True)
    sweep = _command(
        storage, "sweep", "list (--apply: remove) files no attachment names; finish interrupted uploads"
    )
    sweep.add_argument("--apply", action="store_true", help="do it; without it, only list what it would do")
    sweep.add_argument(
        "--older-than",
        type=float,
        default=3600.0,
        help="seconds a staging file must be untouched before it counts as abandoned",
    )
    sweep.set_defaults(func=cmd_storage_sweep)
    return parser


def _joined(argv: Sequence[str]) -> list[str]:
    """`--thumbprint VALUE` as `--thumbprint=VALUE`: a base64url thumbprint may
    begin with `-`, which argparse would take for an option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--thumbprint":
            out[-1] = f"--thumbprint={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(_joined(sys.argv[1:] if argv is None else argv))
    func: Callable[[argparse.Namespace, Settings], None] = args.func
    try:
        settings = _settings()
        if args.needs_key:
            # Before any database work or port: on PostgreSQL an unset key is one
            # line naming CASEAPI_AUDIT_KEY, not a 500 at the first change.
            audit_key(settings)
        if args.needs_schema:
            with _engine(settings).connect() as conn:
                migrate.require_head(conn)
        with clock_skew(settings.clock_skew_seconds):
            func(args, settings)
        # Inside the try: a reader that left (`| head -1`) is found here, not
        # by the interpreter's own flush at exit, which would print a traceback.
        sys.stdout.flush()
    except BrokenPipeError:
        _reader_left()
    except ConfigError as exc:
        print(f"caseapi: {exc}", file=sys.stderr)
        sys.exit(EXIT_SETTING)
    except (CommandError, AppError, migrate.NotMigrated, StorageOfAnotherDatabase) as exc:
        sys.exit(f"caseapi: {exc}")
    except sa_exc.OperationalError as exc:
        sys.exit(f"caseapi: database unavailable: {database_reason(exc)}")
    except sa_exc.SQLAlchemyError as exc:
        sys.exit(f"caseapi: database error: {database_reason(exc)}")


def _reader_left() -> NoReturn:
    """Stop quietly: the reader had what it wanted (`| head -1`), so the command
    did its part and exits 0, also in a `set -o pipefail` script. What is still
    buffered goes nowhere, so the exit's flush cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(0)


def _settings() -> Settings:
    """The command's settings, read from the environment once, up front (every
    step of the command gets them from here): a bad one is a ConfigError naming it."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, lambda field: f"CASEAPI_{field.upper()}")) from None
