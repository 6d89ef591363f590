"""Information requests: who sees them, who moves them, and what each move records."""

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.auth.models import Scope
from app.core.records import AuditEntry
from app.requests.models import InformationRequest, RequestMessage
from tests.conftest import Caller, join, make_caller, new_case, problem_of, transaction, walk

URL = "/api/v1/requests"


def send(client: TestClient, sender: Caller, to: Caller, **fields: Any) -> dict[str, Any]:
    body = {
        "to_agency_id": str(to.agency_id),
        "subject": "Phone numbers",
        "body": "Who holds them?",
        **fields,
    }
    response = client.post(URL, json=body, headers=sender.headers)
    assert response.status_code == 201, response.text
    return response.json()


def move(client: TestClient, caller: Caller, req: dict[str, Any], status: str) -> Any:
    current = client.get(f"{URL}/{req['id']}", headers=caller.headers)
    assert current.status_code == 200, current.text
    return client.patch(
        f"{URL}/{req['id']}", json={"status": status}, headers=caller.h(if_match=current.headers["etag"])
    )


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value)


def count(engine: sa.Engine, model: Any) -> int:
    with transaction(engine, write=False) as session:
        return session.execute(sa.select(sa.func.count()).select_from(model)).scalar_one()


# --- creating -----------------------------------------------------------------------------------------


def test_create_answers_201_with_location_etag_and_defaults(
    client: TestClient, lead: Caller, partner: Caller
) -> None:
    before = datetime.now(UTC)
    response = client.post(
        URL,
        json={"to_agency_id": str(partner.agency_id), "subject": "S", "body": "B"},
        headers=lead.headers,
    )
    assert response.status_code == 201, response.text
    req = response.json()
    assert response.headers["location"] == f"/api/v1/requests/{req['id']}"
    assert response.headers["etag"] == '"1"'
    assert req["from_agency_id"] == str(lead.agency_id)
    assert req["to_agency_id"] == str(partner.agency_id)
    assert (req["status"], req["priority"], req["overdue"], req["case_id"]) == ("sent", "normal", False, None)
    created_at = parse(req["created_at"])
    assert before <= created_at
    assert parse(req["due_at"]) == created_at + timedelta(days=7)
    assert client.get(response.headers["location"], headers=lead.headers).json() == req


def test_urgent_request_is_due_eight_hours_after_sending(
    client: TestClient, lead: Caller, partner: Caller
) -> None:
    req = send(client, lead, partner, priority="urgent")
    assert parse(req["due_at"]) == parse(req["created_at"]) + timedelta(hours=8)


def test_explicit_due_at_is_kept_and_a_past_one_refused(
    client: TestClient, lead: Caller, partner: Caller
) -> None:
    due = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    req = send(client, lead, partner, due_at=due.isoformat())
    assert parse(req["due_at"]) == due
    # An instant with another offset comes back in UTC; a naive one is refused.
    almaty = (due + timedelta(days=1)).astimezone(timezone(timedelta(hours=5)))
    shifted = send(client, lead, partner, due_at=almaty.isoformat())
    assert shifted["due_at"].endswith("Z") or shifted["due_at"].endswith("+00:00")
    assert parse(shifted["due_at"]) == almaty
    naive = {
        "to_agency_id": str(partner.agency_id),
        "subject": "S",
        "body": "B",
        "due_at": "2030-01-01T00:00:00",
    }
    assert client.post(URL, json=naive, headers=lead.headers).status_code == 422
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    body = {"to_agency_id": str(partner.agency_id), "subject": "S", "body": "B", "due_at": past}
    response = client.post(URL, json=body, headers=lead.headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "due_at"]


def test_unknown_recipient_or_own_agency_is_422_with_loc(
    client: TestClient, engine: sa.Engine, lead: Caller
) -> None:
    for to in (uuid.uuid4(), lead.agency_id):
        body = {"to_agency_id": str(to), "subject": "S", "body": "B"}
        response = client.post(URL, json=body, headers=lead.headers)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["loc"] == ["body", "to_agency_id"]
    assert count(engine, InformationRequest) == 0


