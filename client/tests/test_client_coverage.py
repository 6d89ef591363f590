"""Every operation of the API has a method in both clients, the synchronous
client is what client/unasync.py makes of the asynchronous one, and the
operations added last work against a live server."""

import asyncio
import hashlib
import io
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from caseapi_client import AsyncClient, Case, Client, NotFound, ValidationError
from fastapi import FastAPI

from app.auth.models import Scope
from tests.conftest import Caller, make_caller

CLIENT_DIR = Path(__file__).parents[1]

# operationId -> the client's method, where it is not `<resource>.<verb>` as is.
METHODS = {
    "attachments.create": "attachments.upload",
    "attachments.content": "attachments.download",
    "message_attachments.create": "message_attachments.upload",
    "bundles.import": "bundles.import_",
}


def operation_ids(application: FastAPI) -> list[str]:
    return sorted(
        operation["operationId"]
        for item in application.openapi()["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict) and "operationId" in operation
    )


@pytest.mark.parametrize("kind", [Client, AsyncClient])
def test_every_operation_has_a_method(application: FastAPI, kind: type[Client] | type[AsyncClient]) -> None:
    client = kind("http://caseapi.invalid", "no key")
    missing = []
    for operation in operation_ids(application):
        resource, verb = METHODS.get(operation, operation).split(".")
        if not callable(getattr(getattr(client, resource, None), verb, None)):
            missing.append(operation)
    assert missing == []


def test_the_sync_client_is_made_from_the_async_one() -> None:
    check = subprocess.run(
        [sys.executable, str(CLIENT_DIR / "unasync.py"), "--check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def kyiv_case(client: Client) -> Case:
    return client.cases.create(
        reference=f"KZ-UA-2025-KYIV-{uuid.uuid4().hex[:8]}",
        title="Transnational fraudulent call centre in Kyiv",
        handling_code="TLP:GREEN",
    )


def test_identifiers_and_hits(kz_client: Client, live_server: str, engine: sa.Engine) -> None:
    case = kyiv_case(kz_client)
    number = kz_client.identifiers.create(case, kind="phone", value="+7 701 000 00 01", note="victim line")
    assert number.normalized == "+77010000001"
    assert [i.id for i in kz_client.identifiers.list(case, kind="phone")] == [number.id]
    assert kz_client.identifiers.get(number).value == "+7 701 000 00 01"
    with pytest.raises(ValidationError):
        kz_client.identifiers.create(case, kind="iban", value="KZ00 0000")

    found = kz_client.hits.search(
        [{"kind": "phone", "value": "87010000001"}, {"kind": "phone", "value": "+77010000099"}]
    )
    assert [(item.normalized, item.hit) for item in found.items] == [
        ("+77010000001", True),
        ("+77010000099", False),
    ]
    assert found.items[0].matches[0].access == "full" and found.peers == []

    # Another agency sees the GREEN case's summary match only: the case and its lead.
    kg = make_caller(engine, "KG-MVD-CYBER", Scope.read)
    with Client(live_server, kg.key) as kg_client:
        [item] = kg_client.hits.search([{"kind": "phone", "value": "+77010000001"}]).items
    assert item.hit and item.matches[0].access == "summary" and item.matches[0].identifier is None

    kz_client.identifiers.delete(number)
    with pytest.raises(NotFound):
        kz_client.identifiers.get(number.id)


def test_attachments_upload_download_stream(kz_client: Client, tmp_path: Path) -> None:
    case = kyiv_case(kz_client)
    data = b"seizure protocol, 23 September 2025\n" * 5000
    from_bytes = kz_client.attachments.upload(case, data, filename="protocol.txt", content_type="text/plain")
    assert from_bytes.sha256 == hashlib.sha256(data).hexdigest() and from_bytes.size == len(data)

    path = tmp_path / "photo.jpg"
    path.write_bytes(bytes(range(256)) * 1000)
    with path.open("rb") as file:
        from_file = kz_client.attachments.upload(case, file, filename="photo.jpg", content_type="image/jpeg")
    assert from_file.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()

    assert {a.id for a in kz_client.attachments.list(case)} == {from_bytes.id, from_file.id}
    assert kz_client.attachments.get(from_file).filename == "photo.jpg"
    assert kz_client.attachments.download(from_bytes) == data
    with kz_client.attachments.stream(from_file) as chunks:
        assert b"".join(chunks) == path.read_bytes()

    kz_client.attachments.delete(kz_client.attachments.get(from_bytes))
    with pytest.raises(NotFound):
        kz_client.attachments.download(from_bytes)


def test_a_pipe_is_never_sent_twice(kz_client: Client) -> None:
    """A stream that cannot be rewound is read once: a retry would send what
    is left of it as if it were the file."""
    from caseapi_client._sync.resources import _body

    class Pipe(io.BytesIO):
        def seekable(self) -> bool:
            return False

    body = _body(Pipe(b"once"))
    assert b"".join(body()) == b"once"
    with pytest.raises(ValueError, match="cannot be rewound"):
        b"".join(body())


def test_message_attachments_stix_bundles_health(kz_client: Client, ua_client: Client) -> None:
    case = kyiv_case(kz_client)
    ua_le = next(a for a in kz_client.agencies.list() if a.code == "UA-LE")
    request = kz_client.requests.create(
        to_agency_id=ua_le, case_id=case, subject="SIM cards", body="Subscribers?"
    )
    message = kz_client.messages.create(request, body="The list of SIM cards is attached.")
    attached = kz_client.message_attachments.upload(
        message, b"ICCID\n", filename="sims.csv", content_type="text/csv"
    )
    assert [a.id for a in ua_client.message_attachments.list(message)] == [attached.id]
    assert ua_client.attachments.download(attached) == b"ICCID\n"

    stix = kz_client.cases.stix(case)
    assert stix["type"] == "bundle" and any(o["type"] == "report" for o in stix["objects"])

    # UA-LE keeps its own copy of the case KZ-MVD exported: a new case it leads.
    copy = ua_client.bundles.import_(kz_client.cases.bundle(case))
    assert isinstance(copy, Case) and copy.id != case.id and copy.reference == case.reference
    assert copy.lead_agency_id == ua_le.id

    assert kz_client.health.live().status == "ok"
    assert kz_client.health.ready().status == "ready"


def test_subscriptions_and_deliveries(live_server: str, engine: sa.Engine) -> None:
    admin = make_caller(engine, "KZ-MVD", Scope.admin, Scope.read)
    with Client(live_server, admin.key) as client:
        created = client.subscriptions.create(url="https://93.184.215.14/caseapi", event_types=["case.*"])
        assert created.secret and created.secret.startswith("whsec_")
        [listed] = client.subscriptions.list()
        assert listed.id == created.id and listed.secret is None
        assert list(client.deliveries.list(listed)) == []
        client.subscriptions.delete(client.subscriptions.get(created))
        assert list(client.subscriptions.list()) == []


def test_the_async_client_uploads_a_file_and_streams_it_back(
    live_server: str, kz: Caller, tmp_path: Path
) -> None:
    path = tmp_path / "dump.bin"
    path.write_bytes(uuid.uuid4().bytes * 10000)

    async def scenario() -> bytes:
        async with AsyncClient(live_server, kz.key) as client:
            case = await client.cases.create(reference=f"KZ-{uuid.uuid4().hex[:8]}", title="Phone database")
            with path.open("rb") as file:
                uploaded = await client.attachments.upload(case, file, filename="dump.bin")
            assert [i async for i in client.identifiers.list(case)] == []
            async with client.attachments.stream(uploaded, start=16) as chunks:
                return b"".join([chunk async for chunk in chunks])

    # From byte 16 on: a download that broke off resumes where it stopped.
    assert asyncio.run(scenario()) == path.read_bytes()[16:]
