"""Personal data of detainees: only with the `personal_data` scope and an
X-Purpose, everywhere a detainee is shown, and every disclosure audited."""

import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.auth.models import Scope
from tests.conftest import Caller, make_caller, walk
from tests.trust.world import World, build_world

API = "/api/v1"
PERSONAL = {"full_name": "Ivan Petrenko", "date_of_birth": "1990-01-02", "id_document": "P-1"}
PURPOSE = "Extradition file KZ-2025-17"
IDS = ("client_id", "resource_id", "case_id")


@pytest.fixture
def world(client: TestClient, lead: Caller, partner: Caller) -> World:
    return build_world(client, lead, partner)


@pytest.fixture
def reader_with_scope(engine: sa.Engine, lead: Caller) -> Caller:
    """Another client of the lead agency: personal_data scope but no write."""
    return make_caller(engine, lead.agency_code, Scope.read, Scope.personal_data)


def disclosures(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT client_id, resource_id, case_id, purpose FROM audit_entry "
                "WHERE action = 'personal_data.disclosed' ORDER BY seq"
            )
        ).mappings()
        return [
            {
                **{k: (str(uuid.UUID(str(row[k]))) if row[k] is not None else None) for k in IDS},
                "purpose": row["purpose"],
            }
            for row in rows
        ]


def assert_redacted(detainee: dict[str, Any]) -> None:
    assert detainee["personal_data_redacted"] is True
    assert {k: detainee[k] for k in PERSONAL} == dict.fromkeys(PERSONAL)


def assert_disclosed(detainee: dict[str, Any]) -> None:
    assert detainee["personal_data_redacted"] is False
    assert {k: detainee[k] for k in PERSONAL} == PERSONAL


def _views(client: TestClient, world: World, headers: dict[str, str]) -> list[dict[str, Any]]:
    """The detainee as every read route shows it."""
    one = client.get(f"{API}/detainees/{world.ids['detainee_id']}", headers=headers)
    assert one.status_code == 200, one.text
    listed = client.get(f"{API}/cases/{world.case_id}/detainees", headers=headers)
    bundle = client.get(f"{API}/cases/{world.case_id}/bundle", headers=headers)
    assert listed.status_code == bundle.status_code == 200
    return [one.json(), *listed.json()["items"], *bundle.json()["detainees"]]


def test_reads_without_scope_or_purpose_are_redacted(
    client: TestClient, engine: sa.Engine, world: World, lead: Caller, partner: Caller
) -> None:
    for headers in (
        lead.headers,  # scope, no purpose
        lead.h(x_purpose="   "),  # scope, blank purpose
        partner.h(x_purpose=PURPOSE),  # purpose, no scope
    ):
        for view in _views(client, world, headers):
            assert_redacted(view)
    assert disclosures(engine) == []


def test_reads_with_scope_and_purpose_disclose_and_audit(
    client: TestClient, engine: sa.Engine, world: World, reader_with_scope: Caller
) -> None:
    views = _views(client, world, reader_with_scope.h(x_purpose=PURPOSE))
    assert len(views) == 3
    for view in views:
        assert_disclosed(view)
    entries = disclosures(engine)
    # One entry per detainee shown: by the single read, the list, the bundle.
    assert len(entries) == 3
    assert {e["resource_id"] for e in entries} == {world.ids["detainee_id"]}
    assert {e["purpose"] for e in entries} == {PURPOSE}
    assert {e["client_id"] for e in entries} == {str(reader_with_scope.client_id)}
    assert {e["case_id"] for e in entries} == {world.case_id}
    assert entries[0]["resource_id"] == world.ids["detainee_id"]


