"""The seed tells the article's story, and nothing more."""

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlmodel import SQLModel

from app import seed
from app.agencies.models import Agency
from app.auth.models import Scope
from app.cases.models import Case
from app.core.config import Settings
from app.core.db import table_of
from app.core.uow import run_with_database
from app.detainees.models import Detainee
from app.evidence.models import SeizedItem
from app.locations.models import Location
from app.participants.models import Participant
from tests.conftest import AUDIT_KEY, make_caller, walk

ARTICLE = Path(__file__).resolve().parents[2] / "shared" / "source-article.txt"
REFERENCE = "KZ-UA-2025-KYIV-CALL-CENTRE"


def load_seed(engine: sa.Engine, seed_dir: Path) -> int:
    """seed.load() in one unit of work, as `caseapi seed` runs it; how many rows it added."""
    return run_with_database(
        engine, lambda db: db.run(lambda tx: seed.load(tx, seed_dir)), audit_key=AUDIT_KEY
    )


@pytest.fixture
def seeded(engine: sa.Engine, settings: Settings) -> int:
    return load_seed(engine, settings.seed_dir)


def _counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in SQLModel.metadata.sorted_tables
        }


def test_seed_twice_changes_nothing(engine: sa.Engine, settings: Settings, seeded: int) -> None:
    assert seeded > 0
    before = _counts(engine)
    assert load_seed(engine, settings.seed_dir) == 0
    assert _counts(engine) == before


def test_agencies_of_the_article(engine: sa.Engine, seeded: int) -> None:
    with engine.connect() as conn:
        agencies = {a.code: a for a in conn.execute(sa.select(table_of(Agency)))}
    kz = agencies["KZ-MVD"]
    assert kz.country == "KZ" and kz.kind == "ministry"
    assert "Ministry of Interior" in kz.name and "Kazakhstan" in kz.name
    names = " ".join(a.name for a in agencies.values())
    for named in (
        "Ukrainian law enforcement",
        "OSCE Programme Office in Astana",
        "UNICEF",
        "UNODC",
        "Interpol",
        "Group-IB",
        "Trend Micro",
        "Match Systems",
    ):
        assert named in names, named
    cyber = {a.country for a in agencies.values() if a.code.endswith("-MVD-CYBER")}
    assert cyber == {"AZ", "AM", "BY", "KZ", "KG", "RU", "TJ", "TM", "UZ"}
    assert agencies["KZ-MVD-CYBER"].parent_id == kz.id
    companies = [a for a in agencies.values() if a.kind == "private_company"]
    # The article names no country for the companies: none is invented.
    assert len(companies) == 3 and all(a.country is None for a in companies)


def test_case_figures_match_the_article(engine: sa.Engine, seeded: int) -> None:
    article = ARTICLE.read_text() if ARTICLE.exists() else ""
    with engine.connect() as conn:
        case = conn.execute(sa.select(table_of(Case)).where(Case.reference == REFERENCE)).one()
        locations = conn.execute(sa.select(table_of(Location)).where(Location.case_id == case.id)).all()
        items = {
            i.category.value: i
            for i in conn.execute(sa.select(table_of(SeizedItem)).where(SeizedItem.case_id == case.id))
        }
        detainees = conn.execute(sa.select(table_of(Detainee)).where(Detainee.case_id == case.id)).all()
        codes = {row.id: row.code for row in conn.execute(sa.select(Agency.id, Agency.code))}
        roles = {
            codes[p.agency_id]: p.role.value
            for p in conn.execute(sa.select(table_of(Participant)).where(Participant.case_id == case.id))
        }
    assert codes[case.lead_agency_id] == "KZ-MVD"
    assert roles == {"KZ-MVD": "lead", "UA-LE": "partner"}
    assert sorted(case.victim_regions) == ["CIS", "EU", "KZ"]
    for words in ("chargeback", "forged documents", "deepfake", "social engineering", "fees", "loans"):
        assert any(words in mo for mo in case.modus_operandi), words

    assert len(locations) == 11
    assert all(
        loc.searched_at is not None and loc.searched_at.date().isoformat() == "2025-09-23"
        for loc in locations
    )
    # The article names no address, city or searching agency for any location.
    assert all(
        loc.address is None and loc.city is None and loc.searched_by_agency_id is None for loc in locations
    )

    assert items["computer"].quantity == 41
    assert items["mobile_phone"].quantity == 24
    assert items["sim_card"].quantity is None
    assert items["database"].quantity is None
    assert "Kazakhstan" in items["database"].description
    assert set(items) == {"computer", "mobile_phone", "sim_card", "database"}

    assert len(detainees) == 9
    assert all(d.nationality == "UA" for d in detainees)
    assert sum(d.custody_status == "in_custody" for d in detainees) == 5
    assert all(d.full_name is None and d.date_of_birth is None and d.id_document is None for d in detainees)
    assert all(re.fullmatch(r"Detainee \d", d.label) for d in detainees)
    assert all(d.charges == [] for d in detainees)
    if article:  # the figures above are the article's own
        for figure in (
            "11 locations",
            "41 computers",
            "24 mobile phones",
            "9 Ukrainian nationals",
            "5 of whom were placed in custody",
            "23 September",
        ):
            assert figure in article


