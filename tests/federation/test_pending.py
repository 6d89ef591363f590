"""`pending`: the changes of the cases a peer mirrors, or should, that it has
not acknowledged: what the operator watches (GET /federation/peers, `caseapi
peer list`, caseapi_federation_pending). Counted in process, on both backends,
against a peer row: which events count is the whole of it."""

import types
import uuid
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.core.db import utcnow
from app.federation import delivery
from tests.conftest import Caller, join, new_case, run_unit

PEER = "ua.caseapi"


def ok(response: Any) -> dict[str, Any]:
    assert response.status_code in (200, 201, 204), response.text
    return response.json() if response.content else {}


def head(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.max(delivery.EVENTS.c.seq))).scalar() or 0)


def test_pending_counts_the_changes_of_the_cases_the_peer_mirrors_or_should(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller, outsider: Caller
) -> None:
    """The partner's agency lives on the peer: the changes of its cases count,
    and those of its requests; not those of a case or request it is not in."""
    shared = new_case(client, lead, handling_code="TLP:AMBER")
    join(client, lead, shared["id"], partner)
    join(client, lead, shared["id"], outsider)
    other = new_case(client, lead)
    left = new_case(client, lead)
    join(client, lead, left["id"], partner)
    since = head(engine)

    for label in ("Office in Kyiv", "Second office"):
        ok(
            client.post(
                f"/api/v1/cases/{shared['id']}/locations", json={"label": label}, headers=lead.headers
            )
        )
    ok(
        client.post(
            f"/api/v1/cases/{other['id']}/locations", json={"label": "Elsewhere"}, headers=lead.headers
        )
    )
    for to in (partner, outsider):
        request = ok(
            client.post(
                "/api/v1/requests",
                json={
                    "to_agency_id": str(to.agency_id),
                    "case_id": shared["id"],
                    "subject": "S",
                    "body": "B",
                },
                headers=lead.headers,
            )
        )
        ok(
            client.post(
                f"/api/v1/requests/{request['id']}/messages", json={"body": "M"}, headers=lead.headers
            )
        )
    # The peer held `left` until its agency left it: the withdrawal is pending.
    ok(
        client.delete(
            f"/api/v1/cases/{left['id']}/participants/{partner.agency_id}", headers=lead.h(if_match='"1"')
        )
    )

    with engine.begin() as conn:
        conn.execute(
            delivery.AGENCIES.update()
            .where(delivery.AGENCIES.c.id == partner.agency_id)
            .values(home_instance=PEER)
        )
        conn.execute(
            delivery.PEERS.insert().values(
                instance_id=PEER, url="https://ua.example", public_key={}, thumbprint="t", created_at=utcnow()
            )
        )
        conn.execute(
            delivery.MIRRORS.insert().values(
                instance_id=PEER, case_id=uuid.UUID(left["id"]), delivered_at=utcnow()
            )
        )

    def pending(after: int) -> int:
        peer = types.SimpleNamespace(instance_id=PEER, delivered_seq=after)
        return run_unit(engine, lambda tx: delivery.pending(tx, peer))

    # Two locations, the partner's request and its message, and the withdrawal.
    assert pending(since) == 5
    assert pending(head(engine)) == 0
