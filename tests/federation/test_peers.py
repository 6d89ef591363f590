"""Identity and trust between instances: the instance document, peers added
by thumbprint on the host, and signed requests (RFC 9421) refused in every
hostile form: unsigned, forged, replayed, from a removed peer, altered, or
outside the 300 s clock window."""

import datetime
from collections.abc import Callable

import httpx
import pytest
from caseapi_client import Client

from app.federation import signatures
from tests.federation.conftest import Instance, peer

AGENCIES = "/api/v1/federation/agencies"


def signed_get(sender: Instance, url: str, **options: datetime.datetime) -> dict[str, str]:
    return signatures.sign(sender.identity, "GET", url, b"", now=options.get("now"))


def test_the_instance_document_is_what_instance_show_prints(instances: Callable[[str], Instance]) -> None:
    kz = instances("kz.caseapi")
    shown = kz.cli("instance", "show").stdout.splitlines()
    kz.serve()
    document = httpx.get(f"{kz.url}/api/v1/federation/instance").json()
    assert document["instance_id"] == "kz.caseapi" == shown[0].split()[-1]
    assert document["thumbprint"] == shown[-1]
    assert document["public_key"]["kty"] == "OKP" and "d" not in document["public_key"]
    # As the Python client reads it (no key needed).
    with Client(kz.url, "no key") as client:
        assert client.federation.instance().thumbprint == shown[-1]
    # The key is made once and kept: a restart presents the same one.
    kz.stop()
    kz.serve()
    assert httpx.get(f"{kz.url}/api/v1/federation/instance").json() == document


def test_an_instance_that_does_not_federate_has_no_document(instances: Callable[[str], Instance]) -> None:
    lone = instances("lone")
    del lone.env["CASEAPI_INSTANCE_ID"]
    lone.serve()
    response = httpx.get(f"{lone.url}/api/v1/federation/instance")
    assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"


def test_two_operators_peer_their_instances_with_the_cli(instances: Callable[[str], Instance]) -> None:
    """The pair the other tests use (kz_ua), made as its operators make it: every
    step a `caseapi` command of its own, each thumbprint as `instance show` prints it."""
    kz, ua = instances("kz.caseapi"), instances("ua.caseapi")
    kz.cli(
        "agency", "create", "--code", "KZ-MVD", "--name", "Ministry of Internal Affairs", "--kind", "ministry"
    )
    ua.cli("agency", "create", "--code", "UA-LE", "--name", "Law enforcement of Ukraine", "--kind", "police")
    kz.serve()
    ua.serve()
    shown = {i.instance_id: i.cli("instance", "show").stdout.splitlines()[-1] for i in (kz, ua)}
    assert shown == {i.instance_id: i.thumbprint for i in (kz, ua)}
    # Nothing flows before both have added each other: KZ learns UA's agencies when it adds UA again.
    assert "follow once it has added kz.caseapi" in peer(kz, ua)[1]
    assert "agencies held here: 1" in peer(ua, kz)[1]
    assert "agencies held here: 1" in peer(kz, ua)[1]
    for this, other in ((kz, ua), (ua, kz)):
        [line] = this.cli("peer", "list").stdout.splitlines()
        assert line.split("\t")[:3] == [other.instance_id, other.url, shown[other.instance_id]]
    for this in (kz, ua):
        assert {line.split("\t")[1] for line in this.command("agency", "list")} == {"KZ-MVD", "UA-LE"}


def test_a_wrong_thumbprint_is_refused_and_nothing_is_stored(instances: Callable[[str], Instance]) -> None:
    kz, ua = instances("kz.caseapi"), instances("ua.caseapi")
    ua.serve()
    impostor = kz.thumbprint  # a valid thumbprint, of another key
    refused = kz.cli("peer", "add", "--url", ua.url, "--thumbprint", impostor, check=False)
    assert refused.returncode == 1
    assert (
        refused.stderr.strip().startswith("caseapi: thumbprint mismatch")
        and len(refused.stderr.splitlines()) == 1
    )
    assert kz.command("peer", "list") == []
    unreachable = kz.cli("peer", "add", "--url", "http://127.0.0.1:9", "--thumbprint", impostor, check=False)
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr


def test_a_peer_reads_the_agencies_another_hosts_by_a_signed_request(
    kz_ua: tuple[Instance, Instance],
) -> None:
    kz, ua = kz_ua
    url = ua.url + AGENCIES
    answer = httpx.get(url, headers=signed_get(kz, url))
    assert answer.status_code == 200, answer.text
    assert answer.json()["instance_id"] == "ua.caseapi"
    assert [a["code"] for a in answer.json()["items"]] == ["UA-LE"]
    [line] = kz.command("peer", "list")
    assert line.split("\t")[:3] == [ua.instance_id, ua.url, ua.thumbprint]


def refusal(response: httpx.Response) -> str:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "items" not in response.json()
    return str(response.json()["detail"])


def test_hostile_requests_are_refused(
    kz_ua: tuple[Instance, Instance], instances: Callable[[str], Instance]
) -> None:
    kz, ua = kz_ua
    url = ua.url + AGENCIES
    # No signature at all.
    assert "Signature-Input" in refusal(httpx.get(url))
    # Signed by an instance UA-LE's operator never added.
    stranger = instances("stranger.caseapi")
    stranger.command("instance", "show")
    assert "unknown key" in refusal(httpx.get(url, headers=signed_get(stranger, url)))
    # Forged: KZ's key id, another key's signature.
    forged = signed_get(stranger, url)
    forged["signature-input"] = forged["signature-input"].replace("stranger.caseapi", "kz.caseapi")
    refusal(httpx.get(url, headers=forged))
    # Signed for another URL (a query added on the way).
    refusal(httpx.get(url + "?all=1", headers=signed_get(kz, url)))
    # Signed over a body that is not the one sent.
    altered = signatures.sign(kz.identity, "GET", url, b"{}")
    assert "Content-Digest" in refusal(httpx.get(url, headers=altered))
    # Replayed: the same signed request twice.
    once = signed_get(kz, url)
    assert httpx.get(url, headers=once).status_code == 200
    assert "replayed" in refusal(httpx.get(url, headers=once))


def test_the_clock_window_is_300_seconds_either_way(kz_ua: tuple[Instance, Instance]) -> None:
    kz, ua = kz_ua
    url = ua.url + AGENCIES
    now = datetime.datetime.now(datetime.UTC)
    for skew in (-280, 280):
        assert (
            httpx.get(
                url, headers=signed_get(kz, url, now=now + datetime.timedelta(seconds=skew))
            ).status_code
            == 200
        )
    for skew in (-320, 320):
        refusal(httpx.get(url, headers=signed_get(kz, url, now=now + datetime.timedelta(seconds=skew))))


@pytest.mark.fresh_instances
def test_a_removed_peer_is_refused(kz_ua: tuple[Instance, Instance]) -> None:
    kz, ua = kz_ua
    url = ua.url + AGENCIES
    ua.cli("peer", "remove", "kz.caseapi")
    assert "unknown key" in refusal(httpx.get(url, headers=signed_get(kz, url)))
    assert ua.command("peer", "list") == []
    gone = ua.cli("peer", "remove", "kz.caseapi", check=False)
    assert gone.returncode == 1 and gone.stderr.strip() == "caseapi: no peer kz.caseapi"
