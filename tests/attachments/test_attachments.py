"""Attachments: the round trip, the limits, the digests, the storage's
commit-then-move order and its sweeper, and who sees what."""

import base64
import hashlib
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import exc as sa_exc

import app.core.journal
from app.attachments import service
from app.auth.models import Scope
from app.auth.service import Principal
from app.core.config import Settings
from app.core.uow import Tx, run_with_database
from app.main import create_app
from tests.attachments.conftest import (
    API,
    PDF,
    attachment_rows,
    audit_actions,
    staging_files,
    storage_of,
    sweep,
    unique_bytes,
    upload,
)
from tests.conftest import AUDIT_KEY, Caller, join, make_caller, problem_of


@pytest.fixture
def small(settings: Settings, engine: sa.Engine) -> Iterator[TestClient]:
    """The app with a 4 KiB attachment limit."""
    application = create_app(settings.model_copy(update={"max_attachment_bytes": 4096}))
    with TestClient(application, raise_server_exceptions=False) as test_client:
        yield test_client


def test_upload_and_download_round_trip(
    client: TestClient, application: FastAPI, case: dict[str, Any], lead: Caller, partner: Caller
) -> None:
    data = unique_bytes(1_500_000)  # over the usual 1 MiB body limit, several chunks each way
    url = f"{API}/cases/{case['id']}/attachments"
    response = upload(client, partner, url, data, filename="extraction report.pdf")
    assert response.status_code == 201, response.text
    meta = response.json()
    sha = hashlib.sha256(data).hexdigest()
    assert meta["sha256"] == sha
    assert meta["size"] == len(data)
    assert meta["case_id"] == case["id"]
    assert meta["filename"] == "extraction report.pdf"
    assert meta["content_type"] == PDF
    assert meta["uploaded_by_agency_id"] == str(partner.agency_id)
    assert response.headers["location"] == f"{API}/attachments/{meta['id']}"
    assert response.headers["etag"] == '"1"'

    got = client.get(f"{API}/attachments/{meta['id']}", headers=lead.headers)
    assert got.status_code == 200
    assert got.json() == meta
    assert got.headers["etag"] == '"1"'

    content = client.get(f"{API}/attachments/{meta['id']}/content", headers=lead.headers)
    assert content.status_code == 200
    assert content.content == data
    assert content.headers["content-type"] == PDF
    assert content.headers["content-length"] == str(len(data))
    assert content.headers["etag"] == f'"{sha}"'
    assert content.headers["x-content-type-options"] == "nosniff"
    assert content.headers["content-disposition"] == (
        "attachment; filename=\"extraction report.pdf\"; filename*=UTF-8''extraction%20report.pdf"
    )
    assert storage_of(application).exists(sha)
    assert staging_files(application) == []

    listed = client.get(url, headers=lead.headers).json()
    assert [a["id"] for a in listed["items"]] == [meta["id"]]


def test_the_list_pages_through_every_attachment_once(
    client: TestClient, case: dict[str, Any], lead: Caller
) -> None:
    url = f"{API}/cases/{case['id']}/attachments"
    ids = {upload(client, lead, url, unique_bytes(100)).json()["id"] for _ in range(5)}
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(url, params=params, headers=lead.headers).json()
        seen += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)


def test_a_matching_digest_is_accepted(client: TestClient, case: dict[str, Any], lead: Caller) -> None:
    data = unique_bytes()
    digest = hashlib.sha256(data).digest()
    url = f"{API}/cases/{case['id']}/attachments"
    by_header = upload(client, lead, url, data, repr_digest=f"sha-256=:{base64.b64encode(digest).decode()}:")
    assert by_header.status_code == 201, by_header.text
    by_query = upload(client, lead, url, data, params={"sha256": digest.hex()})
    assert by_query.status_code == 201, by_query.text


