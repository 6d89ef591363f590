"""Attachments in case bundles: their metadata travels; an import re-links only files already here
that the importer can already download."""

import hashlib
import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.bundles.models import MAX_ROWS
from app.core.records import AuditEntry
from tests.attachments.test_attachments import attachment_rows, storage_of, unique_bytes, upload
from tests.bundles.test_bundles import counts, export, import_
from tests.conftest import Caller

API = "/api/v1"


def attach(client: TestClient, caller: Caller, case_id: str, data: bytes, **kwargs: Any) -> dict[str, Any]:
    response = upload(client, caller, f"{API}/cases/{case_id}/attachments", data, **kwargs)
    assert response.status_code == 201, response.text
    return response.json()


def listed(client: TestClient, caller: Caller, case_id: str) -> list[dict[str, Any]]:
    response = client.get(f"{API}/cases/{case_id}/attachments", headers=caller.headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def imported(client: TestClient, caller: Caller, bundle: dict[str, Any], reference: str) -> str:
    bundle["case"]["reference"] = reference
    response = import_(client, caller, bundle)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def import_detail(engine: sa.Engine, case_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(AuditEntry.detail).where(
                AuditEntry.case_id == uuid.UUID(case_id), AuditEntry.action == "case.imported"
            )
        ).scalar_one()


def entry(data: bytes, **fields: Any) -> dict[str, Any]:
    return {
        "filename": "report.pdf",
        "content_type": "application/pdf",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        **fields,
    }


def test_export_lists_the_case_attachments_metadata_in_list_order(
    client: TestClient, case_id: str, lead: Caller, partner: Caller
) -> None:
    first = attach(client, lead, case_id, unique_bytes(), filename="extraction.pdf")
    second = attach(
        client, partner, case_id, unique_bytes(10), filename="note.txt", content_type="text/plain"
    )
    # A message's attachment is the request's, not the case's.
    request = client.post(
        f"{API}/requests",
        json={"to_agency_id": str(partner.agency_id), "subject": "Phones", "body": "See the case."},
        headers=lead.headers,
    ).json()
    message = client.post(
        f"{API}/requests/{request['id']}/messages", json={"body": "Report"}, headers=lead.headers
    ).json()
    upload(client, lead, f"{API}/requests/{request['id']}/messages/{message['id']}/attachments", b"x")

    bundle = export(client, lead, case_id)
    fields = ("filename", "content_type", "size", "sha256", "created_at")
    assert bundle["attachments"] == [
        {name: a[name] for name in fields} for a in listed(client, lead, case_id)
    ]
    assert [a["sha256"] for a in bundle["attachments"]] == [first["sha256"], second["sha256"]]


def test_a_round_trip_on_the_same_instance_relinks_the_files(
    client: TestClient, application: FastAPI, engine: sa.Engine, case_id: str, lead: Caller
) -> None:
    data = unique_bytes()
    original = attach(client, lead, case_id, data, filename="extraction.pdf")
    attach(
        client, lead, case_id, unique_bytes(0), filename="empty.bin", content_type="application/octet-stream"
    )
    bundle = export(client, lead, case_id)

    copy_id = imported(client, lead, bundle, "COPY-WITH-FILES")
    copies = listed(client, lead, copy_id)
    assert [(a["filename"], a["content_type"], a["size"], a["sha256"]) for a in copies] == [
        (a["filename"], a["content_type"], a["size"], a["sha256"]) for a in bundle["attachments"]
    ]
    assert {a["uploaded_by_agency_id"] for a in copies} == {str(lead.agency_id)}
    detail = import_detail(engine, copy_id)
    assert (detail["rows"]["attachments"], detail["attachments_missing"]) == (2, 0)
    # The copy exports the same section, and that imports again.
    again = export(client, lead, copy_id)
    assert [{k: v for k, v in a.items() if k != "created_at"} for a in again["attachments"]] == [
        {k: v for k, v in a.items() if k != "created_at"} for a in bundle["attachments"]
    ]
    imported(client, lead, again, "COPY-OF-COPY")

    # One file, named by every copy; deleting the original's row keeps it for the others.
    deleted = client.delete(f"{API}/attachments/{original['id']}", headers=lead.h(if_match='"1"'))
    assert deleted.status_code == 204
    assert storage_of(application).exists(original["sha256"])
    content = client.get(f"{API}/attachments/{copies[0]['id']}/content", headers=lead.headers)
    assert (content.status_code, content.content) == (200, data)


def test_an_import_without_the_file_here_creates_no_attachment(
    client: TestClient, application: FastAPI, engine: sa.Engine, case_id: str, lead: Caller
) -> None:
    kept = attach(client, lead, case_id, unique_bytes(), filename="kept.pdf")
    gone = attach(client, lead, case_id, unique_bytes(), filename="gone.pdf")
    bundle = export(client, lead, case_id)
    bundle["attachments"].append(entry(unique_bytes(), filename="never-uploaded.pdf"))
    storage_of(application).delete(gone["sha256"])  # as on an instance that never held it
    rows = attachment_rows(engine)

    copy_id = imported(client, lead, bundle, "COPY-MISSING")
    assert [a["sha256"] for a in listed(client, lead, copy_id)] == [kept["sha256"]]
    assert attachment_rows(engine) == rows + 1
    detail = import_detail(engine, copy_id)
    assert (detail["rows"]["attachments"], detail["attachments_missing"]) == (1, 2)


def test_knowing_a_sha256_does_not_get_another_agency_s_file(
    client: TestClient, engine: sa.Engine, case_id: str, lead: Caller, outsider: Caller
) -> None:
    """An agency that learnt a file's digest (from a report, a request, a custody record)
    names it in a bundle of its own to get a case that links the file, then downloads it."""
    secret = unique_bytes()
    attach(client, lead, case_id, secret, filename="informant.pdf")
    rows = attachment_rows(engine)
    answers = []
    for n, guess in enumerate((secret, unique_bytes())):  # the real digest, and one of nothing here
        bundle = {"bundle_version": 1, "case": {"reference": f"HOSTILE-{n}", "title": "Mine"}}
        # A wrong size too: were it checked against the file, the 422 would tell the file is here.
        bundle["attachments"] = [entry(guess), entry(guess, size=1)]
        response = import_(client, outsider, bundle)
        assert response.status_code == 201, response.text
        copy_id = response.json()["id"]
        assert listed(client, outsider, copy_id) == []
        detail = import_detail(engine, copy_id)
        answers.append(
            (sorted(response.json()), detail["rows"]["attachments"], detail["attachments_missing"])
        )
    assert answers[0] == answers[1] == (answers[0][0], 0, 2)
    assert attachment_rows(engine) == rows


def test_a_partner_that_reads_the_case_may_relink_its_files(
    client: TestClient, engine: sa.Engine, case_id: str, lead: Caller, partner: Caller
) -> None:
    data = unique_bytes()
    attach(client, lead, case_id, data)
    copy_id = imported(
        client,
        partner,
        {"bundle_version": 1, "case": {"title": "Partner's copy"}, "attachments": [entry(data)]},
        "PARTNER-COPY",
    )
    [copy] = listed(client, partner, copy_id)
    assert client.get(f"{API}/attachments/{copy['id']}/content", headers=partner.headers).content == data


def test_a_size_that_is_not_the_file_s_is_422(
    client: TestClient, engine: sa.Engine, case_id: str, lead: Caller
) -> None:
    data = unique_bytes()
    attach(client, lead, case_id, data)
    bundle = export(client, lead, case_id)
    bundle["attachments"][0]["size"] += 1
    bundle["case"]["reference"] = "WRONG-SIZE"
    before = counts(engine)
    response = import_(client, lead, bundle)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "attachments", 0, "size"]
    assert counts(engine) == before