@pytest.mark.parametrize(
    "extra",
    [
        {"from_agency_id": str(uuid.uuid4())},
        {"status": "answered"},
        {"id": str(uuid.uuid4())},
        {"version": 3},
        {"created_at": "2025-01-01T00:00:00Z"},
    ],
)
def test_read_only_or_unknown_fields_are_422(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller, extra: dict[str, Any]
) -> None:
    body = {"to_agency_id": str(partner.agency_id), "subject": "S", "body": "B", **extra}
    response = client.post(URL, json=body, headers=lead.headers)
    assert response.status_code == 422
    assert count(engine, InformationRequest) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("priority", "whenever"), ("subject", ""), ("subject", "x" * 301), ("body", ""), ("due_at", "tomorrow")],
)
def test_bad_field_values_are_422(
    client: TestClient, lead: Caller, partner: Caller, field: str, value: str
) -> None:
    body = {"to_agency_id": str(partner.agency_id), "subject": "S", "body": "B", field: value}
    response = client.post(URL, json=body, headers=lead.headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][:2] == ["body", field]


def test_case_must_be_one_the_sender_reads_without_revealing_others(
    client: TestClient, lead: Caller, partner: Caller, outsider: Caller
) -> None:
    own = new_case(client, lead)
    req = send(client, lead, partner, case_id=own["id"])
    assert req["case_id"] == own["id"]

    hidden = new_case(client, outsider, handling_code="TLP:RED")
    public = new_case(client, outsider, handling_code="TLP:GREEN")  # summary access only
    answers = []
    for case_id in (hidden["id"], public["id"], str(uuid.uuid4())):
        body = {"to_agency_id": str(partner.agency_id), "subject": "S", "body": "B", "case_id": case_id}
        response = client.post(URL, json=body, headers=lead.headers)
        assert response.status_code == 422
        answers.append(problem_of(response))
    # The same words whether the case is hidden, only summarised, or missing.
    assert answers[0] == answers[1] == answers[2]
    assert answers[0]["errors"][0]["loc"] == ["body", "case_id"]