def test_seeded_case_summary_over_http(client: TestClient, engine: sa.Engine, seeded: int) -> None:
    kz = make_caller(engine, "KZ-MVD", Scope.read, Scope.admin)
    [case] = walk(client, "/api/v1/cases", kz.headers)
    summary = client.get(f"/api/v1/cases/{case['id']}/summary", headers=kz.headers).json()
    assert summary["locations"] == 11
    assert summary["seized_items"]["computer"] == {"items": 1, "quantity": 41, "unknown_quantity": 0}
    assert summary["seized_items"]["mobile_phone"]["quantity"] == 24
    assert summary["seized_items"]["sim_card"] == {"items": 1, "quantity": 0, "unknown_quantity": 1}
    assert summary["detainees"] == {"in_custody": 5, "detained": 4}
    # The seed is audited like any change, and the chain holds.
    assert client.get("/api/v1/audit/verify", headers=kz.headers).json()["ok"] is True


def test_another_agencys_case_of_the_same_reference_is_left_alone(
    client: TestClient, engine: sa.Engine, settings: Settings
) -> None:
    """References are unique per lead agency: an instance where another agency already
    uses the article's reference still gets the article's case, and that agency's
    case gets none of its participants or rows."""
    other = make_caller(engine, "XX-OTHER", Scope.read, Scope.write)
    created = client.post(
        "/api/v1/cases", json={"reference": REFERENCE, "title": "Ours"}, headers=other.headers
    )
    assert created.status_code == 201
    load_seed(engine, settings.seed_dir)
    with engine.connect() as conn:
        leads = conn.execute(
            sa.select(Agency.code)
            .join(Case, Case.lead_agency_id == Agency.id)
            .where(Case.reference == REFERENCE)
        ).scalars()
        assert sorted(leads) == ["KZ-MVD", "XX-OTHER"]
    ours = client.get(f"/api/v1/cases/{created.json()['id']}/participants", headers=other.headers).json()
    assert [p["agency_code"] for p in ours["items"]] == ["XX-OTHER"]
    assert (
        client.get(f"/api/v1/cases/{created.json()['id']}/summary", headers=other.headers).json()["locations"]
        == 0
    )


def test_a_federated_instance_loads_its_own_agencies_and_only_the_cases_it_is_home_of(
    engine: sa.Engine, settings: Settings
) -> None:
    """`caseapi demo --federation`: Ukraine's instance holds the Ukrainian agencies;
    the Kyiv case, led by KZ-MVD, is not seeded there (it arrives as a mirror)."""

    def load(cases: bool) -> int:
        return run_with_database(
            engine,
            lambda db: db.run(lambda tx: seed.load(tx, settings.seed_dir, countries={"UA"}, cases=cases)),
            audit_key=AUDIT_KEY,
        )

    assert load(cases=False) == 1
    assert load(cases=True) == 0  # its lead is not here: no case
    with engine.connect() as conn:
        assert conn.execute(sa.select(table_of(Agency).c.code)).scalars().all() == ["UA-LE"]
        assert conn.execute(sa.select(sa.func.count()).select_from(table_of(Case))).scalar_one() == 0