def test_an_empty_list_discloses_nothing(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    world = build_world(client, lead, partner)
    client.delete(f"{API}/detainees/{world.ids['detainee_id']}", headers=lead.h(if_match='"1"'))
    listed = client.get(f"{API}/cases/{world.case_id}/detainees", headers=lead.h(x_purpose=PURPOSE))
    assert listed.json()["items"] == []
    assert disclosures(engine) == []


def test_create_and_patch_responses_follow_the_same_rule(
    client: TestClient, engine: sa.Engine, world: World, lead: Caller
) -> None:
    url = f"{API}/cases/{world.case_id}/detainees"
    before = len(disclosures(engine))
    hidden = client.post(url, json={"label": "D-2", **PERSONAL}, headers=lead.headers)
    assert hidden.status_code == 201
    assert_redacted(hidden.json())
    assert len(disclosures(engine)) == before
    shown = client.post(url, json={"label": "D-3", **PERSONAL}, headers=lead.h(x_purpose=PURPOSE))
    assert shown.status_code == 201
    assert_disclosed(shown.json())
    assert disclosures(engine)[-1]["resource_id"] == shown.json()["id"]
    # What was stored without a purpose is there: a purposeful read shows it.
    stored = client.get(f"{API}/detainees/{hidden.json()['id']}", headers=lead.h(x_purpose=PURPOSE))
    assert_disclosed(stored.json())

    patch_url = f"{API}/detainees/{hidden.json()['id']}"
    patched = client.patch(patch_url, json={"label": "D-2b"}, headers=lead.h(if_match='"1"'))
    assert patched.status_code == 200
    assert_redacted(patched.json())
    patched = client.patch(
        patch_url, json={"label": "D-2c"}, headers=lead.h(if_match='"2"', x_purpose=PURPOSE)
    )
    assert_disclosed(patched.json())
    assert len(disclosures(engine)) == before + 3


def test_writing_personal_data_needs_the_scope(client: TestClient, world: World, partner: Caller) -> None:
    url = f"{API}/cases/{world.case_id}/detainees"
    for field, value in PERSONAL.items():
        response = client.post(url, json={"label": "D", field: value}, headers=partner.h(x_purpose=PURPOSE))
        assert response.status_code == 403, field
        patch = client.patch(
            f"{API}/detainees/{world.ids['detainee_id']}",
            json={field: value},
            headers=partner.h(if_match='"1"'),
        )
        assert patch.status_code == 403, field
    # Without personal fields the partner may record a detainee.
    plain = client.post(url, json={"label": "D"}, headers=partner.headers)
    assert plain.status_code == 201
    assert_redacted(plain.json())


def test_a_patch_cannot_confirm_a_guess_of_personal_data(
    client: TestClient, engine: sa.Engine, world: World, lead: Caller
) -> None:
    """A key with `personal_data` that sends no X-Purpose reads no names. Had a PATCH
    sending the stored name kept the ETag (a PATCH that changes nothing writes nothing),
    it would have confirmed the guess: a personal field sent is always a change."""
    url = f"{API}/detainees/{world.ids['detainee_id']}"
    guesser = make_caller(engine, lead.agency_code, Scope.read, Scope.write, Scope.personal_data)
    right = client.patch(url, json={"full_name": PERSONAL["full_name"]}, headers=guesser.h(if_match='"1"'))
    assert right.status_code == 200 and right.headers["ETag"] == '"2"'
    assert_redacted(right.json())
    wrong = client.patch(url, json={"full_name": "Someone Else"}, headers=guesser.h(if_match='"2"'))
    assert wrong.status_code == 200 and wrong.headers["ETag"] == '"3"'
    with engine.connect() as conn:
        updates = conn.execute(
            sa.text("SELECT count(*) FROM audit_entry WHERE action = 'detainee.updated'")
        ).scalar_one()
    assert updates == 2  # both writes, whatever they wrote, are on record
    # Other fields keep the rule: the same label again changes nothing.
    label = client.get(url, headers=guesser.headers).json()["label"]
    same = client.patch(url, json={"label": label}, headers=guesser.h(if_match='"3"'))
    assert same.status_code == 200 and same.headers["ETag"] == '"3"'


def test_erasing_personal_data_needs_the_scope(
    client: TestClient, engine: sa.Engine, world: World, lead: Caller, partner: Caller
) -> None:
    """A partner without `personal_data` may not wipe what the lead recorded: not
    by nulling a field, not by deleting the record, not all at once."""
    url = f"{API}/detainees/{world.ids['detainee_id']}"
    for body in (
        {"full_name": None},
        {"date_of_birth": None},
        {"id_document": None},
        dict.fromkeys(PERSONAL),
    ):
        response = client.patch(url, json=body, headers=partner.h(if_match='"1"'))
        assert response.status_code == 403, (body, response.text)
    assert client.delete(url, headers=partner.h(if_match='"1"')).status_code == 403
    assert_disclosed(client.get(url, headers=lead.h(x_purpose=PURPOSE)).json())
    # A record without personal data is the partner's to change and delete.
    plain = client.post(
        f"{API}/cases/{world.case_id}/detainees", json={"label": "D"}, headers=partner.headers
    )
    plain_url = f"{API}/detainees/{plain.json()['id']}"
    assert client.patch(plain_url, json={"label": "D2"}, headers=partner.h(if_match='"1"')).status_code == 200
    assert client.delete(plain_url, headers=partner.h(if_match='"2"')).status_code == 204
    # The key with the scope erases.
    erased = client.patch(
        url, json=dict.fromkeys(PERSONAL), headers=lead.h(if_match='"1"', x_purpose=PURPOSE)
    )
    assert erased.status_code == 200
    assert erased.json()["full_name"] is None and erased.json()["personal_data_redacted"] is False


def test_importing_personal_data_needs_the_scope(
    client: TestClient, world: World, lead: Caller, partner: Caller
) -> None:
    bundle = client.get(f"{API}/cases/{world.case_id}/bundle", headers=lead.h(x_purpose=PURPOSE)).json()
    bundle["case"]["reference"] = "COPY-PD"
    refused = client.post(f"{API}/bundles", json=bundle, headers=partner.headers)
    assert refused.status_code == 403, refused.text
    for detainee in bundle["detainees"]:
        detainee.update(dict.fromkeys(PERSONAL))
    assert client.post(f"{API}/bundles", json=bundle, headers=partner.headers).status_code == 201


def test_an_idempotent_replay_needs_the_same_purpose(
    client: TestClient, engine: sa.Engine, world: World, lead: Caller
) -> None:
    """A replay repeats the first response; it must not hand out personal data
    to a request that states no purpose (the purpose is part of the request)."""
    url = f"{API}/cases/{world.case_id}/detainees"
    body = {"label": "D-9", **PERSONAL}
    first = client.post(url, json=body, headers=lead.h(idempotency_key="k-1", x_purpose=PURPOSE))
    assert first.status_code == 201
    assert_disclosed(first.json())
    again = client.post(url, json=body, headers=lead.h(idempotency_key="k-1", x_purpose=PURPOSE))
    assert again.status_code == 201 and again.json() == first.json()
    silent = client.post(url, json=body, headers=lead.h(idempotency_key="k-1"))
    assert silent.status_code == 422
    assert "full_name" not in silent.text or "Ivan" not in silent.text


def test_purposes_are_bounded(client: TestClient, world: World, lead: Caller) -> None:
    response = client.get(f"{API}/detainees/{world.ids['detainee_id']}", headers=lead.h(x_purpose="x" * 501))
    assert response.status_code == 422


def test_walk_of_a_long_list_discloses_on_every_page(
    client: TestClient, engine: sa.Engine, world: World, lead: Caller
) -> None:
    for n in range(3):
        client.post(
            f"{API}/cases/{world.case_id}/detainees",
            json={"label": f"X{n}", **PERSONAL},
            headers=lead.headers,
        )
    before = len(disclosures(engine))
    items = walk(client, f"{API}/cases/{world.case_id}/detainees", lead.h(x_purpose=PURPOSE), limit=2)
    assert len(items) == 4
    for item in items:
        assert_disclosed(item)
    # One entry per page, naming the detainees it showed: the log says whose data each page disclosed.
    with engine.connect() as conn:
        pages = conn.execute(
            sa.text("SELECT detail FROM audit_entry WHERE action = 'personal_data.disclosed' ORDER BY seq")
        ).scalars()
        named = [json.loads(d) if isinstance(d, str) else d for d in pages][before:]
    assert [d["detainee_ids"] for d in named] == [[i["id"] for i in items[:2]], [i["id"] for i in items[2:]]]
