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

import app.core.journal
from app import cli
from app.agencies import service as agencies
from app.agencies.models import AgencyCreate
from app.auth import service as auth
from app.auth.models import Scope
from app.core.records import AuditEntry
from app.core.uow import Tx
from tests.conftest import Caller, join, make_caller, new_case, run_unit, run_verify, walk

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
    api_client, _ = run_unit(
        engine,
        lambda tx: auth.create_client(tx, agency_code="ADMIN-AGENCY-KG", name="tool", scopes=[Scope.read]),
    )
    assert rec() == [("api_client.created", "api_client", str(api_client.id))]
    for _ in range(2):  # revoking twice is one change
        run_unit(engine, lambda tx: auth.revoke_client(tx, str(api_client.id)))
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
    """The feed's rows fail in the journal write before COMMIT, after the audit entries' were made."""

    def fail(*_: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(app.core.journal, "event_rows", fail)


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
    assert verdict == {
        "ok": True,
        "entries": len(rows),
        "head": rows[-1].hash,
        "first_bad_seq": None,
        "reason": None,
    }
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
    assert seen(lead, action="location.created") == {("location.created", loc.json()["id"])}
    # An admin key of an agency in neither case sees neither (test_admin_audit_view: what it sees).
    assert seen(outsider, case_id=led["id"]) == set()
    assert seen(admin, action="location.created") == set()
    assert seen(plain_outsider, case_id=led["id"]) == set()
    # An audit reader needs a key at least.
    assert client.get(f"{API}/audit").status_code == 401


SUSPECT = {"full_name": "Ivan Petrenko", "date_of_birth": "1990-02-03", "id_document": "UA-PASS-123"}
PURPOSE = "Identify Ivan Petrenko for warrant 17"


@pytest.fixture
def sub(engine: sa.Engine, admin: Caller) -> Caller:
    """An agency under the admin's agency, made on the host (audited as the CLI's change)."""
    fields = {"code": "ADMIN-SUB", "name": "Sub", "kind": "police", "parent_id": admin.agency_id}
    run_unit(engine, lambda tx: agencies.create_agency(tx, None, AgencyCreate.model_validate(fields)))
    return make_caller(engine, "ADMIN-SUB", Scope.read, Scope.write, Scope.personal_data)


def red_case_with_a_disclosure(client: TestClient, lead: Caller, member: Caller) -> tuple[str, str]:
    """A TLP:RED case of `lead` with `member` as partner, which adds a detainee and reads
    its personal data with a purpose naming the suspect: the case's id and the detainee's."""
    case = new_case(client, lead, handling_code="TLP:RED")
    join(client, lead, case["id"], member)
    url = f"{API}/cases/{case['id']}/detainees"
    made = client.post(url, json={"label": "S-1", **SUSPECT}, headers=member.headers)
    assert made.status_code == 201, made.text
    assert client.get(url, headers=member.h(x_purpose=PURPOSE)).status_code == 200
    return case["id"], made.json()["id"]


def test_an_admin_reads_no_entry_of_a_case_its_agency_may_not_see(
    client: TestClient, engine: sa.Engine, lead: Caller, admin: Caller, sub: Caller
) -> None:
    """The attack: another agency's admin key (here, the parent of a partner)
    reading the entries of a TLP:RED case it may not see — actions, detainee
    ids, and a purpose that names the suspect."""
    case_id, detainee_id = red_case_with_a_disclosure(client, lead, sub)
    boss = make_caller(engine, admin.agency_code, *Scope)  # admin, personal_data: every scope
    for caller in (admin, boss):
        assert client.get(f"{API}/cases/{case_id}", headers=caller.headers).status_code == 404
        for query in (
            "",
            f"?case_id={case_id}",
            "?action=personal_data.disclosed",
            "?action=detainee.created",
        ):
            listed = walk(client, f"{API}/audit{query}", caller.headers, limit=2)
            assert all(e["case_id"] != case_id for e in listed), query
            text = json.dumps(listed)
            assert detainee_id not in text and "Petrenko" not in text, query
    # The lead sees all of it: what was done to a case it leads (the purpose, as it holds personal_data).
    disclosed = walk(client, f"{API}/audit?action=personal_data.disclosed", lead.headers)
    assert [(e["case_id"], e["purpose"]) for e in disclosed] == [(case_id, PURPOSE)]


def test_an_admin_reads_what_it_manages(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller, admin: Caller, sub: Caller
) -> None:
    """Its own agency's entries, its sub-agencies', the entries about the agencies and clients
    under it, and the cases its agency sees; `purpose` only to a personal_data key."""
    hidden_id, _ = red_case_with_a_disclosure(client, lead, sub)
    shared = new_case(client, sub)  # led by the sub-agency, the admin's agency observes it
    join(client, sub, shared["id"], admin, role="observer")
    url = f"{API}/cases/{shared['id']}/detainees"
    made = client.post(url, json={"label": "S-2", **SUSPECT}, headers=sub.headers)
    assert client.get(url, headers=sub.h(x_purpose=PURPOSE)).status_code == 200
    request = {"to_agency_id": str(lead.agency_id), "subject": "S", "body": "B"}
    asked = client.post(f"{API}/requests", json=request, headers=sub.headers)
    assert asked.status_code == 201, asked.text
    made_here = client.post(
        f"{API}/agencies",
        json={"code": "ADMIN-AGENCY-2", "name": "N", "kind": "police"},
        headers=admin.headers,
    )
    assert made_here.status_code == 201, made_here.text
    new_case(client, partner)  # another agency's own work

    listed = walk(client, f"{API}/audit", admin.headers)
    seen = {(e["action"], e["resource_id"]) for e in listed}
    sub_id = str(sub.agency_id)
    assert ("agency.created", sub_id) in seen  # about an agency under it, done on the host
    assert ("api_client.created", str(sub.client_id)) in seen  # a client of that agency
    assert ("api_client.created", str(admin.client_id)) in seen
    assert ("agency.created", made_here.json()["id"]) in seen  # what its agency did
    assert ("case.created", shared["id"]) in seen  # the sub-agency's, in a case its agency sees
    assert ("detainee.created", made.json()["id"]) in seen
    assert ("request.created", asked.json()["id"]) in seen  # the sub-agency's, in no case
    assert ("api_client.created", str(lead.client_id)) not in seen
    assert ("api_client.created", str(partner.client_id)) not in seen
    assert {e["agency_id"] for e in listed} <= {str(admin.agency_id), sub_id, None}
    assert all(e["case_id"] in (None, shared["id"]) for e in listed)
    assert hidden_id not in json.dumps(listed)
    # The purpose is personal data: null to a key without personal_data, shown with it.
    [disclosure] = [e for e in listed if e["action"] == "personal_data.disclosed"]
    assert disclosure["purpose"] is None
    boss = make_caller(engine, admin.agency_code, Scope.read, Scope.admin, Scope.personal_data)
    shown = walk(client, f"{API}/audit?action=personal_data.disclosed", boss.headers)
    assert [e["purpose"] for e in shown] == [PURPOSE]
    # A key without admin reads only what its agency did and the cases it leads.
    reader = make_caller(engine, admin.agency_code, Scope.read)
    own = {(e["action"], e["resource_id"]) for e in walk(client, f"{API}/audit", reader.headers)}
    assert ("agency.created", made_here.json()["id"]) in own
    assert ("case.created", shared["id"]) not in own


def test_a_disclosure_of_many_detainees_is_one_entry_naming_them(
    client: TestClient, engine: sa.Engine, lead: Caller, admin: Caller
) -> None:
    """One entry per response, not one per detainee: an export of a large case
    would otherwise hold the journal lock for as many rows."""
    case = new_case(client, lead)
    url = f"{API}/cases/{case['id']}/detainees"
    made = []
    for n in range(25):
        response = client.post(url, json={"label": f"S-{n}", **SUSPECT}, headers=lead.headers)
        assert response.status_code == 201, response.text
        made.append(response.json()["id"])
    for path in (f"{API}/cases/{case['id']}/bundle", f"{url}?limit=200"):
        mark = head_seq(engine)
        response = client.get(path, headers=lead.h(x_purpose=PURPOSE))
        assert response.status_code == 200, response.text
        with engine.connect() as conn:
            written = conn.execute(
                sa.select(AuditEntry).where(AuditEntry.seq > mark)  # type: ignore[arg-type]
            ).all()
        assert len(written) == 1, path
        [entry] = written
        assert (entry.action, entry.resource_type, entry.resource_id) == (
            "personal_data.disclosed",
            "detainee",
            None,
        )
        assert (str(entry.case_id), entry.purpose, entry.client_id) == (case["id"], PURPOSE, lead.client_id)
        assert sorted(entry.detail["detainee_ids"]) == sorted(made)
    verdict = client.get(f"{API}/audit/verify", headers=admin.headers).json()
    assert (verdict["ok"], verdict["entries"]) == (True, head_seq(engine))
    # A response of one names it as its resource too.
    mark = head_seq(engine)
    assert client.get(f"{API}/detainees/{made[0]}", headers=lead.h(x_purpose=PURPOSE)).status_code == 200
    assert entries(engine, mark) == [("personal_data.disclosed", "detainee", made[0])]


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


# --- `caseapi audit list` --------------------------------------------------


def run_list(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    cli.main(["audit", "list", *args])
    return capsys.readouterr().out.splitlines()


def test_cli_audit_list_reads_the_whole_instance_s_log(
    client: TestClient,
    engine: sa.Engine,
    lead: Caller,
    sub: Caller,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On the host, every entry: those of the RED case no API key of another agency reads too."""
    case_id, detainee_id = red_case_with_a_disclosure(client, lead, sub)
    total = head_seq(engine)
    lines = run_list(capsys)
    assert [int(line.split("\t")[0]) for line in lines] == list(range(1, total + 1))
    columns = "seq at agency_id client_id action resource_type resource_id case_id purpose detail hash"
    [disclosure] = [line.split("\t") for line in lines if "\tpersonal_data.disclosed\t" in line]
    assert dict(zip(columns.split(), disclosure, strict=True)) | {"at": "-"} == {
        "seq": disclosure[0],
        "at": "-",
        "agency_id": str(sub.agency_id),
        "client_id": str(sub.client_id),
        "action": "personal_data.disclosed",
        "resource_type": "detainee",
        "resource_id": detainee_id,
        "case_id": case_id,
        "purpose": PURPOSE,
        "detail": json.dumps({"detainee_ids": [detainee_id]}, separators=(",", ":")),
        "hash": disclosure[-1],
    }
    # Filters, a start and a limit.
    in_case = run_list(capsys, "--case-id", case_id, "--json")
    assert {json.loads(line)["case_id"] for line in in_case} == {case_id}
    assert len(in_case) == 5  # the case, its two participants, the detainee, the disclosure
    assert [
        json.loads(line)["action"] for line in run_list(capsys, "--action", "detainee.created", "--json")
    ] == ["detainee.created"]
    assert [line.split("\t")[0] for line in run_list(capsys, "--after", "2", "--limit", "2")] == ["3", "4"]
    assert run_list(capsys, "--after", str(total)) == []
    for bad in (["--limit", "-1"], ["--after", "x"], ["--case-id", "nope"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(["audit", "list", *bad])
        assert exc.value.code == 2


def test_cli_audit_list_can_be_piped(engine: sa.Engine, database_url: str) -> None:
    """More than a pipe holds, so that the reader's leaving breaks the pipe mid-listing."""

    async def work(tx: Tx) -> None:
        for _ in range(1000):
            app.core.journal.record(
                tx,
                app.core.journal.CLI,
                action="case.updated",
                resource_type="case",
                resource_id=uuid.uuid4(),
                case_id=None,
            )

    run_unit(engine, work)
    env = {**os.environ, "CASEAPI_DATABASE_URL": database_url}
    command = f"{sys.executable} -c 'from app.cli import main; main()' audit list | head -1"
    done = subprocess.run(
        command, shell=True, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.startswith("1\t") and done.stdout.count("\n") == 1
    assert done.stderr == ""


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
        # Fields as fields (app.core.observability.logs renders them as JSON or text).
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
