"""The access model of contract §3: handling codes, sub-agencies, roles, admin."""

import asyncio
import inspect
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

import app.evidence.service
import app.locations.service
import app.participants.service
from app.auth.models import Scope
from tests.conftest import Caller, join, make_caller, new_case, recorded_statements, walk
from tests.trust.world import World, build_world

API = "/api/v1"

# Everything under a case, by URL template over the world's ids.
UNDER = (
    "/cases/{case_id}/participants",
    "/cases/{case_id}/participants/{agency_id}",
    "/cases/{case_id}/locations",
    "/cases/{case_id}/seized-items",
    "/cases/{case_id}/detainees",
    "/cases/{case_id}/summary",
    "/cases/{case_id}/bundle",
    "/locations/{location_id}",
    "/seized-items/{item_id}",
    "/seized-items/{item_id}/custody",
    "/seized-items/{item_id}/custody/{event_id}",
    "/detainees/{detainee_id}",
)


@pytest.fixture
def sub_agency(engine: sa.Engine, partner: Caller) -> Caller:
    """An agency whose parent takes part in the case as a partner."""
    return make_caller(engine, "UA-PARTNER-CYBER", Scope.read, Scope.write, parent_id=partner.agency_id)


def _sees_case(client: TestClient, world: World, caller: Caller) -> str | None:
    """'full', 'summary' or None, and the same answer in the list as by id."""
    by_id = client.get(f"{API}/cases/{world.case_id}", headers=caller.headers)
    listed = [c for c in walk(client, f"{API}/cases", caller.headers) if c["id"] == world.case_id]
    if by_id.status_code == 404:
        assert listed == []
        return None
    assert by_id.status_code == 200, by_id.text
    assert [c["access"] for c in listed] == [by_id.json()["access"]]
    assert listed[0]["title"] == by_id.json()["title"] == world.case["title"]
    return by_id.json()["access"]


def _under(client: TestClient, world: World, caller: Caller) -> set[int]:
    return {client.get(API + url.format(**world.ids), headers=caller.headers).status_code for url in UNDER}


@pytest.mark.parametrize(
    ("code", "sub_level", "outsider_level"),
    [
        ("TLP:RED", None, None),
        ("TLP:AMBER+STRICT", None, None),
        ("TLP:AMBER", "full", None),
        ("TLP:GREEN", "summary", "summary"),
        ("TLP:CLEAR", "summary", "summary"),
    ],
)
def test_handling_codes(
    client: TestClient,
    lead: Caller,
    partner: Caller,
    sub_agency: Caller,
    outsider: Caller,
    code: str,
    sub_level: str | None,
    outsider_level: str | None,
) -> None:
    world = build_world(client, lead, partner, handling_code=code)
    assert _sees_case(client, world, lead) == "full"
    assert _sees_case(client, world, partner) == "full"
    assert _under(client, world, partner) == {200}
    for caller, level in ((sub_agency, sub_level), (outsider, outsider_level)):
        assert _sees_case(client, world, caller) == level, (caller.agency_code, code)
        expected = {200} if level == "full" else {404}
        assert _under(client, world, caller) == expected, (caller.agency_code, code)
    if sub_level == "full":
        # Seeing is not taking part: a sub-agency changes nothing.
        patch = client.patch(
            f"{API}/cases/{world.case_id}", json={"title": "x"}, headers=sub_agency.h(if_match='"1"')
        )
        assert patch.status_code == 403


def test_summary_access_shows_only_the_case_own_fields(
    client: TestClient, lead: Caller, partner: Caller, outsider: Caller
) -> None:
    world = build_world(client, lead, partner, handling_code="TLP:GREEN", summary="Call centre in Kyiv")
    seen = client.get(f"{API}/cases/{world.case_id}", headers=outsider.headers).json()
    full = client.get(f"{API}/cases/{world.case_id}", headers=lead.headers).json()
    assert seen == {**full, "access": "summary"}
    # The case's own events reach everyone; what is under it does not.
    events = walk(client, f"{API}/events", outsider.headers)
    assert {e["resource_type"] for e in events if e["case_id"] == world.case_id} == {"case"}
    # Summary access changes nothing.
    patch = client.patch(
        f"{API}/cases/{world.case_id}", json={"title": "x"}, headers=outsider.h(if_match='"1"')
    )
    assert patch.status_code == 404


def test_downgrading_the_code_hides_the_case_again(
    client: TestClient, lead: Caller, partner: Caller, sub_agency: Caller
) -> None:
    world = build_world(client, lead, partner, handling_code="TLP:AMBER")
    assert _sees_case(client, world, sub_agency) == "full"
    response = client.patch(
        f"{API}/cases/{world.case_id}",
        json={"handling_code": "TLP:AMBER+STRICT"},
        headers=lead.h(if_match='"1"'),
    )
    assert response.status_code == 200
    assert _sees_case(client, world, sub_agency) is None
    assert _under(client, world, sub_agency) == {404}


