"""GET /attachments/{id}/content: one byte Range (206, 416), If-None-Match (304),
HEAD; what of it is audited; how the document declares it."""

import hashlib
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.attachments.conftest import API, audit_actions, unique_bytes, upload
from tests.conftest import Caller

SIZE = 1_000_000  # several read chunks


@pytest.fixture
def stored(client: TestClient, case: dict[str, Any], lead: Caller) -> tuple[str, bytes]:
    """The id and bytes of an attachment of the case."""
    data = unique_bytes(SIZE)
    created = upload(client, lead, f"{API}/cases/{case['id']}/attachments", data)
    assert created.status_code == 201, created.text
    return created.json()["id"], data


def downloads(engine: sa.Engine) -> int:
    return audit_actions(engine).count("attachment.downloaded")


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=100-199", 100, 199),
        ("bytes=200000-700000", 200000, 700000),
        ("bytes=999000-", 999000, SIZE - 1),
        ("bytes=-500", SIZE - 500, SIZE - 1),
        ("bytes=999990-5000000", 999990, SIZE - 1),  # past the end: up to the end
        ("bytes=-5000000", 0, SIZE - 1),
    ],
)
def test_a_single_byte_range_is_a_206(
    client: TestClient,
    engine: sa.Engine,
    stored: tuple[str, bytes],
    partner: Caller,
    header: str,
    first: int,
    last: int,
) -> None:
    attachment_id, data = stored
    response = client.get(f"{API}/attachments/{attachment_id}/content", headers=partner.h(range=header))
    assert response.status_code == 206, response.text
    assert response.content == data[first : last + 1]
    assert response.headers["content-range"] == f"bytes {first}-{last}/{SIZE}"
    assert response.headers["content-length"] == str(last - first + 1)
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert response.headers["content-disposition"].startswith("attachment;")
    assert downloads(engine) == 1, "a partial download is a download"


@pytest.mark.parametrize("header", ["bytes=1000000-", "bytes=5000000-6000000", "bytes=-0"])
def test_a_range_outside_the_file_is_a_416(
    client: TestClient, engine: sa.Engine, stored: tuple[str, bytes], lead: Caller, header: str
) -> None:
    attachment_id, _ = stored
    response = client.get(f"{API}/attachments/{attachment_id}/content", headers=lead.h(range=header))
    assert response.status_code == 416, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["content-range"] == f"bytes */{SIZE}"
    assert downloads(engine) == 0


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-1", "bytes=5-2", "bytes=-", "bytes=x-1"])
def test_a_range_not_served_gets_the_whole_file(
    client: TestClient, stored: tuple[str, bytes], lead: Caller, header: str
) -> None:
    attachment_id, data = stored
    response = client.get(f"{API}/attachments/{attachment_id}/content", headers=lead.h(range=header))
    assert response.status_code == 200, response.text
    assert response.content == data
    assert response.headers["accept-ranges"] == "bytes"


def test_if_range_serves_the_range_only_while_the_file_is_the_same(
    client: TestClient, stored: tuple[str, bytes], lead: Caller
) -> None:
    attachment_id, data = stored
    url = f"{API}/attachments/{attachment_id}/content"
    etag = f'"{hashlib.sha256(data).hexdigest()}"'
    same = client.get(url, headers=lead.h(range="bytes=10-19", if_range=etag))
    assert (same.status_code, same.content) == (206, data[10:20])
    other = client.get(url, headers=lead.h(range="bytes=10-19", if_range='"' + "0" * 64 + '"'))
    assert (other.status_code, other.content) == (200, data)


@pytest.mark.parametrize("form", ["{etag}", "W/{etag}", '"other", {etag}', "*"])
def test_if_none_match_of_the_file_is_a_304_and_not_audited(
    client: TestClient, engine: sa.Engine, stored: tuple[str, bytes], lead: Caller, form: str
) -> None:
    attachment_id, data = stored
    etag = f'"{hashlib.sha256(data).hexdigest()}"'
    response = client.get(
        f"{API}/attachments/{attachment_id}/content", headers=lead.h(if_none_match=form.format(etag=etag))
    )
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag
    assert downloads(engine) == 0, "a 304 discloses nothing the caller does not hold"


def test_if_none_match_of_another_file_downloads_it(
    client: TestClient, engine: sa.Engine, stored: tuple[str, bytes], lead: Caller
) -> None:
    attachment_id, data = stored
    stale = '"' + hashlib.sha256(b"an older file").hexdigest() + '"'
    response = client.get(f"{API}/attachments/{attachment_id}/content", headers=lead.h(if_none_match=stale))
    assert (response.status_code, response.content) == (200, data)
    assert downloads(engine) == 1


def test_head_sends_the_headers_alone_and_is_not_audited(
    client: TestClient, engine: sa.Engine, stored: tuple[str, bytes], lead: Caller, outsider: Caller
) -> None:
    attachment_id, _ = stored
    url = f"{API}/attachments/{attachment_id}/content"
    head = client.head(url, headers=lead.headers)
    assert head.status_code == 200
    assert head.content == b""
    get = client.get(url, headers=lead.headers)
    for name in ("content-type", "content-length", "etag", "accept-ranges", "content-disposition"):
        assert head.headers[name] == get.headers[name], name
    partial = client.head(url, headers=lead.h(range="bytes=0-9"))
    assert partial.status_code == 206
    assert (partial.headers["content-range"], partial.headers["content-length"]) == (
        f"bytes 0-9/{SIZE}",
        "10",
    )
    assert downloads(engine) == 1  # the GET only
    assert client.head(url, headers=outsider.headers).status_code == 404


def test_a_message_attachment_is_served_the_same_way(
    client: TestClient, message: tuple[str, str], lead: Caller, partner: Caller
) -> None:
    request_id, message_id = message
    data = unique_bytes(5000)
    url = f"{API}/requests/{request_id}/messages/{message_id}/attachments"
    attachment_id = upload(client, lead, url, data).json()["id"]
    response = client.get(f"{API}/attachments/{attachment_id}/content", headers=partner.h(range="bytes=-10"))
    assert (response.status_code, response.content) == (206, data[-10:])


def test_the_document_declares_206_304_and_416(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"][f"{API}/attachments/{{attachment_id}}/content"][
        "get"
    ]
    responses = operation["responses"]
    assert {"200", "206", "304", "416"} <= set(responses)
    assert "Content-Range" in responses["206"]["headers"]
    assert "Content-Range" in responses["416"]["headers"]
    assert {"Range", "If-None-Match", "If-Range"} <= {p["name"] for p in operation["parameters"]}
