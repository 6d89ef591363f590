"""The client's tests run against a live caseapi (uvicorn on a free port) over
the project's test databases: SQLite, and PostgreSQL when
CASEAPI_TEST_POSTGRES_URL names a server. The fixtures are the project's own."""

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from caseapi_client import Client

from app.auth.models import Scope
from tests.conftest import (  # noqa: F401  (fixtures, registered by being imported here)
    Caller,
    _empty_tables,
    application,
    database_url,
    engine,
    live_server,
    make_caller,
    settings,
)


@pytest.fixture
def kz(engine: sa.Engine) -> Caller:
    return make_caller(engine, "KZ-MVD", Scope.read, Scope.write, Scope.personal_data)


@pytest.fixture
def ua(engine: sa.Engine) -> Caller:
    return make_caller(engine, "UA-LE", Scope.read, Scope.write)


@pytest.fixture
def kz_client(live_server: str, kz: Caller) -> Iterator[Client]:
    with Client(live_server, kz.key) as client:
        yield client


@pytest.fixture
def ua_client(live_server: str, ua: Caller) -> Iterator[Client]:
    with Client(live_server, ua.key) as client:
        yield client
