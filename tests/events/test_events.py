"""The event feed: each client sees the events of what it may see now, in seq order, each once."""

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.auth.models import Scope
from app.core.records import Event
from tests.conftest import Caller, join, make_caller, new_case, walk

URL = "/api/v1/events"
REQUEST_TYPES = ("information_request", "request_message")


def all_events(engine: sa.Engine) -> list[Event]:
    with engine.connect() as conn:
        return [
            Event.model_validate(row._mapping) for row in conn.execute(sa.select(Event).order_by(Event.seq))
        ]


def feed(client: TestClient, caller: Caller, limit: int = 3) -> list[dict[str, Any]]:
    events = walk(client, URL, caller.headers, limit=limit)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), "in seq order, none twice"
    return events


def add_location(client: TestClient, caller: Caller, case_id: str) -> None:
    response = client.post(f"/api/v1/cases/{case_id}/locations", json={"label": "L"}, headers=caller.headers)
    assert response.status_code == 201, response.text


def add_item(client: TestClient, caller: Caller, case_id: str) -> None:
    body = {"category": "computer", "description": "Laptop"}
    response = client.post(f"/api/v1/cases/{case_id}/seized-items", json=body, headers=caller.headers)
    assert response.status_code == 201, response.text


def retitle(client: TestClient, caller: Caller, case_id: str) -> None:
    current = client.get(f"/api/v1/cases/{case_id}", headers=caller.headers)
    response = client.patch(
        f"/api/v1/cases/{case_id}",
        json={"title": f"T {uuid.uuid4().hex[:6]}"},
        headers=caller.h(if_match=current.headers["etag"]),
    )
    assert response.status_code == 200, response.text


def send_request(client: TestClient, sender: Caller, to: Caller) -> tuple[str, list[str]]:
    """A request with one message each way; returns its id and the message ids."""
    body = {"to_agency_id": str(to.agency_id), "subject": "S", "body": "B"}
    req = client.post("/api/v1/requests", json=body, headers=sender.headers)
    assert req.status_code == 201, req.text
    rid = req.json()["id"]
    messages = []
    for who in (sender, to):
        msg = client.post(f"/api/v1/requests/{rid}/messages", json={"body": "m"}, headers=who.headers)
        assert msg.status_code == 201, msg.text
        messages.append(msg.json()["id"])
    return rid, messages


def test_each_client_sees_exactly_what_it_may_see(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller, outsider: Caller, admin: Caller
) -> None:
    child = make_caller(engine, "UA-PARTNER-CYBER", Scope.read, Scope.write, parent_id=partner.agency_id)

    amber = new_case(client, lead)["id"]  # lead + partner; the partner's sub-agency too (AMBER)
    join(client, lead, amber, partner)
    red = new_case(client, lead, handling_code="TLP:RED")["id"]  # lead + partner only
    join(client, lead, red, partner)
    green = new_case(client, outsider, handling_code="TLP:GREEN")["id"]  # summary for everyone else
    private = new_case(client, outsider)["id"]  # the outsider alone
    for case_id, writer in ((amber, partner), (red, lead), (green, outsider), (private, outsider)):
        add_location(client, writer, case_id)
        add_item(client, writer, case_id)
        retitle(client, writer, case_id)

    kz_ua, kz_ua_messages = send_request(client, lead, partner)
    out_child, out_child_messages = send_request(client, outsider, child)
    agency = client.post(
        "/api/v1/agencies",
        json={"code": "ADMIN-AGENCY-NEW", "name": "New", "kind": "police"},
        headers=admin.headers,
    )
    assert agency.status_code == 201, agency.text
    # Events of what a client may no longer see disappear from its feed: the partner leaves the red case.
    removed = client.delete(
        f"/api/v1/cases/{red}/participants/{partner.agency_id}", headers=lead.h(if_match='"1"')
    )
    assert removed.status_code == 204, removed.text

    parties = {
        rid: pair
        for pair, ids in (
            ({lead.agency_id, partner.agency_id}, [kz_ua, *kz_ua_messages]),
            ({outsider.agency_id, child.agency_id}, [out_child, *out_child_messages]),
        )
        for rid in ids
    }
    full = {
        lead.agency_id: {amber, red},
        partner.agency_id: {amber},
        child.agency_id: {amber},
        outsider.agency_id: {green, private},
        admin.agency_id: set(),
    }
    summary = {a: {green} - cases for a, cases in full.items()}

    everything = all_events(engine)
    assert [e.seq for e in everything] == list(range(1, len(everything) + 1)), "seq is dense"

    def expected(caller: Caller) -> list[int]:
        me = caller.agency_id
        return [
            e.seq
            for e in everything
            if (e.resource_type in REQUEST_TYPES and me in parties[str(e.resource_id)])
            or (e.resource_type == "agency" and e.case_id is None)
            or (e.resource_type not in REQUEST_TYPES and str(e.case_id) in full[me])
            or (e.resource_type == "case" and str(e.case_id) in summary[me])
        ]

    for caller in (lead, partner, child, outsider, admin):
        seen = feed(client, caller)
        assert [e["seq"] for e in seen] == expected(caller), caller.agency_code

    def types_in(caller: Caller, case_id: str) -> set[str]:
        return {e["type"] for e in feed(client, caller, limit=50) if e["case_id"] == case_id}

    # Spelled out, so that the expectation above cannot drift into restating the code.
    assert types_in(lead, green) == {"case.created", "case.updated"}
    assert "seized_item.created" in types_in(outsider, green)
    assert types_in(partner, red) == set()
    assert {"location.created", "seized_item.created", "custody_event.created"} <= types_in(child, amber)
    assert types_in(child, red) == set()
    assert types_in(admin, amber) == set()
    request_types = [
        e["type"] for e in feed(client, partner, limit=50) if e["resource_type"] in REQUEST_TYPES
    ]
    assert request_types == ["request.created", "request_message.created", "request_message.created"]
    assert not [e for e in feed(client, lead, limit=50) if e["resource_id"] == out_child]
    assert [e["resource_id"] for e in feed(client, child, limit=50) if e["type"] == "request.created"] == [
        out_child
    ]
    for caller in (lead, partner, child, outsider, admin):
        assert agency.json()["id"] in {e["resource_id"] for e in feed(client, caller, limit=50)}