def test_only_the_lead_changes_participants_and_handling_code(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    third = make_caller(engine, "KG-THIRD", Scope.read, Scope.write)
    case = new_case(client, lead)
    join(client, lead, case["id"], partner)
    parts = f"{API}/cases/{case['id']}/participants"
    add = client.post(
        parts, json={"agency_id": str(third.agency_id), "role": "observer"}, headers=partner.headers
    )
    assert add.status_code == 403
    role = client.patch(
        f"{parts}/{partner.agency_id}", json={"role": "observer"}, headers=partner.h(if_match='"1"')
    )
    assert role.status_code == 403
    remove = client.delete(f"{parts}/{lead.agency_id}", headers=partner.h(if_match='"1"'))
    assert remove.status_code == 403
    code = client.patch(
        f"{API}/cases/{case['id']}", json={"handling_code": "TLP:RED"}, headers=partner.h(if_match='"1"')
    )
    assert code.status_code == 403
    # The lead may.
    code = client.patch(
        f"{API}/cases/{case['id']}", json={"handling_code": "TLP:RED"}, headers=lead.h(if_match='"1"')
    )
    assert code.status_code == 200 and code.json()["handling_code"] == "TLP:RED"
    add = client.post(
        parts, json={"agency_id": str(third.agency_id), "role": "observer"}, headers=lead.headers
    )
    assert add.status_code == 201


def test_the_lead_cannot_be_removed_or_demoted(client: TestClient, lead: Caller, partner: Caller) -> None:
    case = new_case(client, lead)
    join(client, lead, case["id"], partner)
    own = f"{API}/cases/{case['id']}/participants/{lead.agency_id}"
    assert client.delete(own, headers=lead.h(if_match='"1"')).status_code == 409
    assert client.patch(own, json={"role": "partner"}, headers=lead.h(if_match='"1"')).status_code == 409
    promote = client.patch(
        f"{API}/cases/{case['id']}/participants/{partner.agency_id}",
        json={"role": "lead"},
        headers=lead.h(if_match='"1"'),
    )
    assert promote.status_code == 422
    roles = {
        p["agency_code"]: p["role"]
        for p in walk(client, f"{API}/cases/{case['id']}/participants", lead.headers)
    }
    assert roles == {lead.agency_code: "lead", partner.agency_code: "partner"}


def test_observers_read_only(client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller) -> None:
    observer = make_caller(engine, "OSCE-OBS", *Scope)
    world = build_world(client, lead, partner)
    join_response = client.post(
        f"{API}/cases/{world.case_id}/participants",
        json={"agency_id": str(observer.agency_id), "role": "observer"},
        headers=lead.headers,
    )
    assert join_response.status_code == 201
    assert _under(client, world, observer) == {200}
    ids = world.ids
    attempts = [
        ("PATCH", f"/cases/{ids['case_id']}", {"title": "x"}),
        ("DELETE", f"/cases/{ids['case_id']}", None),
        ("POST", f"/cases/{ids['case_id']}/locations", {"label": "L"}),
        ("PATCH", f"/locations/{ids['location_id']}", {"label": "L"}),
        ("POST", f"/cases/{ids['case_id']}/seized-items", {"category": "cash", "description": "d"}),
        ("PATCH", f"/seized-items/{ids['item_id']}", {"description": "d"}),
        ("POST", f"/seized-items/{ids['item_id']}/custody", {"action": "examined"}),
        ("POST", f"/cases/{ids['case_id']}/detainees", {"label": "D"}),
        ("PATCH", f"/detainees/{ids['detainee_id']}", {"label": "D"}),
        ("DELETE", f"/detainees/{ids['detainee_id']}", None),
        (
            "POST",
            f"/cases/{ids['case_id']}/participants",
            {"agency_id": str(partner.agency_id), "role": "observer"},
        ),
    ]
    for method, url, body in attempts:
        kwargs = {"json": body} if body is not None else {}
        response = client.request(method, API + url, headers=observer.h(if_match='"1"'), **kwargs)
        assert response.status_code == 403, (method, url, response.text)


def test_admin_sees_no_case_its_agency_is_not_in(
    client: TestClient, lead: Caller, partner: Caller, admin: Caller
) -> None:
    world = build_world(client, lead, partner, handling_code="TLP:AMBER")
    assert _sees_case(client, world, admin) is None
    assert _under(client, world, admin) == {404}
    # ... nor any audit entry of it (the host reads the whole log: `caseapi audit list`).
    entries = walk(client, f"{API}/audit", admin.headers)
    assert entries and all(e["case_id"] != world.case_id for e in entries)


def test_a_key_without_read_changes_nothing_it_could_read_back(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    """A PATCH answers the whole record and a stale If-Match its ETag: without
    `read`, every PATCH and DELETE is a 403 before any lookup, the same for a
    real id and a random one, and nothing changes."""
    world = build_world(client, lead, partner)
    write_only = make_caller(engine, lead.agency_code, Scope.write, Scope.personal_data)
    admin_only = make_caller(engine, lead.agency_code, Scope.admin)
    ids = world.ids
    own = f"/cases/{ids['case_id']}/participants/{partner.agency_id}"
    changes = [
        (write_only, f"/cases/{ids['case_id']}", {"title": "x"}),
        (write_only, own, {"role": "observer"}),
        (write_only, f"/locations/{ids['location_id']}", {"label": "x"}),
        (write_only, f"/seized-items/{ids['item_id']}", {"description": "x"}),
        (write_only, f"/detainees/{ids['detainee_id']}", {"label": "x"}),
        (admin_only, f"/agencies/{lead.agency_id}", {"name": "x"}),
        (write_only, f"/requests/{ids['request_id']}", {"status": "withdrawn"}),
        (write_only, f"/identifiers/{ids['identifier_id']}", None),
        (write_only, f"/attachments/{ids['attachment_id']}", None),
    ]
    before = {url: client.get(API + url, headers=lead.headers).json() for _, url, _ in changes}
    for caller, url, body in changes:
        random = url.rsplit("/", 1)[0] + f"/{uuid.uuid4()}"
        for method, kwargs in (("PATCH", {"json": {}}), ("PATCH", {"json": body}), ("DELETE", {})):
            if method == "DELETE" and url.startswith(("/agencies", "/requests")):
                continue  # agencies and requests are never deleted
            if method == "PATCH" and body is None:
                continue  # identifiers and attachments are never changed
            answers = [
                client.request(method, API + target, headers=caller.h(if_match=tag), **kwargs)
                for target in (url, random)
                for tag in ('"1"', '"99"')
            ]
            assert [a.status_code for a in answers] == [403] * 4, (method, url)
            assert not any("etag" in a.headers for a in answers), (method, url)
            assert len({a.json()["detail"] for a in answers}) == 1
    assert {url: client.get(API + url, headers=lead.headers).json() for _, url, _ in changes} == before


# --- a removal and the writes of the agency removed, at the same time -------
#
# PostgreSQL only: SQLite runs one writing transaction at a time (BEGIN
# IMMEDIATE takes the database's write lock before the access check), so a
# removal there commits wholly before or wholly after a write, check included.

# What a partner writes, and the service function each write path calls once
# its access check passed: the hot write (asyncpg) and an ORM route.
WRITES: dict[str, tuple[str, dict[str, Any], ModuleType, str]] = {
    "seized-items": (
        "seized-items",
        {"category": "computer", "description": "PC"},
        app.evidence.service,
        "create_item",
    ),
    "locations": ("locations", {"label": "Office, floor 3"}, app.locations.service, "create_location"),
}


def _pause(
    monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str, *, after: bool
) -> tuple[threading.Event, threading.Event]:
    """Make module.name stop before (or after) it runs until `go` is set; `reached` tells it got there."""
    reached, go = threading.Event(), threading.Event()
    original: Callable[..., Any] = getattr(module, name)

    if inspect.iscoroutinefunction(original):

        async def paused(*args: Any, **kwargs: Any) -> Any:
            reached.set()
            await asyncio.to_thread(go.wait, 30)
            return await original(*args, **kwargs)

    else:

        def paused(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            if after:
                result = original(*args, **kwargs)
            reached.set()
            go.wait(30)
            return result if after else original(*args, **kwargs)

    monkeypatch.setattr(module, name, paused)
    return reached, go


def _in_thread(
    application: FastAPI, request: Callable[[TestClient], Any]
) -> tuple[threading.Thread, list[Any]]:
    """Send a request from a client of its own (its own event loop and hot pools) in a thread."""
    answers: list[Any] = []

    def run() -> None:
        with TestClient(application, raise_server_exceptions=False) as client:
            answers.append(request(client))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, answers


def _wait_blocked_or_done(engine: sa.Engine, thread: threading.Thread) -> None:
    """Until `thread` finished or some transaction of the test database waits for a lock."""
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + 20
    while thread.is_alive():
        with engine.connect() as conn:  # a transaction sees one snapshot of pg_stat_activity
            if conn.execute(query).scalar_one():
                return
        assert time.monotonic() < deadline, "neither blocked nor done"
        time.sleep(0.01)


def _partner_entries_after_removal(engine: sa.Engine, case_id: str, partner: Caller) -> list[str]:
    with engine.connect() as conn:
        entries = conn.execute(
            sa.text("SELECT seq, action, agency_id FROM audit_entry WHERE case_id = :case_id ORDER BY seq"),
            {"case_id": case_id},
        ).all()
    removed = [e.seq for e in entries if e.action == "participant.deleted"]
    assert len(removed) == 1
    return [e.action for e in entries if e.seq > removed[0] and str(e.agency_id) == str(partner.agency_id)]


@pytest.fixture
def on_postgres(backend: str) -> None:
    if backend != "postgresql":
        pytest.skip(
            "SQLite runs one writing transaction at a time: a removal cannot come between check and write"
        )


@pytest.mark.parametrize("kind", WRITES)
def test_a_write_checked_before_the_removal_commits_before_it(
    on_postgres: None,
    application: FastAPI,
    client: TestClient,
    engine: sa.Engine,
    lead: Caller,
    partner: Caller,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    """The partner's write passed its access check and has not committed when
    the lead removes the partner: the removal waits for the write."""
    path, body, module, name = WRITES[kind]
    case_id = new_case(client, lead)["id"]
    join(client, lead, case_id, partner)
    checked, go = _pause(monkeypatch, module, name, after=False)
    writer, written = _in_thread(
        application, lambda c: c.post(f"{API}/cases/{case_id}/{path}", json=body, headers=partner.headers)
    )
    assert checked.wait(20)
    remover, removed = _in_thread(
        application,
        lambda c: c.delete(
            f"{API}/cases/{case_id}/participants/{partner.agency_id}", headers=lead.h(if_match='"1"')
        ),
    )
    _wait_blocked_or_done(engine, remover)
    go.set()
    writer.join(30)
    remover.join(30)
    assert written[0].status_code == 201, written[0].text
    assert removed[0].status_code == 204, removed[0].text
    assert _partner_entries_after_removal(engine, case_id, partner) == []


@pytest.mark.parametrize("kind", WRITES)
def test_a_write_checked_during_the_removal_is_refused(
    on_postgres: None,
    application: FastAPI,
    client: TestClient,
    engine: sa.Engine,
    lead: Caller,
    partner: Caller,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    """The lead's removal of the partner is written and not committed when the
    partner's write comes: the write waits for it, then finds the partner gone (404)."""
    path, body, _, _ = WRITES[kind]
    case_id = new_case(client, lead)["id"]
    join(client, lead, case_id, partner)
    removing, go = _pause(monkeypatch, app.participants.service, "remove_participant", after=True)
    remover, removed = _in_thread(
        application,
        lambda c: c.delete(
            f"{API}/cases/{case_id}/participants/{partner.agency_id}", headers=lead.h(if_match='"1"')
        ),
    )
    assert removing.wait(20)
    writer, written = _in_thread(
        application, lambda c: c.post(f"{API}/cases/{case_id}/{path}", json=body, headers=partner.headers)
    )
    _wait_blocked_or_done(engine, writer)
    go.set()
    remover.join(30)
    writer.join(30)
    assert removed[0].status_code == 204, removed[0].text
    assert written[0].status_code == 404, written[0].text
    assert _partner_entries_after_removal(engine, case_id, partner) == []


# --- a hidden case and a missing one cost the same --------------------------


@contextmanager
def _database_work(application: FastAPI) -> Iterator[list[str]]:
    """The SQL statements run while the block runs."""
    with recorded_statements(application) as work:
        yield work


@pytest.mark.parametrize("route", ["bundle", "summary", "participants"])
@pytest.mark.parametrize("code", ["TLP:AMBER", "TLP:GREEN"])
def test_a_hidden_case_takes_the_path_of_a_missing_one(
    application: FastAPI, client: TestClient, lead: Caller, outsider: Caller, route: str, code: str
) -> None:
    """A case the caller may not read in full (hidden, or seen in summary)
    runs the statements a random id runs and builds nothing more: no time
    difference for a prober to measure."""
    hidden = new_case(client, lead, handling_code=code)["id"]

    def work_of(case_id: Any) -> list[str]:
        with _database_work(application) as work:
            response = client.get(f"{API}/cases/{case_id}/{route}", headers=outsider.headers)
        assert response.status_code == 404
        return work

    work_of(uuid.uuid4())  # statements compiled and cached alike
    assert work_of(hidden) == work_of(uuid.uuid4())
