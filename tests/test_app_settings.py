"""Each app runs on the settings create_app() was given: two apps in one
process, on one database, with different settings behave each by its own
(the clock skew: tests/trust/test_hostile_instants.py)."""

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydantic import SecretStr

from tests.conftest import Caller, new_case

API = "/api/v1"
OTHER_KEY = SecretStr("5d2b7f0c9a41e68d3b0f27c4a9e15d76" + "c08a3f6e2b917d45a0c6e38f1b24d59e")
AppWith = Callable[..., AbstractContextManager[TestClient]]


def first_page_cursor(client: TestClient, caller: Caller) -> str:
    page = client.get(f"{API}/cases", params={"limit": 1}, headers=caller.headers).json()
    assert page["next_cursor"], page
    return str(page["next_cursor"])


def test_cursors_are_signed_with_each_apps_own_key(
    client: TestClient, app_with: AppWith, lead: Caller
) -> None:
    for n in range(2):
        new_case(client, lead, reference=f"CURSOR-{n}")
    with app_with(cursor_secret=OTHER_KEY) as second:
        for signer, reader in ((client, second), (second, client)):
            params = {"limit": 1, "cursor": first_page_cursor(signer, lead)}
            assert signer.get(f"{API}/cases", params=params, headers=lead.headers).status_code == 200
            refused = reader.get(f"{API}/cases", params=params, headers=lead.headers)
            assert refused.status_code == 400 and refused.json()["type"].endswith(":invalid-cursor")


def test_idempotency_keys_live_as_long_as_each_app_says(
    client: TestClient, app_with: AppWith, engine: sa.Engine, lead: Caller
) -> None:
    body = {"reference": "TTL-1", "title": "T"}
    first = client.post(f"{API}/cases", json=body, headers=lead.h(idempotency_key="ttl"))
    assert first.status_code == 201
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    with engine.begin() as conn:
        # SQLite stores naive UTC (app.core.db.UTCDateTime).
        at = two_hours_ago.replace(tzinfo=None) if engine.dialect.name == "sqlite" else two_hours_ago
        conn.execute(sa.text("UPDATE idempotency_record SET created_at = :t"), {"t": at})
    # 24 hours: still remembered, the first answer again.
    replay = client.post(f"{API}/cases", json=body, headers=lead.h(idempotency_key="ttl"))
    assert replay.headers.get("idempotent-replayed") == "true" and replay.json() == first.json()
    # 1 hour: expired, so the request runs (and meets the taken reference).
    with app_with(idempotency_ttl_hours=1) as short:
        again = short.post(f"{API}/cases", json=body, headers=lead.h(idempotency_key="ttl"))
    assert again.status_code == 409, again.text


def test_the_audit_chain_is_keyed_with_each_apps_own_key(
    client: TestClient, app_with: AppWith, lead: Caller, admin: Caller
) -> None:
    new_case(client, lead)
    assert client.get(f"{API}/audit/verify", headers=admin.headers).json()["ok"] is True
    with app_with(audit_key=OTHER_KEY) as second:
        new_case(second, lead)
        # What each app wrote verifies under its own key only.
        first_view = client.get(f"{API}/audit/verify", headers=admin.headers).json()
        second_view = second.get(f"{API}/audit/verify", headers=admin.headers).json()
    assert first_view["ok"] is False and second_view["ok"] is False
    assert first_view["first_bad_seq"] > second_view["first_bad_seq"] == 1
