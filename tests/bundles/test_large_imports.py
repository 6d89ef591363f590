"""Imports of many rows (Tx.insert_many): every value comes back through the API
exactly as it was sent."""

import uuid
from datetime import date
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.core.db import insert_into
from app.core.uow import Tx
from app.detainees.models import Detainee
from tests.bundles.test_bundles import PURPOSE, counts, export, import_
from tests.conftest import Caller, new_case, run_unit, walk

# What COPY's text format and an array literal would each read otherwise: quotes,
# braces and commas, backslashes and COPY's NULL marker, words JSON and SQL give meaning to.
AWKWARD = [
    'He said "fraud"',
    "{fraud,theft}",
    "a, b",
    "C:\\cases\\new",
    "\\N",
    "NULL",
    "null",
    "[]",
    "it's",
    "мошенничество",
    "诈骗 🚨",
]
CHARGES: list[list[str]] = [[], ["fraud"], AWKWARD, ["fraud", "forgery"]]
AT = "2025-09-23T06:00:00Z"

# Sizes around 100, where the import once switched to COPY: kept as sizes a bundle has.
AROUND_THE_THRESHOLD = [99, 100, 101]


def awkward(n: int) -> str:
    return AWKWARD[n % len(AWKWARD)]


def bundle_of(rows: int, agency_id: uuid.UUID, reference: str) -> dict[str, Any]:
    """A bundle with `rows` locations, items, custody events, detainees and identifiers, every text in
    them awkward."""
    agency = str(agency_id)
    location_ids = [str(uuid.uuid4()) for _ in range(rows)]
    return {
        "bundle_version": 1,
        "case": {"reference": reference, "title": f"Case {awkward(1)}", "offence_types": AWKWARD},
        "locations": [
            {
                "id": location_ids[n],
                "label": f"Flat {n} {awkward(n)}",
                "address": awkward(n + 1),
                "city": "Київ",
                "country": "UA",
                "searched_at": AT,
                "searched_by_agency_id": agency,
            }
            for n in range(rows)
        ],
        "seized_items": [
            {
                "id": str(uuid.uuid4()),
                "category": "computer",
                "description": f"{awkward(n)}\nsecond line\twith a tab",
                "quantity": None if n % 3 == 0 else n + 1,
                "location_id": location_ids[n],
                "seized_at": AT,
                "seized_by_agency_id": agency,
                "custodian_agency_id": agency,
                "custody": [{"action": "seized", "to_agency_id": agency, "at": AT, "note": awkward(n + 2)}],
            }
            for n in range(rows)
        ],
        "detainees": [
            {
                "id": str(uuid.uuid4()),
                "label": f"Suspect {n}",
                "nationality": "UA",
                "detained_at": AT,
                "location_id": location_ids[n],
                "custody_status": "in_custody",
                "charges": CHARGES[n % len(CHARGES)],
                "full_name": awkward(n),
                "date_of_birth": "1990-02-03",
                "id_document": awkward(n + 3),
            }
            for n in range(rows)
        ],
        "identifiers": [
            {"kind": "other", "value": f"{awkward(n)} {n}", "note": awkward(n + 4)} for n in range(rows)
        ],
    }


def sent(row: dict[str, Any]) -> dict[str, Any]:
    """What a row of the bundle states, without the references an import renews."""
    return {k: v for k, v in row.items() if k not in ("id", "location_id", "custody")}


def as_sent(rows: list[dict[str, Any]], like: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: got[k] for k in sent(want)} for got, want in zip(rows, like, strict=True)]


@pytest.mark.parametrize("rows", AROUND_THE_THRESHOLD)
def test_every_value_of_an_import_reads_back_as_sent(client: TestClient, lead: Caller, rows: int) -> None:
    bundle = bundle_of(rows, lead.agency_id, f"ROWS-{rows}")
    response = import_(client, lead, bundle)
    assert response.status_code == 201, response.text
    case_id = response.json()["id"]

    personal = {**lead.headers, **PURPOSE}
    listed = walk(client, f"/api/v1/cases/{case_id}/detainees", personal, limit=200)
    assert as_sent(listed, bundle["detainees"]) == [sent(x) for x in bundle["detainees"]]
    for detainee, want in zip(listed, bundle["detainees"], strict=True):
        one = client.get(f"/api/v1/detainees/{detainee['id']}", headers=personal)
        assert one.status_code == 200, one.text
        assert one.json()["charges"] == want["charges"]

    again = export(client, lead, case_id, **PURPOSE)
    for section in ("locations", "seized_items", "detainees", "identifiers"):
        assert as_sent(again[section], bundle[section]) == [sent(x) for x in bundle[section]], section
    assert [x["custody"][0]["note"] for x in again["seized_items"]] == [
        x["custody"][0]["note"] for x in bundle["seized_items"]
    ]
    assert again["case"]["offence_types"] == AWKWARD


@pytest.mark.parametrize("rows", AROUND_THE_THRESHOLD)
def test_null_charges_are_422_and_nothing_is_written(
    client: TestClient, engine: sa.Engine, lead: Caller, rows: int
) -> None:
    bundle = bundle_of(rows, lead.agency_id, "NULL-CHARGES")
    bundle["detainees"][-1]["charges"] = None
    before = counts(engine)
    response = import_(client, lead, bundle)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "detainees", rows - 1, "charges"]
    assert counts(engine) == before


def test_insert_many_stores_what_an_insert_stores(
    client: TestClient, engine: sa.Engine, lead: Caller
) -> None:
    """Every column of a detainee row, JSON null included (a value no request sends, but a
    column's type decides how it is stored), the same whichever way the rows went in."""
    table: sa.Table = Detainee.__table__  # type: ignore[attr-defined]
    case_ids = [uuid.UUID(new_case(client, lead)["id"]) for _ in range(2)]
    charges: list[Any] = [*CHARGES, None]

    def rows(case_id: uuid.UUID) -> list[dict[str, Any]]:
        return [
            {
                "case_id": case_id,
                "label": f"{n:03} {awkward(n)}",
                "charges": charges[n % len(charges)],
                "full_name": awkward(n + 1),
                "review_due": date(2026, 9, 23),
            }
            for n in range(150)
        ]

    copied, inserted = rows(case_ids[0]), rows(case_ids[1])

    async def work(tx: Tx) -> None:
        await tx.insert_many(table, copied)

    run_unit(engine, work)
    with engine.begin() as conn:
        conn.execute(insert_into(table), inserted)

    skipped = ("id", "case_id", "created_at", "updated_at")
    text = [sa.cast(c, sa.Text) for c in table.columns if c.key not in skipped]
    with engine.connect() as conn:
        stored = [
            conn.execute(sa.select(*text).where(table.c.case_id == case_id).order_by(table.c.label)).all()
            for case_id in case_ids
        ]
    assert stored[0] == stored[1]
