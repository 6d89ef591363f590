"""Helpers and fixtures of the attachment tests."""

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.attachments import service
from app.attachments.models import Attachment
from app.attachments.storage import LocalStorage
from app.core.uow import run_with_database
from tests.conftest import AUDIT_KEY, Caller, join, new_case

API = "/api/v1"
PDF = "application/pdf"


def upload(
    client: TestClient,
    caller: Caller,
    url: str,
    content: Any,
    *,
    filename: str = "report.pdf",
    content_type: str = PDF,
    params: dict[str, str] | None = None,
    **headers: str,
) -> httpx.Response:
    return client.post(
        url,
        params={"filename": filename, **(params or {})},
        content=content,
        headers=caller.h(content_type=content_type, **headers),
    )


def unique_bytes(size: int = 3000) -> bytes:
    seed = uuid.uuid4().bytes
    return (seed * (size // len(seed) + 1))[:size]


def storage_of(application: FastAPI) -> LocalStorage:
    return application.state.storage


def staging_files(application: FastAPI) -> list[Path]:
    root = storage_of(application).staging.root
    return list(root.iterdir()) if root.is_dir() else []


def sweep(engine: sa.Engine, storage: LocalStorage, *, older_than: float, apply: bool) -> service.SweepReport:
    """service.sweep() on its own connections, as `caseapi storage sweep` runs it."""
    return run_with_database(
        engine, lambda db: service.sweep(db, storage, older_than=older_than, apply=apply), audit_key=AUDIT_KEY
    )


def attachment_rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(Attachment)).scalar_one()


def audit_actions(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT action FROM audit_entry ORDER BY seq")).scalars())


@pytest.fixture
def case(client: TestClient, lead: Caller, partner: Caller) -> dict[str, Any]:
    found = new_case(client, lead)
    join(client, lead, found["id"], partner)
    return found


@pytest.fixture
def message(client: TestClient, lead: Caller, partner: Caller) -> tuple[str, str]:
    body = {"to_agency_id": str(partner.agency_id), "subject": "Phone extraction", "body": "Attached."}
    request = client.post(f"{API}/requests", json=body, headers=lead.headers).json()
    msg = client.post(
        f"{API}/requests/{request['id']}/messages", json={"body": "Report"}, headers=lead.headers
    )
    return request["id"], msg.json()["id"]
