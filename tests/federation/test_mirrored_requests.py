"""Information requests in a mirrored case reach the mirror as they change,
with their messages and the messages' attachments.

Their events carry no case_id (only the two agencies see them, app.requests
.service), so the deliverer finds their case through the request the event
names, even once the record it changed is deleted.
"""

import httpx

from tests.federation.conftest import Instance
from tests.federation.test_amendments import delivered
from tests.federation.test_mirrors import Api, a_case, audited, eventually, shared_case, status_of


def test_a_request_in_a_mirrored_case_and_its_changes_reach_the_mirror(
    kz_ua: tuple[Instance, Instance],
) -> None:
    kz_i, ua_i = kz_ua
    kz, ua = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE")
    case = shared_case(kz, ua)
    # Ukraine asks through its own instance: the request is made at the case's home...
    sent = ua.ok(
        "POST",
        "/requests",
        json={
            "to_agency_id": ua.agency_id("KZ-MVD"),
            "case_id": case["id"],
            "subject": "Phone numbers in the seized databases",
            "body": "Which operators registered them?",
        },
    )
    assert kz.ok("GET", f"/requests/{sent['id']}")["status"] == "sent"
    # ... and reaches the mirror, though nothing else in the case changed.
    eventually(lambda: status_of(ua, f"/requests/{sent['id']}") == 200)

    # Kazakhstan acknowledges and answers at home: both reach the mirror.
    kz.ok("PATCH", f"/requests/{sent['id']}", json={"status": "acknowledged"}, headers={"If-Match": '"1"'})
    message = kz.ok("POST", f"/requests/{sent['id']}/messages", json={"body": "Looking into it."})

    def answered() -> bool:
        held: httpx.Response = ua("GET", f"/requests/{sent['id']}/messages")
        return held.status_code == 200 and [m["id"] for m in held.json()["items"]] == [message["id"]]

    eventually(answered)
    assert ua.ok("GET", f"/requests/{sent['id']}")["status"] == "acknowledged"

    # A file attached to the answer at home reaches the mirror, bytes and all.
    attached = kz(
        "POST",
        f"/requests/{sent['id']}/messages/{message['id']}/attachments",
        params={"filename": "operators.txt"},
        content=b"The operators, as far as known.",
        headers={"Content-Type": "text/plain"},
    )
    assert attached.status_code == 201, attached.text
    eventually(lambda: status_of(ua, f"/attachments/{attached.json()['id']}") == 200)
    content = ua("GET", f"/attachments/{attached.json()['id']}/content")
    assert content.status_code == 200 and content.content == b"The operators, as far as known."
    assert [p["pending"] for p in kz.ok("GET", "/federation/peers")["items"]] == [0]

    # Deleted at home, the file leaves the mirror with the next delivery (an amendment),
    # though nothing at home names its request any more but the event.
    since = len(audited(kz_i, "federation.delivered"))
    gone = kz(
        "DELETE",
        f"/attachments/{attached.json()['id']}",
        headers={"If-Match": f'"{attached.json()["version"]}"'},
    )
    assert gone.status_code == 204, gone.text
    eventually(lambda: status_of(ua, f"/attachments/{attached.json()['id']}") == 404)
    held: httpx.Response = ua("GET", f"/requests/{sent['id']}/messages/{message['id']}/attachments")
    assert held.status_code == 200 and held.json()["items"] == []
    assert delivered(kz_i, case["id"], since) == ([], [case["id"]])


def test_a_request_its_recipients_instance_would_never_receive_is_refused(
    kz_ua: tuple[Instance, Instance],
) -> None:
    """A request reaches a peer only with the mirror of its case: one outside a
    case, or in a case the recipient's instance does not mirror, is a 422 on
    the sender's instance, not a 201 that the recipient never sees."""
    kz_i, ua_i = kz_ua
    kz, ua = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE")
    kz_only = a_case(kz, handling_code="TLP:AMBER")
    before = ua.ok("GET", "/requests")["items"]
    for api, to, case_id in (
        (ua, ua.agency_id("KZ-MVD"), None),
        (kz, kz.agency_id("UA-LE"), None),
        (kz, kz.agency_id("UA-LE"), kz_only["id"]),
    ):
        body = {"to_agency_id": to, "subject": "Operators", "body": "Which operators registered them?"}
        refused = api("POST", "/requests", json=body | ({"case_id": case_id} if case_id else {}))
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["loc"] == ["body", "to_agency_id"], refused.text
    assert ua.ok("GET", "/requests")["items"] == before
    assert all(r["case_id"] != kz_only["id"] for r in kz.ok("GET", "/requests")["items"])
    # Once Ukraine's agency takes part, the case is mirrored there and the request goes.
    kz.ok(
        "POST",
        f"/cases/{kz_only['id']}/participants",
        json={"agency_id": kz.agency_id("UA-LE"), "role": "partner"},
    )
    eventually(lambda: status_of(ua, f"/cases/{kz_only['id']}") == 200)
    sent = kz.ok(
        "POST",
        "/requests",
        json={"to_agency_id": kz.agency_id("UA-LE"), "case_id": kz_only["id"], "subject": "S", "body": "B"},
    )
    eventually(lambda: status_of(ua, f"/requests/{sent['id']}") == 200)