def test_idempotency_key_replays_the_first_response(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    body = {"to_agency_id": str(partner.agency_id), "subject": "S", "body": "B"}
    headers = lead.h(idempotency_key="req-1")
    first = client.post(URL, json=body, headers=headers)
    again = client.post(URL, json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert count(engine, InformationRequest) == 1
    other = client.post(URL, json={**body, "subject": "T"}, headers=headers)
    assert other.status_code == 422
    assert count(engine, InformationRequest) == 1


def test_creating_and_moving_need_the_write_scope(
    client: TestClient, engine: sa.Engine, lead: Caller
) -> None:
    reader = make_caller(engine, "UA-READER", Scope.read)
    body = {"to_agency_id": str(lead.agency_id), "subject": "S", "body": "B"}
    assert client.post(URL, json=body, headers=reader.headers).status_code == 403
    req = send(client, lead, reader)
    assert client.get(f"{URL}/{req['id']}", headers=reader.headers).status_code == 200
    denied = client.patch(
        f"{URL}/{req['id']}", json={"status": "acknowledged"}, headers=reader.h(if_match='"1"')
    )
    assert denied.status_code == 403
    message = client.post(f"{URL}/{req['id']}/messages", json={"body": "x"}, headers=reader.headers)
    assert message.status_code == 403


def test_no_key_is_401(client: TestClient) -> None:
    response = client.get(URL)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


# --- who sees what -------------------------------------------------------------------------------------


def test_only_the_two_agencies_see_a_request_and_its_messages(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller, outsider: Caller
) -> None:
    req = send(client, lead, partner)
    msg = client.post(f"{URL}/{req['id']}/messages", json={"body": "hello"}, headers=lead.headers)
    assert msg.status_code == 201
    # A sub-agency of the sender and another client of a third agency see nothing.
    child = make_caller(engine, "KZ-LEAD-CHILD", *Scope, parent_id=lead.agency_id)
    for stranger in (outsider, child):
        base = f"{URL}/{req['id']}"
        assert client.get(base, headers=stranger.headers).status_code == 404
        assert client.get(f"{base}/messages", headers=stranger.headers).status_code == 404
        assert client.get(msg.headers["location"], headers=stranger.headers).status_code == 404
        posted = client.post(f"{base}/messages", json={"body": "x"}, headers=stranger.headers)
        assert posted.status_code == 404
        patched = client.patch(base, json={"status": "withdrawn"}, headers=stranger.h(if_match='"1"'))
        assert patched.status_code == 404
        assert (
            patched.json()["detail"]
            == client.get(f"{URL}/{uuid.uuid4()}", headers=stranger.headers).json()["detail"]
        )
        assert walk(client, URL, stranger.headers) == []
    # Another client of the receiving agency sees it.
    colleague = make_caller(engine, partner.agency_code, Scope.read)
    assert client.get(f"{URL}/{req['id']}", headers=colleague.headers).status_code == 200


def test_non_uuid_id_is_not_a_500(client: TestClient, lead: Caller) -> None:
    assert client.get(f"{URL}/not-a-uuid", headers=lead.headers).status_code in (404, 422)
    assert client.get(f"{URL}/{uuid.uuid4()}/messages/nope", headers=lead.headers).status_code in (404, 422)


def test_boxes_status_filter_and_pagination(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    third = make_caller(engine, "XX-THIRD")
    outgoing = [send(client, lead, partner, subject=f"out {n}")["id"] for n in range(5)]
    incoming = [send(client, partner, lead, subject=f"in {n}")["id"] for n in range(3)]
    unrelated = send(client, partner, third)["id"]
    assert move(client, partner, {"id": outgoing[0]}, "acknowledged").status_code == 200

    def ids(params: str, limit: int = 2) -> list[str]:
        return [r["id"] for r in walk(client, f"{URL}?{params}", lead.headers, limit=limit)]

    assert ids("box=outbox") == outgoing
    assert ids("box=inbox") == incoming
    everything = ids("")
    assert sorted(everything) == sorted(outgoing + incoming)
    assert len(everything) == len(set(everything))
    assert unrelated not in everything
    assert ids("box=outbox&status=acknowledged") == [outgoing[0]]
    assert ids("status=sent", limit=50) == outgoing[1:] + incoming
    assert client.get(f"{URL}?box=sideways", headers=lead.headers).status_code == 422
    assert client.get(f"{URL}?status=lost", headers=lead.headers).status_code == 422
    assert client.get(f"{URL}?limit=0", headers=lead.headers).status_code == 422
    assert client.get(f"{URL}?limit=201", headers=lead.headers).status_code == 422
    # A cursor from one box is no good in another, and a garbled one is refused.
    cursor = client.get(f"{URL}?box=outbox&limit=1", headers=lead.headers).json()["next_cursor"]
    assert client.get(f"{URL}?box=inbox&cursor={cursor}", headers=lead.headers).status_code == 400
    assert client.get(f"{URL}?cursor=garbage", headers=lead.headers).status_code == 400


# --- status moves --------------------------------------------------------------------------------------


def test_full_exchange_recipient_acknowledges_then_answers(
    client: TestClient, lead: Caller, partner: Caller
) -> None:
    req = send(client, lead, partner)
    url = f"{URL}/{req['id']}"
    assert client.patch(url, json={"status": "acknowledged"}, headers=partner.headers).status_code == 428
    stale = client.patch(url, json={"status": "acknowledged"}, headers=partner.h(if_match='"7"'))
    assert stale.status_code == 412
    ack = client.patch(url, json={"status": "acknowledged"}, headers=partner.h(if_match='"1"'))
    assert ack.status_code == 200, ack.text
    assert ack.headers["etag"] == '"2"'
    assert (ack.json()["status"], ack.json()["version"]) == ("acknowledged", 2)
    # The sender's old ETag is stale now.
    assert client.patch(url, json={"status": "withdrawn"}, headers=lead.h(if_match='"1"')).status_code == 412
    answered = client.patch(url, json={"status": "answered"}, headers=partner.h(if_match='"2"'))
    assert answered.status_code == 200
    assert answered.json()["status"] == "answered"
    assert client.get(url, headers=lead.headers).headers["etag"] == '"3"'


@pytest.mark.parametrize(
    ("path", "target", "status"),
    [
        # (moves made beforehand by [r]ecipient/[s]ender, target, expected status code)
        ("", "answered", 409),
        ("", "declined", 409),
        ("", "sent", 409),
        ("", "acknowledged", 200),
        ("r:acknowledged", "acknowledged", 409),
        ("r:acknowledged", "declined", 200),
        ("r:acknowledged r:answered", "declined", 409),
        ("r:acknowledged r:answered", "acknowledged", 409),
        ("r:acknowledged r:declined", "answered", 409),
        ("s:withdrawn", "acknowledged", 409),
        ("r:acknowledged s:withdrawn", "answered", 409),
    ],
)
def test_recipient_moves(
    client: TestClient, lead: Caller, partner: Caller, path: str, target: str, status: int
) -> None:
    req = send(client, lead, partner)
    for step in path.split():
        side, to = step.split(":")
        assert move(client, partner if side == "r" else lead, req, to).status_code == 200
    response = move(client, partner, req, target)
    assert response.status_code == status, response.text
    if status == 409:
        assert response.json()["type"] == "urn:caseapi:problem:conflict"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("", 200),
        ("r:acknowledged", 200),
        ("r:acknowledged r:answered", 409),
        ("r:acknowledged r:declined", 409),
    ],
)
def test_sender_withdraws_while_open(
    client: TestClient, lead: Caller, partner: Caller, path: str, status: int
) -> None:
    req = send(client, lead, partner)
    for step in path.split():
        assert move(client, partner, req, step.split(":")[1]).status_code == 200
    response = move(client, lead, req, "withdrawn")
    assert response.status_code == status
    if status == 200:
        assert move(client, lead, req, "withdrawn").status_code == 409


@pytest.mark.parametrize("target", ["acknowledged", "answered", "declined"])
def test_sender_cannot_make_recipient_moves(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller, target: str
) -> None:
    req = send(client, lead, partner)
    assert move(client, lead, req, target).status_code == 403
    with transaction(engine, write=False) as session:
        assert session.get(InformationRequest, uuid.UUID(req["id"])).status.value == "sent"  # type: ignore[union-attr]


def test_recipient_cannot_withdraw(client: TestClient, lead: Caller, partner: Caller) -> None:
    req = send(client, lead, partner)
    assert move(client, partner, req, "withdrawn").status_code == 403
    # The wrong side is told so even without If-Match: it may never make this move.
    response = client.patch(f"{URL}/{req['id']}", json={"status": "withdrawn"}, headers=partner.headers)
    assert response.status_code == 403


def test_patch_accepts_only_status(client: TestClient, lead: Caller, partner: Caller) -> None:
    req = send(client, lead, partner)
    for body in ({"subject": "x"}, {"status": "acknowledged", "due_at": "2030-01-01T00:00:00Z"}, {}):
        response = client.patch(f"{URL}/{req['id']}", json=body, headers=partner.h(if_match='"1"'))
        assert response.status_code == 422


def _set_due(engine: sa.Engine, request_id: str, due: datetime) -> None:
    with transaction(engine, write=True) as session:
        session.execute(
            sa.update(InformationRequest)
            .where(InformationRequest.id == uuid.UUID(request_id))
            .values(due_at=due)
        )


@pytest.mark.parametrize(
    ("moves", "overdue"),
    [
        ((), True),
        (("acknowledged",), True),
        (("acknowledged", "answered"), False),
        (("acknowledged", "declined"), False),
    ],
)
def test_overdue_once_due_and_still_open(
    client: TestClient,
    engine: sa.Engine,
    lead: Caller,
    partner: Caller,
    moves: tuple[str, ...],
    overdue: bool,
) -> None:
    req = send(client, lead, partner)
    assert req["overdue"] is False
    _set_due(engine, req["id"], datetime.now(UTC) - timedelta(seconds=1))
    for status in moves:
        assert move(client, partner, req, status).status_code == 200
    assert client.get(f"{URL}/{req['id']}", headers=lead.headers).json()["overdue"] is overdue
    listed = client.get(f"{URL}?box=inbox", headers=partner.headers).json()["items"]
    assert [r["overdue"] for r in listed] == [overdue]


def test_withdrawn_request_is_never_overdue(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    req = send(client, lead, partner)
    _set_due(engine, req["id"], datetime.now(UTC) - timedelta(seconds=1))
    assert move(client, lead, req, "withdrawn").status_code == 200
    assert client.get(f"{URL}/{req['id']}", headers=partner.headers).json()["overdue"] is False


# --- messages ------------------------------------------------------------------------------------------


def test_both_sides_exchange_messages(client: TestClient, lead: Caller, partner: Caller) -> None:
    req = send(client, lead, partner)
    url = f"{URL}/{req['id']}/messages"
    first = client.post(url, json={"body": "Please send the subscriber data."}, headers=lead.headers)
    assert first.status_code == 201, first.text
    answer = client.post(
        url,
        json={"body": "Attached.", "source_evaluation": "B", "information_evaluation": "2"},
        headers=partner.headers,
    )
    assert answer.status_code == 201
    assert answer.headers["location"] == f"{url}/{answer.json()['id']}"
    fetched = client.get(answer.headers["location"], headers=lead.headers)
    assert fetched.status_code == 200
    assert fetched.json() == answer.json()
    assert fetched.json()["from_agency_id"] == str(partner.agency_id)
    assert (fetched.json()["source_evaluation"], fetched.json()["information_evaluation"]) == ("B", "2")
    assert first.json()["source_evaluation"] is None
    listed = walk(client, url, partner.headers, limit=1)
    assert [m["id"] for m in listed] == [first.json()["id"], answer.json()["id"]]
    # A message id under another request is not found there.
    other = send(client, lead, partner)
    assert (
        client.get(f"{URL}/{other['id']}/messages/{first.json()['id']}", headers=lead.headers).status_code
        == 404
    )


@pytest.mark.parametrize(
    "body",
    [
        {"body": ""},
        {"body": "x", "source_evaluation": "D"},
        {"body": "x", "information_evaluation": "5"},
        {"body": "x", "information_evaluation": 2},
        {"body": "x", "from_agency_id": str(uuid.uuid4())},
        {},
    ],
)
def test_bad_messages_are_422(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller, body: dict[str, Any]
) -> None:
    req = send(client, lead, partner)
    assert client.post(f"{URL}/{req['id']}/messages", json=body, headers=lead.headers).status_code == 422
    assert count(engine, RequestMessage) == 0


def test_message_idempotency(client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller) -> None:
    req = send(client, lead, partner)
    url = f"{URL}/{req['id']}/messages"
    headers = partner.h(idempotency_key="m-1")
    first = client.post(url, json={"body": "answer"}, headers=headers)
    again = client.post(url, json={"body": "answer"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert count(engine, RequestMessage) == 1


def test_withdrawn_request_takes_no_messages(client: TestClient, lead: Caller, partner: Caller) -> None:
    req = send(client, lead, partner)
    assert move(client, lead, req, "withdrawn").status_code == 200
    response = client.post(f"{URL}/{req['id']}/messages", json={"body": "late"}, headers=partner.headers)
    assert response.status_code == 409


# --- journal ---------------------------------------------------------------------------------------------


def test_every_change_is_an_event_for_both_parties_and_an_audit_entry(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller, outsider: Caller
) -> None:
    case = new_case(client, lead)
    join(client, lead, case["id"], outsider)  # a case participant that is no party to the request
    req = send(client, lead, partner, case_id=case["id"])
    msg = client.post(f"{URL}/{req['id']}/messages", json={"body": "x"}, headers=lead.headers).json()
    assert move(client, partner, req, "acknowledged").status_code == 200

    expected = [
        ("request.created", "information_request", req["id"]),
        ("request_message.created", "request_message", msg["id"]),
        ("request.updated", "information_request", req["id"]),
    ]

    def request_events(caller: Caller) -> list[tuple[str, str, str]]:
        events = walk(client, "/api/v1/events", caller.headers)
        return [
            (e["type"], e["resource_type"], e["resource_id"])
            for e in events
            if e["resource_type"] in ("information_request", "request_message")
        ]

    assert request_events(lead) == expected
    assert request_events(partner) == expected
    assert request_events(outsider) == []

    with transaction(engine, write=False) as session:
        entries = session.execute(
            sa.select(AuditEntry.action, AuditEntry.resource_id, AuditEntry.agency_id, AuditEntry.case_id)
            .where(AuditEntry.resource_type.in_(("information_request", "request_message")))
            .order_by(AuditEntry.seq)
        ).all()
    assert [(a, str(r), ag) for a, r, ag, _ in entries] == [
        ("request.created", req["id"], lead.agency_id),
        ("request_message.created", msg["id"], lead.agency_id),
        ("request.updated", req["id"], partner.agency_id),
    ]
    # Not tied to the case: the case's other participants must not learn of the request from its audit log.
    assert {c for *_, c in entries} == {None}


def test_refused_changes_record_nothing(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    req = send(client, lead, partner)
    before = count(engine, AuditEntry)
    assert move(client, partner, req, "answered").status_code == 409
    assert move(client, lead, req, "acknowledged").status_code == 403
    assert count(engine, AuditEntry) == before