@pytest.mark.parametrize("how", ["repr-digest", "query"])
def test_a_digest_mismatch_stores_nothing(
    client: TestClient, application: FastAPI, engine: sa.Engine, case: dict[str, Any], lead: Caller, how: str
) -> None:
    data = unique_bytes()
    wrong = hashlib.sha256(data + b"tampered").digest()
    url = f"{API}/cases/{case['id']}/attachments"
    if how == "query":
        response = upload(client, lead, url, data, params={"sha256": wrong.hex()})
    else:
        response = upload(
            client, lead, url, data, repr_digest=f"sha-256=:{base64.b64encode(wrong).decode()}:"
        )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert attachment_rows(engine) == 0
    assert not storage_of(application).exists(hashlib.sha256(data).hexdigest())
    assert staging_files(application) == []
    assert "attachment.created" not in audit_actions(engine)


@pytest.mark.parametrize(
    "header",
    ["sha-512=:AAAA:", "sha-256=:not base64!:", "sha-256=:" + base64.b64encode(b"short").decode() + ":"],
)
def test_an_unusable_repr_digest_is_a_422(
    client: TestClient, engine: sa.Engine, case: dict[str, Any], lead: Caller, header: str
) -> None:
    url = f"{API}/cases/{case['id']}/attachments"
    response = upload(client, lead, url, b"data", repr_digest=header)
    assert response.status_code == 422, response.text
    assert attachment_rows(engine) == 0


def test_over_the_limit_by_content_length_is_refused_before_the_body_is_read(
    small: TestClient, application: FastAPI, case: dict[str, Any], lead: Caller
) -> None:
    consumed: list[bool] = []

    def body() -> Iterator[bytes]:
        consumed.append(True)
        yield b"x" * 5000

    response = small.post(
        f"{API}/cases/{case['id']}/attachments",
        params={"filename": "big.bin"},
        content=body(),
        headers=lead.h(content_type="application/octet-stream", content_length="5000"),
    )
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert consumed == [], "the app read the body of a request it refuses by its length"
    assert staging_files(application) == []


def test_over_the_limit_while_streaming_is_refused_and_nothing_is_kept(
    small: TestClient, application: FastAPI, engine: sa.Engine, case: dict[str, Any], lead: Caller
) -> None:
    def body() -> Iterator[bytes]:  # no Content-Length: sent chunked
        for _ in range(10):
            yield b"x" * 1024

    response = small.post(
        f"{API}/cases/{case['id']}/attachments",
        params={"filename": "big.bin"},
        content=body(),
        headers=lead.h(content_type="application/octet-stream"),
    )
    assert response.status_code == 413, response.text
    assert attachment_rows(engine) == 0
    assert staging_files(application) == []


def test_up_to_the_limit_is_accepted(small: TestClient, case: dict[str, Any], lead: Caller) -> None:
    response = upload(small, lead, f"{API}/cases/{case['id']}/attachments", b"x" * 4096)
    assert response.status_code == 201, response.text


def test_other_routes_keep_the_usual_body_limit(
    client: TestClient, case: dict[str, Any], lead: Caller
) -> None:
    huge = {"label": "x" * (2 * 1024 * 1024)}
    response = client.post(f"{API}/cases/{case['id']}/locations", json=huge, headers=lead.headers)
    assert response.status_code == 413