HOSTILE = [
    ("sha256", "A" * 64),
    ("sha256", "0" * 63),
    ("sha256", "../../etc/passwd"),
    ("filename", "report\r\nX-Injected: 1.pdf"),
    ("filename", "nul\x00.pdf"),
    ("filename", ""),
    ("filename", "a" * 256),
    ("content_type", "text/html\r\nSet-Cookie: a=b"),
    ("content_type", "pdf"),
    ("size", -1),
    ("uploaded_by_agency_id", str(uuid.uuid4())),
    ("case_id", str(uuid.uuid4())),
]


@pytest.mark.parametrize(("field", "value"), HOSTILE, ids=[f"{f}={v!r}"[:40] for f, v in HOSTILE])
def test_a_hostile_entry_is_422_and_writes_nothing(
    client: TestClient, engine: sa.Engine, case_id: str, lead: Caller, field: str, value: Any
) -> None:
    attach(client, lead, case_id, unique_bytes())
    bundle = export(client, lead, case_id)
    bundle["case"]["reference"] = "HOSTILE-ENTRY"
    bundle["attachments"].insert(0, entry(unique_bytes()))
    bundle["attachments"][1][field] = value
    before = counts(engine)
    response = import_(client, lead, bundle)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["loc"] for e in response.json()["errors"]] == [["body", "attachments", 1, field]]
    assert counts(engine) == before


def test_the_section_is_bounded(client: TestClient, engine: sa.Engine, lead: Caller) -> None:
    data = b"x"
    raw = json.dumps(
        {"bundle_version": 1, "case": {"reference": "TOO-MANY", "title": "t"}, "attachments": [entry(data)]}
    )
    # The same entry MAX_ROWS + 1 times, spliced in rather than built as that many dicts.
    one = json.dumps(entry(data))
    raw = raw.replace(f"[{one}]", "[" + ",".join([one] * (MAX_ROWS + 1)) + "]")
    before = counts(engine)
    response = client.post(
        f"{API}/bundles", content=raw.encode(), headers={**lead.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text[:500]
    assert [e["loc"] for e in response.json()["errors"]] == [["body", "attachments"]]
    assert counts(engine) == before