def test_event_fields(client: TestClient, lead: Caller) -> None:
    case = new_case(client, lead)
    [created, participant] = feed(client, lead)
    assert set(created) == {"seq", "type", "resource_type", "resource_id", "case_id", "from_agency_id", "at"}
    assert created["from_agency_id"] is None  # set on hit.received only (tests/hits)
    assert (created["type"], created["resource_type"], created["resource_id"], created["case_id"]) == (
        "case.created",
        "case",
        case["id"],
        case["id"],
    )
    assert (participant["type"], participant["resource_id"]) == ("participant.created", str(lead.agency_id))
    assert created["at"].endswith("Z") or created["at"].endswith("+00:00")


def test_feed_refuses_bad_input(client: TestClient, lead: Caller, partner: Caller) -> None:
    new_case(client, lead)
    assert client.get(URL).status_code == 401
    assert client.get(URL, params={"cursor": "garbage"}, headers=lead.headers).status_code == 400
    assert client.get(URL, params={"limit": 0}, headers=lead.headers).status_code == 422
    assert client.get(URL, params={"limit": 201}, headers=lead.headers).status_code == 422
    # A cursor of another list is no cursor of the feed.
    other = client.get("/api/v1/agencies", params={"limit": 1}, headers=lead.headers).json()["next_cursor"]
    assert other is not None
    assert client.get(URL, params={"cursor": other}, headers=lead.headers).status_code == 400
    # A cursor of one client moves another only within what that one may see.
    cursor = client.get(URL, params={"limit": 1}, headers=lead.headers).json()["next_cursor"]
    assert client.get(URL, params={"cursor": cursor}, headers=partner.headers).json()["items"] == []


