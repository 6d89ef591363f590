"""What ends an upload early — a full disk, the agency's quota, a stalled body, a
client that goes away — answers for itself and leaves nothing behind."""

import errno
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.attachments.storage import StagedWriter, Staging
from app.core.config import Settings
from app.main import create_app
from tests.attachments.conftest import (
    API,
    attachment_rows,
    audit_actions,
    staging_files,
    unique_bytes,
    upload,
)
from tests.conftest import Caller, serve

AppWith = Callable[..., AbstractContextManager[TestClient]]


def _full_disk_at_write(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """The disk fills up while the file is written: part of it is on disk, then ENOSPC."""
    real_write = StagedWriter.write

    def write(self: StagedWriter, data: bytes) -> None:
        real_write(self, data[: len(data) // 2])
        raise OSError(code, "No space left on device")

    monkeypatch.setattr(StagedWriter, "write", write)


def _full_disk_at_open(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    def writer(self: Staging) -> StagedWriter:
        raise OSError(code, "No space left on device")

    monkeypatch.setattr(Staging, "writer", writer)


@pytest.mark.parametrize(
    ("where", "code"),
    [
        (_full_disk_at_write, errno.ENOSPC),
        (_full_disk_at_write, errno.EDQUOT),
        (_full_disk_at_open, errno.ENOSPC),
    ],
)
def test_a_full_disk_answers_507_and_keeps_nothing(
    client: TestClient,
    application: FastAPI,
    engine: sa.Engine,
    case: dict[str, Any],
    lead: Caller,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    where: Callable[[pytest.MonkeyPatch, int], None],
    code: int,
) -> None:
    where(monkeypatch, code)
    response = upload(client, lead, f"{API}/cases/{case['id']}/attachments", unique_bytes(2_500_000))
    assert response.status_code == 507, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:caseapi:problem:insufficient-storage"
    assert staging_files(application) == []
    assert attachment_rows(engine) == 0
    assert "attachment.created" not in audit_actions(engine)
    assert "unhandled error" not in caplog.text


def test_another_os_error_is_still_a_server_error(
    client: TestClient,
    application: FastAPI,
    case: dict[str, Any],
    lead: Caller,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only a full disk is a 507: a failing disk is the server's fault, and says so."""
    _full_disk_at_write(monkeypatch, errno.EIO)
    response = upload(client, lead, f"{API}/cases/{case['id']}/attachments", unique_bytes(2_500_000))
    assert response.status_code == 500
    assert staging_files(application) == []


QUOTA = 5000


def test_an_agency_past_its_quota_gets_507_and_others_still_upload(
    app_with: AppWith,
    application: FastAPI,
    engine: sa.Engine,
    case: dict[str, Any],
    lead: Caller,
    partner: Caller,
) -> None:
    url = f"{API}/cases/{case['id']}/attachments"
    with app_with(storage_quota_bytes_per_agency=QUOTA) as quota_client:
        first = upload(quota_client, lead, url, unique_bytes(3000))
        assert first.status_code == 201, first.text

        def chunked() -> Iterator[bytes]:  # no Content-Length: only the received size tells
            yield unique_bytes(3000)

        over = upload(quota_client, lead, url, chunked())
        assert over.status_code == 507, over.text
        problem = over.json()
        assert problem["type"] == "urn:caseapi:problem:storage-quota-exceeded"
        assert (problem["quota_bytes"], problem["used_bytes"]) == (QUOTA, 3000)
        assert attachment_rows(engine) == 1
        assert staging_files(application) == []
        # One agency's uploads do not fill the store for the others.
        assert upload(quota_client, partner, url, unique_bytes(3000)).status_code == 201
        # Up to the quota exactly is allowed; deleting frees room.
        assert upload(quota_client, lead, url, unique_bytes(QUOTA - 3000)).status_code == 201
        assert upload(quota_client, lead, url, b"x").status_code == 507
        deleted = quota_client.delete(
            f"{API}/attachments/{first.json()['id']}", headers=lead.h(if_match='"1"')
        )
        assert deleted.status_code == 204
        assert upload(quota_client, lead, url, unique_bytes(3000)).status_code == 201


def test_a_file_declared_past_the_quota_is_refused_before_its_body_is_read(
    app_with: AppWith, application: FastAPI, case: dict[str, Any], lead: Caller
) -> None:
    consumed: list[bool] = []

    def body() -> Iterator[bytes]:
        consumed.append(True)
        yield b"x" * (QUOTA + 1)

    with app_with(storage_quota_bytes_per_agency=QUOTA) as quota_client:
        response = quota_client.post(
            f"{API}/cases/{case['id']}/attachments",
            params={"filename": "big.bin"},
            content=body(),
            headers=lead.h(content_type="application/octet-stream", content_length=str(QUOTA + 1)),
        )
    assert response.status_code == 507, response.text
    assert consumed == []
    assert staging_files(application) == []


# --- over a real socket: a client that stalls, a client that goes away --------------


@pytest.fixture
def impatient(settings: Settings, engine: sa.Engine) -> Iterator[str]:
    """A live server that waits half a second for the next piece of a body."""
    served = create_app(settings.model_copy(update={"body_chunk_timeout_seconds": 0.5}))
    with serve(served) as url:
        yield url


def _start_upload(base_url: str, caller: Caller, case_id: str, declared: int, sent: int) -> socket.socket:
    """An upload that declares `declared` bytes and sends only `sent` of them."""
    parts = urlsplit(base_url)
    assert parts.hostname is not None and parts.port is not None
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    head = (
        f"POST {API}/cases/{case_id}/attachments?filename=half.bin HTTP/1.1\r\n"
        f"Host: {parts.netloc}\r\n"
        f"Authorization: Bearer {caller.key}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + unique_bytes(sent))
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body


def test_a_stalled_upload_ends_with_408_and_its_staging_file_goes(
    impatient: str, application: FastAPI, engine: sa.Engine, case: dict[str, Any], lead: Caller
) -> None:
    started = time.monotonic()
    with _start_upload(impatient, lead, case["id"], declared=4_000_000, sent=1_500_000) as sock:
        status, headers, body = _read_response(sock)  # returns once the server closed the connection
    waited = time.monotonic() - started
    assert status == 408, body
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["type"] == "urn:caseapi:problem:request-timeout"
    assert 0.5 <= waited < 8, waited
    assert staging_files(application) == []
    assert attachment_rows(engine) == 0


def test_a_client_gone_mid_upload_is_no_server_error_and_leaves_nothing(
    live_server: str,
    application: FastAPI,
    engine: sa.Engine,
    case: dict[str, Any],
    lead: Caller,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="caseapi"):
        sock = _start_upload(live_server, lead, case["id"], declared=4_000_000, sent=1_500_000)
        time.sleep(0.2)  # the server is receiving
        sock.close()
        deadline = time.monotonic() + 10
        while "upload abandoned" not in caplog.text and "unhandled error" not in caplog.text:
            assert time.monotonic() < deadline, "the server never noticed the client had gone"
            time.sleep(0.05)
        while staging_files(application) and time.monotonic() < deadline:
            time.sleep(0.05)  # the staging file goes just after the disconnect is noticed
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert staging_files(application) == []
    assert attachment_rows(engine) == 0


def test_the_document_declares_408_and_507_for_uploads(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        f"{API}/cases/{{case_id}}/attachments",
        f"{API}/requests/{{request_id}}/messages/{{message_id}}/attachments",
    ):
        assert {"408", "507"} <= set(paths[path]["post"]["responses"]), path
    assert "507" not in paths[f"{API}/cases"]["post"]["responses"]