@pytest.fixture
def failing_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every commit of a unit of work that adds an attachment fails, as on a full disk."""
    write = app.core.journal.write

    async def fail(tx: Tx, audit_key: bytes) -> None:
        if any(change.action == "attachment.created" for change in tx.changes):
            raise sa_exc.OperationalError("COMMIT", {}, Exception("disk I/O error"))
        await write(tx, audit_key)

    monkeypatch.setattr(app.core.journal, "write", fail)


def test_a_failed_commit_keeps_no_row_and_no_file(
    client: TestClient,
    application: FastAPI,
    engine: sa.Engine,
    case: dict[str, Any],
    lead: Caller,
    failing_commit: None,
) -> None:
    data = unique_bytes()
    response = upload(client, lead, f"{API}/cases/{case['id']}/attachments", data)
    assert response.status_code == 503, response.text
    assert attachment_rows(engine) == 0
    assert not storage_of(application).exists(hashlib.sha256(data).hexdigest())
    assert staging_files(application) == []


def test_a_crash_before_the_commit_leaves_only_a_staging_file_which_the_sweeper_removes(
    client: TestClient, application: FastAPI, engine: sa.Engine, case: dict[str, Any], lead: Caller
) -> None:
    storage = storage_of(application)
    data = unique_bytes()
    # The process dies after writing and sealing the file, before its row commits.
    writer = storage.staging.writer()
    writer.write(data)
    staged = writer.seal()
    assert staging_files(application) == [staged.path]
    assert attachment_rows(engine) == 0
    # Nothing names it, so nothing can serve it; a sweep that spares recent files keeps it ...
    assert sweep(engine, storage, older_than=3600, apply=True).staging_removed == []
    # ... and one past its grace time removes it, without moving it into place.
    report = sweep(engine, storage, older_than=0, apply=True)
    assert report.staging_removed == [staged.path.name] and report.recovered == []
    assert staging_files(application) == []
    assert not storage.exists(staged.sha256)


def test_a_crash_between_commit_and_move_is_finished_by_the_sweeper(
    client: TestClient,
    application: FastAPI,
    engine: sa.Engine,
    case: dict[str, Any],
    lead: Caller,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = unique_bytes()
    monkeypatch.setattr(service, "place", lambda storage, staged: None)  # the process dies here
    created = upload(client, lead, f"{API}/cases/{case['id']}/attachments", data)
    assert created.status_code == 201
    monkeypatch.undo()
    url = f"{API}/attachments/{created.json()['id']}/content"
    missing = client.get(url, headers=lead.headers)
    assert missing.status_code == 503
    assert missing.headers["content-type"] == "application/problem+json"

    report = sweep(engine, storage_of(application), older_than=0, apply=True)
    assert report.recovered == [created.json()["sha256"]]
    assert staging_files(application) == []
    assert client.get(url, headers=lead.headers).content == data


def test_the_sweeper_removes_files_no_row_names(
    client: TestClient, application: FastAPI, engine: sa.Engine, case: dict[str, Any], lead: Caller
) -> None:
    storage = storage_of(application)
    kept = upload(client, lead, f"{API}/cases/{case['id']}/attachments", unique_bytes()).json()
    orphan = storage.staging.writer()
    orphan.write(unique_bytes())
    sealed = orphan.seal()
    storage.put(sealed.sha256, sealed.path)
    sweep(engine, storage, older_than=3600, apply=True)
    assert not storage.exists(sealed.sha256)
    assert storage.exists(kept["sha256"])


def test_deleting_the_last_reference_removes_the_file(
    client: TestClient, application: FastAPI, engine: sa.Engine, case: dict[str, Any], lead: Caller
) -> None:
    storage = storage_of(application)
    data = unique_bytes()
    url = f"{API}/cases/{case['id']}/attachments"
    first = upload(client, lead, url, data, filename="a.pdf").json()
    second = upload(client, lead, url, data, filename="b.pdf").json()
    assert first["sha256"] == second["sha256"]

    no_precondition = client.delete(f"{API}/attachments/{first['id']}", headers=lead.headers)
    assert no_precondition.status_code == 428
    stale = client.delete(f"{API}/attachments/{first['id']}", headers=lead.h(if_match='"7"'))
    assert stale.status_code == 412

    deleted = client.delete(f"{API}/attachments/{first['id']}", headers=lead.h(if_match='"1"'))
    assert deleted.status_code == 204
    assert client.get(f"{API}/attachments/{first['id']}", headers=lead.headers).status_code == 404
    assert storage.exists(first["sha256"]), "the other attachment still names the file"
    assert client.get(f"{API}/attachments/{second['id']}/content", headers=lead.headers).content == data

    assert (
        client.delete(f"{API}/attachments/{second['id']}", headers=lead.h(if_match='"1"')).status_code == 204
    )
    assert not storage.exists(first["sha256"])
    assert attachment_rows(engine) == 0


def test_changes_are_in_the_feed_and_downloads_in_the_audit_trail(
    client: TestClient, engine: sa.Engine, case: dict[str, Any], lead: Caller, partner: Caller
) -> None:
    meta = upload(client, lead, f"{API}/cases/{case['id']}/attachments", unique_bytes()).json()
    assert client.get(f"{API}/attachments/{meta['id']}/content", headers=partner.headers).status_code == 200
    assert client.delete(f"{API}/attachments/{meta['id']}", headers=lead.h(if_match='"1"')).status_code == 204

    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT action, agency_id, case_id FROM audit_entry WHERE resource_id = :id ORDER BY seq"
            ),
            {
                "id": uuid.UUID(meta["id"])
                if engine.dialect.name == "postgresql"
                else uuid.UUID(meta["id"]).hex
            },
        ).all()
    assert [r.action for r in rows] == ["attachment.created", "attachment.downloaded", "attachment.deleted"]
    assert str(uuid.UUID(str(rows[1].agency_id))) == str(partner.agency_id)

    feed = client.get(f"{API}/events", params={"limit": 200}, headers=partner.headers).json()["items"]
    mine = [e["type"] for e in feed if e["resource_id"] == meta["id"]]
    assert mine == ["attachment.created", "attachment.deleted"]  # a download is not a change


def test_observers_read_but_do_not_add_or_delete(
    client: TestClient, engine: sa.Engine, case: dict[str, Any], lead: Caller
) -> None:
    observer = make_caller(engine, "OSCE-OBS", Scope.read, Scope.write)
    join(client, lead, case["id"], observer, role="observer")
    url = f"{API}/cases/{case['id']}/attachments"
    meta = upload(client, lead, url, unique_bytes()).json()
    assert client.get(f"{API}/attachments/{meta['id']}/content", headers=observer.headers).status_code == 200
    assert upload(client, observer, url, b"data").status_code == 403
    denied = client.delete(f"{API}/attachments/{meta['id']}", headers=observer.h(if_match='"1"'))
    assert denied.status_code == 403


def test_an_outsider_learns_nothing(
    client: TestClient, engine: sa.Engine, case: dict[str, Any], lead: Caller, outsider: Caller
) -> None:
    meta = upload(client, lead, f"{API}/cases/{case['id']}/attachments", unique_bytes()).json()
    before = audit_actions(engine)
    for suffix in ("", "/content"):
        hidden = client.get(f"{API}/attachments/{meta['id']}{suffix}", headers=outsider.headers)
        missing = client.get(f"{API}/attachments/{uuid.uuid4()}{suffix}", headers=outsider.headers)
        assert hidden.status_code == missing.status_code == 404
        assert problem_of(hidden) == problem_of(missing)
        assert "etag" not in hidden.headers
    assert client.get(f"{API}/cases/{case['id']}/attachments", headers=outsider.headers).status_code == 404
    # Refused before a byte is read, exactly like a case that does not exist.
    for case_id in (case["id"], str(uuid.uuid4())):
        refused = upload(client, outsider, f"{API}/cases/{case_id}/attachments", b"data")
        assert refused.status_code == 404
    deleted = client.delete(f"{API}/attachments/{meta['id']}", headers=outsider.h(if_match='"1"'))
    assert deleted.status_code == 404
    assert audit_actions(engine) == before, "a refused download was audited as a disclosure"


def test_message_attachments_reach_only_the_two_agencies(
    client: TestClient, message: tuple[str, str], lead: Caller, partner: Caller, outsider: Caller
) -> None:
    request_id, message_id = message
    url = f"{API}/requests/{request_id}/messages/{message_id}/attachments"
    data = unique_bytes()
    created = upload(
        client, lead, url, data, filename="sim-cards.xlsx", content_type="application/vnd.ms-excel"
    )
    assert created.status_code == 201, created.text
    meta = created.json()
    assert meta["case_id"] is None and meta["message_id"] == message_id and meta["request_id"] == request_id

    for reader in (lead, partner):
        assert [a["id"] for a in client.get(url, headers=reader.headers).json()["items"]] == [meta["id"]]
        assert client.get(f"{API}/attachments/{meta['id']}/content", headers=reader.headers).content == data
        feed = client.get(f"{API}/events", params={"limit": 200}, headers=reader.headers).json()["items"]
        assert "attachment.created" in [e["type"] for e in feed if e["resource_id"] == meta["id"]]

    assert client.get(url, headers=outsider.headers).status_code == 404
    hidden = client.get(f"{API}/attachments/{meta['id']}/content", headers=outsider.headers)
    missing = client.get(f"{API}/attachments/{uuid.uuid4()}/content", headers=outsider.headers)
    assert hidden.status_code == 404 and problem_of(hidden) == problem_of(missing)
    assert upload(client, outsider, url, b"data").status_code == 404
    feed = client.get(f"{API}/events", params={"limit": 200}, headers=outsider.headers).json()["items"]
    assert meta["id"] not in {e["resource_id"] for e in feed}

    # The other agency reads the message but does not attach to it or delete what is attached.
    assert upload(client, partner, url, b"data").status_code == 403
    denied = client.delete(f"{API}/attachments/{meta['id']}", headers=partner.h(if_match='"1"'))
    assert denied.status_code == 403
    removed = client.delete(f"{API}/attachments/{meta['id']}", headers=lead.h(if_match='"1"'))
    assert removed.status_code == 204


def test_files_are_offered_again_only_to_who_can_download_them(
    client: TestClient,
    engine: sa.Engine,
    case: dict[str, Any],
    message: tuple[str, str],
    lead: Caller,
    partner: Caller,
    outsider: Caller,
) -> None:
    """visible_files() (a bundle import's check) over more digests than one statement takes."""
    request_id, message_id = message
    in_case = upload(client, lead, f"{API}/cases/{case['id']}/attachments", unique_bytes(3000)).json()
    url = f"{API}/requests/{request_id}/messages/{message_id}/attachments"
    in_message = upload(client, lead, url, unique_bytes(2000)).json()
    unknown = [hashlib.sha256(str(n).encode()).hexdigest() for n in range(1200)]
    wanted = [*unknown, in_case["sha256"], in_message["sha256"], in_case["sha256"]]

    def visible(caller: Caller, shas: list[str]) -> dict[str, int]:
        principal = Principal(caller.client_id, caller.agency_id, None, frozenset({"read"}))

        return run_with_database(
            engine, lambda db: service.visible_files(db, principal, shas), audit_key=AUDIT_KEY
        )

    both = {in_case["sha256"]: 3000, in_message["sha256"]: 2000}
    assert visible(lead, wanted) == both
    assert visible(partner, wanted) == both  # a partner in the case, and the request's recipient
    assert visible(lead, [in_message["sha256"]]) == {in_message["sha256"]: 2000}
    assert visible(outsider, wanted) == {}
    assert visible(lead, []) == {}


def test_a_hostile_filename_cannot_break_the_header(
    client: TestClient, case: dict[str, Any], lead: Caller
) -> None:
    name = '../..\\evil"; filename=x.exe;.pdf Отчёт №1'
    meta = upload(client, lead, f"{API}/cases/{case['id']}/attachments", b"%PDF", filename=name).json()
    assert meta["filename"] == name  # kept as given
    header = client.get(f"{API}/attachments/{meta['id']}/content", headers=lead.headers).headers[
        "content-disposition"
    ]
    disposition, fallback, encoded = header.split("; ")
    assert disposition == "attachment"
    # One quoted ASCII name with no quote, path separator or parameter of its own inside ...
    assert fallback.startswith('filename="') and fallback.endswith('"')
    assert not set(fallback[len('filename="') : -1]) & set('"/\\;')
    # ... and the real name, percent-encoded in UTF-8, without its path.
    assert encoded.startswith("filename*=UTF-8''")
    assert not set(encoded.removeprefix("filename*=UTF-8''")) & set("\"/\\; '")
    assert unquote(encoded.removeprefix("filename*=UTF-8''")) == '_.._evil"; filename=x.exe;.pdf Отчёт №1'


@pytest.mark.parametrize("name", ["a\r\nSet-Cookie: x=1", "tab\there", "del\x7f", "c1\x85next-line"])
def test_control_characters_in_a_filename_are_refused(
    client: TestClient, engine: sa.Engine, case: dict[str, Any], lead: Caller, name: str
) -> None:
    response = upload(client, lead, f"{API}/cases/{case['id']}/attachments", b"data", filename=name)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["query", "filename"]
    assert attachment_rows(engine) == 0


def test_the_header_builder_never_lets_a_line_break_through() -> None:
    header = service.content_disposition("a\r\nSet-Cookie: x=1\x00.pdf")
    assert "\r" not in header and "\n" not in header and "\x00" not in header
    assert (
        service.content_disposition("...")
        == "attachment; filename=\"attachment\"; filename*=UTF-8''attachment"
    )


@pytest.mark.parametrize("content_type", ["not a type", "text/html\x7f", "a/b" + "c" * 300])
def test_a_bad_content_type_is_a_422(
    client: TestClient, case: dict[str, Any], lead: Caller, content_type: str
) -> None:
    response = client.post(
        f"{API}/cases/{case['id']}/attachments",
        params={"filename": "x.bin"},
        content=b"data",
        headers={**lead.headers, "Content-Type": content_type},
    )
    assert response.status_code == 422, response.text


def test_no_filename_is_a_422(client: TestClient, case: dict[str, Any], lead: Caller) -> None:
    response = client.post(f"{API}/cases/{case['id']}/attachments", content=b"data", headers=lead.headers)
    assert response.status_code == 422


def test_an_upload_without_a_type_is_stored_as_octet_stream(
    client: TestClient, case: dict[str, Any], lead: Caller
) -> None:
    response = client.post(
        f"{API}/cases/{case['id']}/attachments",
        params={"filename": "blob"},
        content=b"data",
        headers=lead.headers,
    )
    assert response.status_code == 201
    assert response.json()["content_type"] == "application/octet-stream"


def test_an_idempotent_upload_is_stored_once(
    client: TestClient, application: FastAPI, engine: sa.Engine, case: dict[str, Any], lead: Caller
) -> None:
    url = f"{API}/cases/{case['id']}/attachments"
    data = unique_bytes()
    first = upload(client, lead, url, data, idempotency_key="upload-1")
    again = upload(client, lead, url, data, idempotency_key="upload-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    other = upload(client, lead, url, unique_bytes(), idempotency_key="upload-1")
    assert other.status_code == 422
    assert attachment_rows(engine) == 1
    assert staging_files(application) == []


@pytest.mark.parametrize("content_type", ["text/csv", "text/html", "image/svg+xml"])
def test_the_stored_type_comes_back_as_it_was_sent(
    client: TestClient, case: dict[str, Any], lead: Caller, content_type: str
) -> None:
    """Exactly as stored (no charset added), and never rendered in the API's origin."""
    url = f"{API}/cases/{case['id']}/attachments"
    meta = upload(client, lead, url, b"<script>alert(1)</script>", content_type=content_type).json()
    content = client.get(f"{API}/attachments/{meta['id']}/content", headers=lead.headers)
    assert content.headers["content-type"] == content_type
    assert content.headers["content-disposition"].startswith("attachment;")
    assert content.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in content.headers["content-security-policy"]


def test_a_case_with_attachments_is_not_deleted(
    client: TestClient, case: dict[str, Any], lead: Caller
) -> None:
    upload(client, lead, f"{API}/cases/{case['id']}/attachments", unique_bytes())
    response = client.delete(f"{API}/cases/{case['id']}", headers=lead.h(if_match=f'"{case["version"]}"'))
    assert response.status_code == 409, response.text
    assert client.get(f"{API}/cases/{case['id']}", headers=lead.headers).status_code == 200


def test_a_bidirectional_override_cannot_disguise_the_extension() -> None:
    header = service.content_disposition("invoice\u202efdp.exe")
    assert header.endswith("filename*=UTF-8''invoice_fdp.exe")
    assert "\u202e" not in header


def test_a_withdrawn_request_takes_no_more_files(
    client: TestClient, message: tuple[str, str], lead: Caller, engine: sa.Engine
) -> None:
    request_id, message_id = message
    withdrawn = client.patch(
        f"{API}/requests/{request_id}", json={"status": "withdrawn"}, headers=lead.h(if_match='"1"')
    )
    assert withdrawn.status_code == 200, withdrawn.text
    url = f"{API}/requests/{request_id}/messages/{message_id}/attachments"
    assert upload(client, lead, url, b"late").status_code == 409
    assert attachment_rows(engine) == 0
