"""/health/ready: ready only when the database answers AND its schema is the newest."""

import sqlalchemy as sa
from fastapi.testclient import TestClient

from app import migrate
from app.config import Settings
from app.db import create_db_engine
from app.main import create_app


def _ready(database_url: str) -> tuple[int, dict[str, object]]:
    application = create_app(Settings(database_url=database_url))
    try:
        with TestClient(application, raise_server_exceptions=False) as client:
            response = client.get("/health/ready")
            assert client.get("/api/v1/health/ready").status_code == response.status_code
    finally:
        application.state.engine.dispose()
    return response.status_code, response.json()


def test_ready_follows_the_schema_revision(blank_database_url: str) -> None:
    status, body = _ready(blank_database_url)
    assert status == 503 and body["type"] == "urn:caseapi:problem:schema-not-migrated"
    assert "caseapi migrate" in str(body["detail"])

    engine = create_db_engine(blank_database_url)
    try:
        with engine.begin() as conn:
            migrate.upgrade(conn)
        assert _ready(blank_database_url) == (200, {"status": "ready"})

        # A schema one revision behind this code (an upgrade deployed, its migration not run).
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = 'older'"))
        status, body = _ready(blank_database_url)
        assert status == 503 and body["type"] == "urn:caseapi:problem:schema-not-migrated"
    finally:
        engine.dispose()


def test_a_database_that_does_not_answer_is_not_ready() -> None:
    status, body = _ready("postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert status == 503 and body["type"] == "urn:caseapi:problem:database-unavailable"
