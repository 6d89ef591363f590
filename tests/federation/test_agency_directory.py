"""Holding a peer's directory at `caseapi peer add` when a mirrored case has
already named one of its agencies (app.federation.service.sync_agencies), in
process: the directory is what the peer answered."""

import types
import uuid

import pytest
import sqlalchemy as sa

from app.agencies.models import AgencyKind, AgencyPublic
from app.core.db import utcnow
from app.federation import service
from app.federation.models import AgencyDirectory
from tests.conftest import run_unit

THIRD = "third.caseapi"


def hold(engine: sa.Engine, agency_id: uuid.UUID, code: str) -> None:
    """An agency held as the third instance's, as a delivery naming it leaves it."""
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            service.AGENCIES.insert().values(
                id=agency_id,
                code=code,
                name="Police",
                kind=AgencyKind.police,
                home_instance=THIRD,
                version=1,
                created_at=now,
                updated_at=now,
            )
        )


def directory(agency_id: uuid.UUID, code: str) -> AgencyDirectory:
    now = utcnow()
    agency = AgencyPublic(
        id=agency_id,
        code=code,
        name="Police",
        kind=AgencyKind.police,
        version=2,
        created_at=now,
        updated_at=now,
    )
    return AgencyDirectory(instance_id=THIRD, items=[agency])


def test_a_code_another_home_named_first_under_another_id_is_refused(engine: sa.Engine) -> None:
    """A hostile home named XX-POL as the third instance's, under an id of its
    making: adding the third instance, which announces XX-POL under its own
    id, is refused in one line (not a unique-constraint failure)."""
    hold(engine, uuid.uuid4(), "XX-POL")
    third = types.SimpleNamespace(instance_id=THIRD)
    with pytest.raises(service.PeerError, match="announces agency XX-POL under another id"):
        run_unit(engine, lambda tx: service.sync_agencies(tx, third, directory(uuid.uuid4(), "XX-POL")))


def test_an_agency_a_mirrored_case_named_is_kept_up_to_date_by_its_home(engine: sa.Engine) -> None:
    agency_id = uuid.uuid4()
    hold(engine, agency_id, "XX-POL")
    third = types.SimpleNamespace(instance_id=THIRD)
    assert run_unit(engine, lambda tx: service.sync_agencies(tx, third, directory(agency_id, "XX-POL"))) == 0
    with engine.connect() as conn:
        version = conn.execute(
            sa.select(service.AGENCIES.c.version).where(service.AGENCIES.c.id == agency_id)
        ).scalar_one()
    assert version == 2