def test_following_cursors_while_events_are_added(
    client: TestClient, engine: sa.Engine, lead: Caller, outsider: Caller
) -> None:
    """Pages are read while visible and invisible events keep arriving; the walk ends with all of them."""
    mine = new_case(client, lead)["id"]
    theirs = new_case(client, outsider)["id"]
    for _ in range(3):
        add_location(client, lead, mine)
    seen: list[int] = []
    cursor: str | None = None
    for _ in range(100):  # bounded: three events per page read, two added
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get(URL, params=params, headers=lead.headers).json()
        seen += [e["seq"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        add_location(client, lead, mine)
        add_location(client, outsider, theirs)
    assert cursor is None, "the walk caught up"
    visible = [e.seq for e in all_events(engine) if str(e.case_id) == mine]
    assert seen == visible


# --- concurrent writers, one polling reader ----------------------------------------------------------------


@dataclass
class Writer:
    caller: Caller
    partner: Caller
    errors: list[BaseException] = field(default_factory=list)
    case_id: str | None = None


WRITERS = 4
ROUNDS = 8
DEADLINE_SECONDS = 120


def _write(app: FastAPI, writer: Writer, stop: threading.Event) -> None:
    """Creates a case, then rounds of locations, items, retitles and requests."""
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            writer.case_id = new_case(client, writer.caller)["id"]
            for n in range(ROUNDS):
                if stop.is_set():
                    return
                add_location(client, writer.caller, writer.case_id)
                add_item(client, writer.caller, writer.case_id)
                retitle(client, writer.caller, writer.case_id)
                if n % 3 == 0:
                    send_request(client, writer.caller, writer.partner)
    except BaseException as exc:
        writer.errors.append(exc)


def test_polling_reader_sees_every_event_once_while_writers_commit_concurrently(
    application: FastAPI,
    client: TestClient,
    engine: sa.Engine,
    lead: Caller,
    partner: Caller,
    outsider: Caller,
) -> None:
    """Writers of the reader's agency and of others commit in parallel while a reader polls the feed.

    The feed gives no cursor once a page reaches its end (next_cursor is
    null), so a poller resumes with after=<the last seq it saw>. Any event
    committed with a seq below one the reader already passed would be lost,
    which is what this test is after.
    """
    writers = [Writer(make_caller(engine, lead.agency_code), partner) for _ in range(WRITERS - 1)]
    writers.append(Writer(outsider, partner))  # another agency: its case events never reach the reader
    stop = threading.Event()
    threads = [threading.Thread(target=_write, args=(application, w, stop), daemon=True) for w in writers]
    deadline = time.monotonic() + DEADLINE_SECONDS
    for thread in threads:
        thread.start()

    seen: list[int] = []
    cursor: str | None = None

    def poll() -> int:
        # Follow next_cursor; at the end of the feed, resume with after=<last seq seen>.
        nonlocal cursor
        resume = {"cursor": cursor} if cursor else ({"after": seen[-1]} if seen else {})
        response = client.get(URL, params={"limit": 5, **resume}, headers=lead.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        seen.extend(e["seq"] for e in page["items"])
        cursor = page["next_cursor"]
        return len(page["items"])

    polls = 0
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        poll()
        polls += 1
    stop.set()
    for thread in threads:
        thread.join(timeout=max(1.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "writers finished in time"
    for writer in writers:
        assert not writer.errors, writer.errors
    while poll():  # drain what was committed after the last poll
        pass

    everything = all_events(engine)
    assert [e.seq for e in everything] == list(range(1, len(everything) + 1)), "seq is dense"
    own_cases = {w.case_id for w in writers if w.caller.agency_id == lead.agency_id}
    expected = [
        e.seq
        for e in everything
        if str(e.case_id) in own_cases
        or (
            e.resource_type in REQUEST_TYPES
            and lead.agency_id in (e.request_from_agency_id, e.request_to_agency_id)
        )
    ]
    assert polls > 1
    assert len(seen) == len(set(seen)), "no event twice"
    assert seen == expected, "every visible event, in seq order, none missing"
    # Sanity: the run did write what it set out to, including events the reader must not see.
    per_case = 1 + 1 + ROUNDS * 4  # case, lead participant, then location, item, seizure, retitle per round
    assert len(expected) >= (WRITERS - 1) * per_case
    assert any(str(e.case_id) == writers[-1].case_id for e in everything)


@pytest.mark.parametrize("limit", [1, 7, 200])
def test_walk_is_the_same_whatever_the_page_size(
    client: TestClient, lead: Caller, partner: Caller, limit: int
) -> None:
    case = new_case(client, lead)["id"]
    join(client, lead, case, partner)
    for _ in range(4):
        add_item(client, partner, case)
    send_request(client, partner, lead)
    reference = [e["seq"] for e in walk(client, URL, lead.headers, limit=200)]
    assert len(reference) == 2 + 1 + 4 * 2 + 3
    assert [e["seq"] for e in walk(client, URL, lead.headers, limit=limit)] == reference


def test_resume_after_the_last_seq_seen(client: TestClient, lead: Caller) -> None:
    for _ in range(3):
        new_case(client, lead)
    everything = [e["seq"] for e in walk(client, URL, lead.headers)]
    assert len(everything) >= 6
    tail = client.get(URL, params={"after": everything[2]}, headers=lead.headers).json()
    assert [e["seq"] for e in tail["items"]] == everything[3:]
    assert client.get(URL, params={"after": everything[-1]}, headers=lead.headers).json() == {
        "items": [],
        "next_cursor": None,
    }
    first = client.get(URL, params={"limit": 1}, headers=lead.headers).json()
    both = client.get(URL, params={"after": 0, "cursor": first["next_cursor"]}, headers=lead.headers)
    assert both.status_code == 422
    assert client.get(URL, params={"after": -1}, headers=lead.headers).status_code == 422
