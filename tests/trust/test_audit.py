"""The audit trail: one entry per change in the change's own transaction,
hash-chained, correct under concurrent writers, visible by agency, verifiable
over HTTP and from the command line; refusals go to the security log."""

import itertools
import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import app.journal
from app.auth import service as auth
from app.auth.models import Scope
from app.db import transaction
from tests.conftest import Caller, join, make_caller, new_case, run_verify, walk

API = "/api/v1"


def entries(engine: sa.Engine, after: int = 0) -> list[tuple[str, str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT action, resource_type, resource_id FROM audit_entry WHERE seq > :s ORDER BY seq"),
            {"s": after},
        ).all()
    return [(a, t, str(uuid.UUID(str(r))) if r is not None else None) for a, t, r in rows]


def head_seq(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT coalesce(max(seq), 0) FROM audit_entry")).scalar_one()


class Recorder:
    """Runs a step and returns the audit entries it wrote."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def __call__(self, response: Any = None) -> list[tuple[str, str, str | None]]:
        new = entries(self.engine, self.mark)
        self.mark = head_seq(self.engine)
        return new

    def start(self) -> "Recorder":
        self.mark = head_seq(self.engine)
        return self


def test_every_change_writes_exactly_one_entry(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller, admin: Caller
) -> None:
    rec = Recorder(engine).start()
    ok = lambda r, status=200: r.status_code == status or pytest.fail(r.text)  # noqa: E731

    case = client.post(f"{API}/cases", json={"reference": "R-A", "title": "T"}, headers=lead.headers)
    ok(case, 201)
    cid = case.json()["id"]
    lead_id, partner_id = str(lead.agency_id), str(partner.agency_id)
    assert rec() == [("case.created", "case", cid), ("participant.created", "participant", lead_id)]
    ok(client.patch(f"{API}/cases/{cid}", json={"title": "T2"}, headers=lead.h(if_match='"1"')))
    assert rec() == [("case.updated", "case", cid)]

    parts = f"{API}/cases/{cid}/participants"
    ok(client.post(parts, json={"agency_id": partner_id, "role": "partner"}, headers=lead.headers), 201)
    assert rec() == [("participant.created", "participant", partner_id)]
    ok(client.patch(f"{parts}/{partner_id}", json={"role": "observer"}, headers=lead.h(if_match='"1"')))
    assert rec() == [("participant.updated", "participant", partner_id)]
    ok(client.patch(f"{parts}/{partner_id}", json={"role": "partner"}, headers=lead.h(if_match='"2"')))
    rec()

    loc = client.post(f"{API}/cases/{cid}/locations", json={"label": "L"}, headers=partner.headers)
    ok(loc, 201)
    lid = loc.json()["id"]
    assert rec() == [("location.created", "location", lid)]
    ok(client.patch(f"{API}/locations/{lid}", json={"city": "Kyiv"}, headers=partner.h(if_match='"1"')))
    assert rec() == [("location.updated", "location", lid)]

    item = client.post(
        f"{API}/cases/{cid}/seized-items", json={"category": "cash", "description": "d"}, headers=lead.headers
    )
    ok(item, 201)
    iid = item.json()["id"]
    seizure = client.get(f"{API}/seized-items/{iid}/custody", headers=lead.headers).json()["items"][0]["id"]
    # Two changes: the item, and the first link of its chain of custody.
    assert rec() == [
        ("seized_item.created", "seized_item", iid),
        ("custody_event.created", "custody_event", seizure),
    ]
    transfer = client.post(
        f"{API}/seized-items/{iid}/custody",
        json={"action": "transferred", "from_agency_id": lead_id, "to_agency_id": partner_id},
        headers=lead.headers,
    )
    ok(transfer, 201)
    # Two changes: the event, and the item whose custodian it moved.
    assert rec() == [
        ("custody_event.created", "custody_event", transfer.json()["id"]),
        ("seized_item.updated", "seized_item", iid),
    ]

    det = client.post(f"{API}/cases/{cid}/detainees", json={"label": "D"}, headers=lead.headers)
    ok(det, 201)
    did = det.json()["id"]
    assert rec() == [("detainee.created", "detainee", did)]
    ok(client.patch(f"{API}/detainees/{did}", json={"label": "D2"}, headers=lead.h(if_match='"1"')))
    assert rec() == [("detainee.updated", "detainee", did)]
    ok(client.delete(f"{API}/detainees/{did}", headers=lead.h(if_match='"2"')), 204)
    assert rec() == [("detainee.deleted", "detainee", did)]
    ok(client.delete(f"{API}/locations/{lid}", headers=lead.h(if_match='"2"')), 204)
    assert rec() == [("location.deleted", "location", lid)]
    ok(client.delete(f"{parts}/{partner_id}", headers=lead.h(if_match='"3"')), 204)
    assert rec() == [("participant.deleted", "participant", partner_id)]

    # Administration.
    agency = client.post(
        f"{API}/agencies",
        json={"code": "ADMIN-AGENCY-KG", "name": "N", "kind": "ministry", "parent_id": str(admin.agency_id)},
        headers=admin.headers,
    )
    ok(agency, 201)
    aid = agency.json()["id"]
    assert rec() == [("agency.created", "agency", aid)]
    ok(client.patch(f"{API}/agencies/{aid}", json={"name": "N2"}, headers=admin.h(if_match='"1"')))
    assert rec() == [("agency.updated", "agency", aid)]
    with transaction(engine, write=True) as session:
        api_client, _ = auth.create_client(
            session, agency_code="ADMIN-AGENCY-KG", name="tool", scopes=[Scope.read]
        )
    assert rec() == [("api_client.created", "api_client", str(api_client.id))]
    for _ in range(2):  # revoking twice is one change
        with transaction(engine, write=True) as session:
            auth.revoke_client(session, str(api_client.id))
    assert rec() == [("api_client.revoked", "api_client", str(api_client.id))]

    # A case without children can be deleted: its lead's participation ends with it.
    empty = new_case(client, lead)
    rec()
    ok(client.delete(f"{API}/cases/{empty['id']}", headers=lead.h(if_match='"1"')), 204)
    assert rec() == [
        ("participant.deleted", "participant", str(lead.agency_id)),
        ("case.deleted", "case", empty["id"]),
    ]


def test_a_refused_or_failed_change_writes_nothing(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    case = new_case(client, lead)
    cid = case["id"]
    join(client, lead, cid, partner, role="observer")
    client.post(f"{API}/cases/{cid}/locations", json={"label": "L"}, headers=lead.headers)
    rec = Recorder(engine).start()
    attempts = [
        client.patch(f"{API}/cases/{cid}", json={"title": "x"}, headers=lead.headers),  # 428
        client.patch(f"{API}/cases/{cid}", json={"title": "x"}, headers=lead.h(if_match='"7"')),  # 412
        client.patch(f"{API}/cases/{cid}", json={"title": ""}, headers=lead.h(if_match='"1"')),  # 422
        client.patch(f"{API}/cases/{cid}", json={"title": "x"}, headers=partner.h(if_match='"1"')),  # 403
        client.delete(f"{API}/cases/{cid}", headers=lead.h(if_match='"1"')),  # 409: holds a location
        client.post(
            f"{API}/cases", json={"reference": case["reference"], "title": "x"}, headers=lead.headers
        ),
        client.post(
            f"{API}/cases/{cid}/locations",
            json={"label": "L", "searched_by_agency_id": str(uuid.uuid4())},
            headers=lead.headers,
        ),
    ]
    assert [r.status_code for r in attempts] == [428, 412, 422, 403, 409, 409, 422]
    assert rec() == []


@pytest.fixture
def broken_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The feed write fails inside the commit hook, after the audit entries were added."""

    def fail(*_: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(app.journal, "_append_events", fail)


def test_change_and_entry_share_one_transaction(
    client: TestClient, engine: sa.Engine, lead: Caller, broken_journal: None
) -> None:
    rec = Recorder(engine).start()
    response = client.post(f"{API}/cases", json={"reference": "R-LOST", "title": "T"}, headers=lead.headers)
    # Never a false success: the commit failed, so the client hears so.
    assert response.status_code == 500
    assert rec() == []
    with engine.connect() as conn:
        assert conn.execute(sa.text('SELECT count(*) FROM "case"')).scalar_one() == 0


def _chain(engine: sa.Engine) -> list[sa.Row[Any]]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT seq, prev_hash, hash FROM audit_entry ORDER BY seq")).all())


def test_the_chain_links_and_verifies(
    client: TestClient, engine: sa.Engine, lead: Caller, admin: Caller
) -> None:
    for _ in range(3):
        new_case(client, lead)
    rows = _chain(engine)
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    assert rows[0].prev_hash == "0" * 64
    for before, after in itertools.pairwise(rows):
        assert after.prev_hash == before.hash
    result = client.get(f"{API}/audit/verify", headers=admin.headers).json()
    assert result["ok"] is True
    assert result["entries"] == len(rows)
    assert result["head"] == rows[-1].hash
    # The public entries carry the same chain.
    listed = walk(client, f"{API}/audit", lead.headers)
    assert [e["hash"] for e in listed][-1] == rows[-1].hash


def test_concurrent_writers_keep_the_chain_linear(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller, admin: Caller
) -> None:
    threads, per_thread = 8, 4
    barrier = threading.Barrier(threads)
    statuses: list[int] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        caller = lead if n % 2 else partner
        barrier.wait()
        for i in range(per_thread):
            body = {"reference": f"C-{n}-{i}", "title": "T"}
            status = client.post(f"{API}/cases", json=body, headers=caller.headers).status_code
            with lock:
                statuses.append(status)

    before = head_seq(engine)
    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert statuses == [201] * threads * per_thread
    rows = _chain(engine)
    seqs = [r.seq for r in rows]
    assert seqs == list(range(1, len(rows) + 1)), "duplicate or missing seq"
    # Each case: its own entry and its lead's participant entry.
    assert len(rows) - before == 2 * threads * per_thread
    verdict = client.get(f"{API}/audit/verify", headers=admin.headers).json()
    assert verdict == {"ok": True, "entries": len(rows), "head": rows[-1].hash, "first_bad_seq": None}
    with engine.connect() as conn:
        events = conn.execute(sa.text("SELECT seq FROM event ORDER BY seq")).scalars().all()
    assert events == list(range(1, len(events) + 1))


def test_audit_visibility(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller, outsider: Caller, admin: Caller
) -> None:
    led = new_case(client, lead)
    join(client, lead, led["id"], partner)
    # The partner changes the lead's case: the lead sees it, as what was done to a case it leads.
    loc = client.post(f"{API}/cases/{led['id']}/locations", json={"label": "L"}, headers=partner.headers)
    # The partner leads its own case: the lead sees nothing of it.
    own = new_case(client, partner)
    plain_outsider = make_caller(engine, outsider.agency_code, Scope.read, Scope.write)
    new_case(client, plain_outsider)

    def seen(caller: Caller, **params: str) -> set[tuple[str, str | None]]:
        url = f"{API}/audit"
        if params:
            url += "?" + "&".join(f"{k}={v}" for k, v in params.items())
        return {(e["action"], e["resource_id"]) for e in walk(client, url, caller.headers)}

    assert len(walk(client, f"{API}/audit", admin.headers)) == head_seq(engine)
    lead_sees = seen(lead)
    assert ("location.created", loc.json()["id"]) in lead_sees
    assert ("case.created", own["id"]) not in lead_sees
    partner_sees = seen(partner)
    assert ("location.created", loc.json()["id"]) in partner_sees  # what its agency did
    assert (
        "case.created",
        led["id"],
    ) not in partner_sees  # done by the lead, in a case the partner does not lead
    assert ("case.created", own["id"]) in partner_sees
    outsider_sees = seen(plain_outsider)
    assert all(rid not in {led["id"], own["id"], loc.json()["id"]} for _, rid in outsider_sees)
    # Filters.
    assert seen(lead, case_id=led["id"]) == {
        ("case.created", led["id"]),
        ("participant.created", str(lead.agency_id)),
        ("participant.created", str(partner.agency_id)),
        ("location.created", loc.json()["id"]),
    }
    assert seen(admin, action="location.created") == {("location.created", loc.json()["id"])}
    assert seen(outsider, case_id=led["id"]) != set()  # admin scope: everything
    assert seen(plain_outsider, case_id=led["id"]) == set()
    # An audit reader needs a key at least.
    assert client.get(f"{API}/audit").status_code == 401


# --- `caseapi audit verify` ------------------------------------------------


def _tamper(engine: sa.Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


@pytest.mark.parametrize(
    ("statements", "first_bad"),
    [
        (["UPDATE audit_entry SET purpose = 'nothing to see' WHERE seq = 3"], 3),
        (["UPDATE audit_entry SET action = 'case.updated' WHERE seq = 5"], 5),
        (["DELETE FROM audit_entry WHERE seq = 4"], 5),
        # The tail cut: what is left is a valid chain, but the first run's checkpoint
        # (the head: the key's entry and 3 cases of 2 entries) is gone.
        (["DELETE FROM audit_entry WHERE seq = (SELECT max(seq) FROM audit_entry)"], 7),
        # Reordered: entries 3 and 4 swap places.
        (
            [
                "UPDATE audit_entry SET seq = -3 WHERE seq = 3",
                "UPDATE audit_entry SET seq = 3 WHERE seq = 4",
                "UPDATE audit_entry SET seq = 4 WHERE seq = -3",
            ],
            3,
        ),
    ],
)
def test_cli_verify_names_the_first_bad_entry(
    client: TestClient,
    engine: sa.Engine,
    lead: Caller,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
    statements: list[str],
    first_bad: int,
) -> None:
    for _ in range(3):
        new_case(client, lead)
    code, out = run_verify(capsys)
    assert code == 0, out
    head = _chain(engine)[-1].hash
    assert f"head {head}" in out
    _tamper(engine, *statements)
    code, out = run_verify(capsys)
    assert code == 1
    assert f"entry {first_bad}" in out


def test_cli_verify_exit_status_from_a_real_process(
    client: TestClient, engine: sa.Engine, lead: Caller, database_url: str
) -> None:
    new_case(client, lead)
    env = {**os.environ, "CASEAPI_DATABASE_URL": database_url}
    command = [sys.executable, "-c", "from app.cli import main; main()", "audit", "verify"]
    good = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert good.returncode == 0, good.stderr
    assert "audit chain intact: 3 entries" in good.stdout
    _tamper(engine, "UPDATE audit_entry SET purpose = 'x' WHERE seq = 1")
    bad = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "caseapi: audit chain broken at entry 1 (after 0 good entries)"
    ]


# --- refusals in the security log -----------------------------------------


def test_denied_attempts_leave_one_structured_line(
    client: TestClient, engine: sa.Engine, lead: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    reader = make_caller(engine, lead.agency_code, Scope.read)
    agency = {"code": "XX", "name": "N", "kind": "police"}
    attempts = [
        ("GET", f"{API}/cases", {}, None, 401, None),
        ("GET", f"{API}/cases", {"Authorization": "Bearer cak_nope"}, None, 401, None),
        ("POST", f"{API}/cases", reader.headers, {"reference": "R", "title": "T"}, 403, reader),
        ("POST", f"{API}/agencies", lead.headers, agency, 403, lead),
    ]
    for method, path, headers, body, status, caller in attempts:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="caseapi.security"):
            response = client.request(method, path, headers=headers, json=body)
        assert response.status_code == status
        records = [r for r in caplog.records if r.name == "caseapi.security"]
        assert len(records) == 1, [r.getMessage() for r in records]
        # Fields as fields (app.observability.logs renders them as JSON or text).
        line = records[0].__dict__
        assert records[0].getMessage() == "access_denied"
        assert line["status"] == status
        assert (line["method"], line["path"]) == (method, path)
        assert line["client_id"] == (str(caller.client_id) if caller else None)
        assert line["agency_id"] == (str(caller.agency_id) if caller else None)
        assert "cak_" not in json.dumps({k: str(v) for k, v in line.items()}), (
            "a key must never reach the log"
        )
    # A success or a 404 is not a refusal.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="caseapi.security"):
        client.get(f"{API}/cases", headers=lead.headers)
        client.get(f"{API}/cases/{uuid.uuid4()}", headers=lead.headers)
    assert [r for r in caplog.records if r.name == "caseapi.security"] == []
