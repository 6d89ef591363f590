"""/health/ready: ready only when the database answers AND its schema is the newest."""

import logging

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.auth.service import hash_key
from app.core import migrate
from app.core.config import Settings
from app.core.db import create_db_engine
from app.main import create_app


def _ready(database_url: str) -> tuple[int, dict[str, object]]:
    application = create_app(Settings(database_url=database_url))
    with TestClient(application, raise_server_exceptions=False) as client:
        response = client.get("/health/ready")
        assert client.get("/api/v1/health/ready").status_code == response.status_code
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


def test_an_unmigrated_database_answers_503_and_logs_no_sql(
    blank_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = "cak_" + "k" * 43
    application = create_app(Settings(database_url=blank_database_url))
    with TestClient(application, raise_server_exceptions=False) as client, caplog.at_level(logging.INFO):
        response = client.get("/api/v1/cases", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    # The statement and its parameters (here the key's hash) stay out of the log.
    assert "api_client" in caplog.text
    assert "SELECT" not in caplog.text and hash_key(key) not in caplog.text
