"""q= on cases: text in reference, title or summary, case folded in every script on every database."""

import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient

from app.core import migrate
from tests.conftest import Caller, new_case, walk
from tests.test_migrations import blank_engine  # noqa: F401  (fixture)

API = "/api/v1/cases"


def found(client: TestClient, caller: Caller, q: str) -> list[str]:
    return [c["id"] for c in walk(client, f"{API}?q={q}", caller.headers)]


def test_q_folds_case_in_every_script(client: TestClient, lead: Caller) -> None:
    kyiv = new_case(client, lead, title="Колл-центр в Киеве", summary="Жертвы в Казахстане")
    strasse = new_case(client, lead, reference="DE-STRASSE-1", title="Große Straße")
    new_case(client, lead, title="Unrelated")
    assert found(client, lead, "киеве") == [kyiv["id"]]
    assert found(client, lead, "КИЕВЕ") == [kyiv["id"]]
    assert found(client, lead, "казахстане") == [kyiv["id"]]
    assert found(client, lead, "strasse") == [strasse["id"]]  # casefold: ß is ss
    assert found(client, lead, "de-strasse") == [strasse["id"]]
    assert found(client, lead, "nothing-like-this") == []
    # LIKE's wildcards are searched as text.
    assert found(client, lead, "%") == []
    assert found(client, lead, "_") == []


def test_q_follows_changes(client: TestClient, lead: Caller) -> None:
    case = new_case(client, lead, title="Call centre")
    response = client.patch(
        f"{API}/{case['id']}", json={"summary": "Обыски в Киеве"}, headers=lead.h(if_match='"1"')
    )
    assert response.status_code == 200, response.text
    assert found(client, lead, "ОБЫСКИ") == [case["id"]]
    client.patch(f"{API}/{case['id']}", json={"summary": None}, headers=lead.h(if_match='"2"'))
    assert found(client, lead, "обыски") == []


def test_migration_folds_existing_cases(blank_engine: sa.Engine) -> None:  # noqa: F811
    with blank_engine.begin() as conn:
        command.upgrade(migrate.alembic_config(conn), "0001")
        conn.execute(
            sa.text(
                "INSERT INTO agency (id, code, name, kind, version, created_at, updated_at) "
                "VALUES (:id, 'KZ-MVD', 'MVD', 'police', 1, :at, :at)"
            ),
            {"id": "0" * 32, "at": "2025-09-23 00:00:00"},
        )
        conn.execute(
            sa.text(
                'INSERT INTO "case" (id, reference, title, summary, status, handling_code, offence_types, '
                "modus_operandi, victim_regions, lead_agency_id, version, created_at, updated_at) "
                "VALUES (:id, 'KZ-1', 'Колл-центр в Киеве', NULL, 'open', 'TLP:AMBER', '[]', '[]', '[]', "
                ":lead, 1, :at, :at)"
            ),
            {"id": "1" * 32, "lead": "0" * 32, "at": "2025-09-23 00:00:00"},
        )
    with blank_engine.begin() as conn:
        migrate.upgrade(conn)
        assert (
            conn.execute(sa.text('SELECT search_text FROM "case"')).scalar_one()
            == "kz-1\nколл-центр в киеве\n"  # noqa: RUF001  (Cyrillic on purpose)
        )
