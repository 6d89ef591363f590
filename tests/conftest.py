"""Fixtures: every test runs on SQLite, and on PostgreSQL when
CASEAPI_TEST_POSTGRES_URL names a server (CI always does).

The schema is built once per backend with `alembic upgrade head` in a fresh
database. Tests commit for real (the commit-before-response rule, row locks
and concurrent writers are part of what is tested), so instead of rolling
back, every table is emptied after each test.
"""

import os
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import make_url
from sqlmodel import Session, SQLModel

warnings.filterwarnings("ignore", message=".*httpx2.*")
from fastapi.testclient import TestClient  # noqa: E402

import app.models  # noqa: E402,F401
from app import cli  # noqa: E402
from app.agencies.models import Agency, AgencyKind  # noqa: E402
from app.auth import service as auth  # noqa: E402
from app.auth.models import Scope  # noqa: E402
from app.core import migrate  # noqa: E402
from app.core.config import Settings  # noqa: E402
from app.core.db import create_db_engine  # noqa: E402
from app.core.secrets import audit_key  # noqa: E402
from app.core.uow import PostgresDatabase, Tx, run_with_database  # noqa: E402
from app.main import create_app  # noqa: E402

# The server's secrets as an operator sets them (app.core.secrets); tests that are
# about a missing or wrong key pass their own settings.
# Keys are 32 random bytes, hex encoded, as app.core.config requires.
TEST_AUDIT_KEY = "8193fa9e938911dba679b64e4d91b852475086884818f1244dd6bb6f2e712a5b"
TEST_CURSOR_SECRET = "30d854c0860b46b835da5107f451b813a610b0a55b6830336e531e4484d74f12"
os.environ.setdefault("CASEAPI_AUDIT_KEY", TEST_AUDIT_KEY)
os.environ.setdefault("CASEAPI_CURSOR_SECRET", TEST_CURSOR_SECRET)

# The key the test settings hold (the environment's): what the units of work
# tests run on databases of their own journal under, as the app's do.
AUDIT_KEY = audit_key(Settings())

