"""What a forwarded write answers: the home's answer goes to a peer's agency,
so it holds no more than that peer may hold of the case (§9): a detainee's
personal data only when the case shares it."""

from tests.federation.conftest import Instance
from tests.federation.test_mirrors import Api, eventually, shared_case, status_of

PURPOSE = {"X-Purpose": "joint investigation"}


def test_a_write_through_a_mirror_does_not_answer_personal_data_the_case_keeps_home(
    kz_ua: tuple[Instance, Instance],
) -> None:
    kz_i, ua_i = kz_ua
    kz, ua = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE")
    case = shared_case(kz, ua)
    detainee = kz.ok(
        "POST",
        f"/cases/{case['id']}/detainees",
        json={"label": "Detainee 1", "full_name": "Kept At Home", "id_document": "N1234567"},
    )
    eventually(lambda: status_of(ua, f"/detainees/{detainee['id']}") == 200)
    held = ua.ok("GET", f"/detainees/{detainee['id']}", headers=PURPOSE)
    assert held["full_name"] is None and held["personal_data_redacted"] is True

    # Ukraine's partner, with a personal_data key and a purpose, changes the label through its mirror.
    changed = ua(
        "PATCH",
        f"/detainees/{detainee['id']}",
        json={"label": "Detainee 1 (moved)"},
        headers=PURPOSE | {"If-Match": f'"{held["version"]}"'},
    )
    assert changed.status_code == 200, changed.text
    answer = changed.json()
    assert answer["label"] == "Detainee 1 (moved)"
    assert answer["full_name"] is None and answer["id_document"] is None
    assert answer["personal_data_redacted"] is True

    # Nor does a new record's answer, replayed by its Idempotency-Key, nor the home's own reads change.
    made = ua(
        "POST",
        f"/cases/{case['id']}/detainees",
        json={"label": "Detainee 2", "full_name": "Written By Ukraine"},
        headers=PURPOSE | {"Idempotency-Key": "leak-1"},
    )
    assert made.status_code == 201, made.text
    assert made.json()["full_name"] is None and made.json()["personal_data_redacted"] is True
    again = ua(
        "POST",
        f"/cases/{case['id']}/detainees",
        json={"label": "Detainee 2", "full_name": "Written By Ukraine"},
        headers=PURPOSE | {"Idempotency-Key": "leak-1"},
    )
    assert again.status_code == 201 and again.json()["full_name"] is None
    at_home = kz.ok("GET", f"/detainees/{detainee['id']}", headers=PURPOSE)
    assert at_home["full_name"] == "Kept At Home" and at_home["label"] == "Detainee 1 (moved)"
    written = kz.ok("GET", f"/detainees/{made.json()['id']}", headers=PURPOSE)
    assert written["full_name"] == "Written By Ukraine"
