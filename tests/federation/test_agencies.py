"""Agencies across instances: each instance holds its peers' agencies with
the same ids and codes, read-only, keys made only at home; a peer that
announces an agency belonging to this instance or another peer is refused."""

import uuid
from collections.abc import Callable

import httpx
import pytest
import sqlalchemy as sa

from app.agencies.models import Agency
from app.core.db import create_db_engine
from tests.federation.conftest import Instance, peer, peered
from tests.federation.test_mirrors import eventually

API = "/api/v1"


def admin_key(instance: Instance, code: str) -> str:
    return instance.command(
        "client", "create", "--agency", code, "--name", "admin", "--scope", "admin", "--scope", "read"
    )[-1]


def agencies(instance: Instance, key: str) -> dict[str, dict[str, object]]:
    answer = httpx.get(f"{instance.url}{API}/agencies", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    return {a["code"]: a for a in answer.json()["items"]}


def rename(instance: Instance, key: str, code: str, name: str) -> dict[str, object]:
    """PATCH the agency's name at its home with an admin key; the agency as answered."""
    agency = agencies(instance, key)[code]
    renamed = httpx.patch(
        f"{instance.url}{API}/agencies/{agency['id']}",
        json={"name": name},
        headers={"Authorization": f"Bearer {key}", "If-Match": f'"{agency["version"]}"'},
    )
    assert renamed.status_code == 200, renamed.text
    return renamed.json()  # type: ignore[no-any-return]


def test_each_instance_lists_its_peers_agencies_with_the_same_ids(kz_ua: tuple[Instance, Instance]) -> None:
    kz, ua = kz_ua
    kz_key, ua_key = admin_key(kz, "KZ-MVD"), admin_key(ua, "UA-LE")
    on_kz, on_ua = agencies(kz, kz_key), agencies(ua, ua_key)
    assert on_kz["KZ-MVD"]["home_instance"] is None and on_kz["UA-LE"]["home_instance"] == "ua.caseapi"
    assert on_ua["UA-LE"]["home_instance"] is None and on_ua["KZ-MVD"]["home_instance"] == "kz.caseapi"
    for code in ("KZ-MVD", "UA-LE"):
        assert {k: v for k, v in on_kz[code].items() if k != "home_instance"} == {
            k: v for k, v in on_ua[code].items() if k != "home_instance"
        }


@pytest.mark.fresh_instances
def test_a_peers_agency_changes_only_at_home(kz_ua: tuple[Instance, Instance]) -> None:
    kz, ua = kz_ua
    kz_key = admin_key(kz, "KZ-MVD")
    ua_le = agencies(kz, kz_key)["UA-LE"]
    changed = httpx.patch(
        f"{kz.url}{API}/agencies/{ua_le['id']}",
        json={"name": "Renamed by Kazakhstan"},
        headers={"Authorization": f"Bearer {kz_key}", "If-Match": f'"{ua_le["version"]}"'},
    )
    assert changed.status_code == 403 and "ua.caseapi" in changed.json()["detail"]
    refused = kz.cli("client", "create", "--agency", "UA-LE", "--name", "stolen", check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == "caseapi: Agency UA-LE lives on ua.caseapi: its keys are made there."
    moved = kz.cli("agency", "set-parent", "UA-LE", "--parent", "KZ-MVD", check=False)
    assert moved.returncode == 1 and "changes there only" in moved.stderr

    # At home it changes, and the peer holds the change (same version) once it asks again.
    renamed = rename(ua, admin_key(ua, "UA-LE"), "UA-LE", "National Police of Ukraine")
    assert "1 added or changed" in peer(kz, ua)[1]
    held = agencies(kz, kz_key)["UA-LE"]
    assert held["name"] == "National Police of Ukraine" and held["version"] == renamed["version"]


@pytest.mark.fresh_instances
def test_a_peer_announcing_another_instances_agency_is_refused(
    kz_ua: tuple[Instance, Instance], instances: Callable[[str], Instance]
) -> None:
    kz, _ = kz_ua
    kz_key = admin_key(kz, "KZ-MVD")
    ua_le_id = agencies(kz, kz_key)["UA-LE"]["id"]

    # An instance hosting an agency with Kazakhstan's own code.
    squatter = instances("squatter.caseapi")
    squatter.command(
        "agency", "create", "--code", "KZ-MVD", "--name", "Not the ministry", "--kind", "ministry"
    )
    squatter.serve()
    peered(squatter, kz)
    refused = kz.cli("peer", "add", "--url", squatter.url, "--thumbprint", squatter.thumbprint, check=False)
    assert refused.returncode == 1
    assert (
        refused.stderr.strip()
        == "caseapi: peer squatter.caseapi announces agency KZ-MVD, which belongs to this instance"
    )
    assert [line.split("\t")[0] for line in kz.command("peer", "list")] == ["ua.caseapi"]

    # An instance announcing Ukraine's agency by its id, under another code.
    usurper = instances("usurper.caseapi")
    usurper.command("agency", "create", "--code", "UA-LE-2", "--name", "Not Ukraine", "--kind", "police")
    engine = create_db_engine(usurper.env["CASEAPI_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(sa.update(Agency).values(id=uuid.UUID(str(ua_le_id))))
    engine.dispose()
    usurper.serve()
    peered(usurper, kz)
    refused = kz.cli("peer", "add", "--url", usurper.url, "--thumbprint", usurper.thumbprint, check=False)
    assert refused.returncode == 1 and "which belongs to ua.caseapi" in refused.stderr
    assert agencies(kz, kz_key)["UA-LE"]["home_instance"] == "ua.caseapi" and "UA-LE-2" not in agencies(
        kz, kz_key
    )


@pytest.mark.fresh_instances  # Kazakhstan's instance restarted with a short directory period
def test_agencies_made_or_changed_at_home_reach_a_peer_without_adding_it_again(
    kz_ua: tuple[Instance, Instance],
) -> None:
    kz, ua = kz_ua
    kz.stop()
    kz.env["CASEAPI_FEDERATION_DIRECTORY_SECONDS"] = "0.5"
    kz.serve()
    kz_key, ua_key = admin_key(kz, "KZ-MVD"), admin_key(ua, "UA-LE")
    # Ukraine's operator makes a unit under its police, and one under Kazakhstan's ministry.
    ua.command(
        "agency",
        "create",
        "--code",
        "UA-LE-CYBER",
        "--name",
        "Cyber police",
        "--kind",
        "police",
        "--parent",
        "UA-LE",
    )
    ua.command(
        "agency",
        "create",
        "--code",
        "UA-KZ-LIAISON",
        "--name",
        "Liaison",
        "--kind",
        "police",
        "--parent",
        "KZ-MVD",
    )

    def held(code: str) -> dict[str, object] | None:
        return agencies(kz, kz_key).get(code)

    cyber = eventually(lambda: held("UA-LE-CYBER"))
    liaison = eventually(lambda: held("UA-KZ-LIAISON"))
    on_kz = agencies(kz, kz_key)
    assert (cyber["home_instance"], cyber["parent_id"]) == ("ua.caseapi", on_kz["UA-LE"]["id"])
    # Under Kazakhstan's ministry it would read the ministry's AMBER cases: only Kazakhstan's
    # operator places it there, by adding the peer again, which names it.
    assert (liaison["home_instance"], liaison["parent_id"]) == ("ua.caseapi", None)
    assert any(
        line.startswith("UA-KZ-LIAISON is held under KZ-MVD of this instance") for line in peered(kz, ua)
    )
    assert held("UA-KZ-LIAISON")["parent_id"] == on_kz["KZ-MVD"]["id"]  # type: ignore[index]

    # A change at home reaches the peer too; the place its operator agreed to stays.
    rename(ua, ua_key, "UA-LE-CYBER", "Cyber Police Department")
    eventually(lambda: held("UA-LE-CYBER")["name"] == "Cyber Police Department")  # type: ignore[index]
    assert held("UA-KZ-LIAISON")["parent_id"] == on_kz["KZ-MVD"]["id"]  # type: ignore[index]