T = TypeVar("T")
POSTGRES_URL = os.environ.get("CASEAPI_TEST_POSTGRES_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])


def _fresh_postgres(base_url: str) -> tuple[str, sa.Engine, str]:
    """A new, empty database on the given server, dropped at the end of the run."""
    name = f"caseapi_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    return make_url(base_url).set(database=name).render_as_string(hide_password=False), admin, name


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        path = Path(tmp_path_factory.mktemp("db")) / "caseapi.db"
        yield f"sqlite:///{path}"
        return
    assert POSTGRES_URL
    url, admin, name = _fresh_postgres(POSTGRES_URL)
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def blank_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own, never migrated, gone after the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'blank.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("CASEAPI_TEST_POSTGRES_URL not set")
    url, admin, name = _fresh_postgres(POSTGRES_URL)
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_db_engine(database_url)
    with engine.begin() as conn:
        migrate.upgrade(conn)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # Keys are looked up on every request, so that a test may revoke one and
    # expect 401 at once; tests/auth covers the cache itself.
    # Webhook tests drive delivery themselves (tests/webhooks), hit/no-hit tests their notices (tests/hits);
    # federation is tested between served instances (tests/federation).
    return Settings(
        database_url=database_url,
        auth_cache_seconds=0,
        webhook_delivery=False,
        hit_notices=False,
        federation_delivery=False,
        storage_dir=tmp_path_factory.mktemp("files"),
        # An instance that federates, as a production one may (tests/federation peers real ones).
        instance_id="tests.caseapi",
        instance_key_file=tmp_path_factory.mktemp("instance") / "caseapi-instance.key",
    )


@pytest.fixture(scope="session")
def application(settings: Settings, engine: sa.Engine) -> Iterator[FastAPI]:
    application = create_app(settings)
    yield application


@pytest.fixture(autouse=True)
def _empty_tables(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "engine" not in request.fixturenames:
        return
    engine: sa.Engine = request.getfixturevalue("engine")
    agency = SQLModel.metadata.tables["agency"]
    with engine.begin() as conn:
        conn.execute(agency.update().values(parent_id=None))  # self-reference first
        for table in reversed(SQLModel.metadata.sorted_tables):
            if table.name != "database_identity":  # the database's own id, which its files carry
                conn.execute(table.delete())


@pytest.fixture
def client(application: FastAPI) -> Iterator[TestClient]:
    with TestClient(application, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def live_server(settings: Settings, engine: sa.Engine) -> Iterator[str]:
    """The base URL of the app served by uvicorn on a free port over the test
    database, for clients that speak real HTTP. An app of its own: the hot
    reads' pool belongs to the event loop that serves it."""
    with serve(create_app(settings)) as url:
        yield url


@contextmanager
def serve(served: FastAPI) -> Iterator[str]:
    """Serve an app with uvicorn on a free port until the block ends; its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(served, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the live server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


@pytest.fixture
def backend(engine: sa.Engine) -> str:
    return engine.dialect.name


# --- factories -------------------------------------------------------------


@dataclass
class Caller:
    """An API client of one agency, ready to send requests."""

    agency_id: uuid.UUID
    agency_code: str
    client_id: uuid.UUID
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def h(self, **extra: str) -> dict[str, str]:
        """Headers with extras: h(if_match='"1"') -> If-Match."""
        return {**self.headers, **{k.replace("_", "-").title(): v for k, v in extra.items()}}


@contextmanager
def transaction(engine: sa.Engine, *, write: bool) -> Iterator[Session]:
    """An ORM session on the test database, to set up or inspect rows as a test
    sees fit (the app itself reaches the database through app.core.uow only);
    committed at the end when `write`."""
    with Session(engine, expire_on_commit=False) as session:
        yield session
        if write:
            session.commit()


@contextmanager
def recorded_statements(application: FastAPI) -> Iterator[list[str]]:
    """The SQL of every statement the app runs while the block runs, in order,
    on either backend (PostgreSQL: as app.core.uow prepares it for asyncpg;
    SQLite: as the engine sends it)."""
    seen: list[str] = []
    database = application.state.database
    if isinstance(database, PostgresDatabase):
        prepared = database.prepared

        def noted(stmt: Any) -> Any:
            found = prepared(stmt)
            seen.append(found.sql)
            return found

        database.prepared = noted  # type: ignore[method-assign]
        try:
            yield seen
        finally:
            del database.prepared
        return

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    sa.event.listen(database.engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        sa.event.remove(database.engine, "before_cursor_execute", on_execute)


def run_unit(engine: sa.Engine, work: Callable[[Tx], Awaitable[T]]) -> T:
    """`await work(tx)` in one unit of work (app.core.uow) on the test database, as the CLI runs one."""
    return run_with_database(engine, lambda db: db.run(work), audit_key=AUDIT_KEY)


def make_agency(
    engine: sa.Engine,
    code: str,
    *,
    parent_id: uuid.UUID | None = None,
    country: str | None = "KZ",
    kind: AgencyKind = AgencyKind.police,
) -> uuid.UUID:
    with transaction(engine, write=True) as session:
        agency = Agency(code=code, name=f"Agency {code}", country=country, kind=kind, parent_id=parent_id)
        session.add(agency)
        session.flush()
        return agency.id


def make_caller(engine: sa.Engine, code: str, *scopes: Scope, parent_id: uuid.UUID | None = None) -> Caller:
    """A new agency (unless it exists) and a client of it with the given scopes."""
    with transaction(engine, write=False) as session:
        existing = session.execute(sa.select(Agency.id).where(Agency.code == code)).scalar_one_or_none()
    agency_id = existing or make_agency(engine, code, parent_id=parent_id)
    api_client, key = run_unit(
        engine,
        lambda tx: auth.create_client(
            tx, agency_code=code, name=f"test {code}", scopes=scopes or (Scope.read, Scope.write)
        ),
    )
    return Caller(agency_id=agency_id, agency_code=code, client_id=api_client.id, key=key)


@pytest.fixture
def lead(engine: sa.Engine) -> Caller:
    """KZ agency with read, write and personal_data."""
    return make_caller(engine, "KZ-LEAD", Scope.read, Scope.write, Scope.personal_data)


@pytest.fixture
def partner(engine: sa.Engine) -> Caller:
    return make_caller(engine, "UA-PARTNER", Scope.read, Scope.write)


@pytest.fixture
def outsider(engine: sa.Engine) -> Caller:
    """An agency in no case, with every scope."""
    return make_caller(engine, "XX-OUTSIDER", *Scope)


@pytest.fixture
def admin(engine: sa.Engine) -> Caller:
    return make_caller(engine, "ADMIN-AGENCY", Scope.read, Scope.admin)


def new_case(client: TestClient, caller: Caller, **fields: Any) -> dict[str, Any]:
    body = {"reference": f"REF-{uuid.uuid4().hex[:10]}", "title": "A case", **fields}
    response = client.post("/api/v1/cases", json=body, headers=caller.headers)
    assert response.status_code == 201, response.text
    return response.json()


def join(client: TestClient, lead: Caller, case_id: str, member: Caller, role: str = "partner") -> None:
    response = client.post(
        f"/api/v1/cases/{case_id}/participants",
        json={"agency_id": str(member.agency_id), "role": role},
        headers=lead.headers,
    )
    assert response.status_code == 201, response.text


def problem_of(response: Any) -> dict[str, Any]:
    """A problem body without its request_id, which names the one request (and its
    X-Request-ID header): what to compare when two answers must be the same."""
    body: dict[str, Any] = response.json()
    assert body.pop("request_id") == response.headers["x-request-id"]
    return body


def walk(client: TestClient, url: str, headers: dict[str, str], limit: int = 50) -> list[dict[str, Any]]:
    """Follow next_cursor to the end; return every item. Query strings in `url` are kept."""
    path, _, query = url.partition("?")
    base = dict(parse_qsl(query))
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {**base, "limit": limit}
        if cursor:
            params["cursor"] = cursor
        response = client.get(path, params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


@pytest.fixture
def app_with(settings: Settings, engine: sa.Engine) -> Callable[..., AbstractContextManager[TestClient]]:
    """A client of an app of its own, with some settings changed (its metrics start at zero)."""

    @contextmanager
    def build(**changes: Any) -> Iterator[TestClient]:
        application = create_app(settings.model_copy(update=changes))
        with TestClient(application, raise_server_exceptions=False) as test_client:
            yield test_client

    return build


# --- the audit CLI ---------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    """`caseapi` commands run in-process against the test database (a command
    reads its settings from the environment)."""
    monkeypatch.setenv("CASEAPI_DATABASE_URL", database_url)


def run_verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`caseapi audit verify ARGS`: its exit status and its output (or its one-line failure)."""
    try:
        cli.main(["audit", "verify", *args])
    except SystemExit as exc:
        # sys.exit("message") prints the message and exits with status 1.
        code = exc.code if isinstance(exc.code, int) else 1
        return code, str(exc.code)
    return 0, capsys.readouterr().out
