"""X-Request-ID in and out (contract §6), in problem bodies and in the log of a 500."""

import io
import json
import logging
import re
import uuid

import pytest
from fastapi.testclient import TestClient

from app.core.observability.logs import formatter
from tests.conftest import Caller, new_case

API = "/api/v1"
NEW_ID = re.compile(r"[0-9a-f]{32}")


def test_a_sane_client_id_comes_back_on_success_and_on_problems(client: TestClient, lead: Caller) -> None:
    case = new_case(client, lead)
    own = "agency-tool/7f3a:retry=2"
    answers = [
        client.get(f"{API}/cases/{case['id']}", headers={**lead.headers, "X-Request-ID": own}),
        client.get(f"{API}/cases", headers={"X-Request-ID": own}),  # 401 from authentication
        client.get("/nowhere", headers={"X-Request-ID": own}),  # 404 from the router
        client.delete(f"{API}/cases", headers={**lead.headers, "X-Request-ID": own}),  # 405
        client.get(f"{API}/cases?limit=0", headers={**lead.headers, "X-Request-ID": own}),  # 422
        client.get(f"{API}/cases/{uuid.uuid4()}", headers={**lead.headers, "X-Request-ID": own}),  # 404
        client.post(  # 413 from the body limit, before any route
            f"{API}/cases",
            content=b"x" * (2 * 1024 * 1024),
            headers={**lead.headers, "X-Request-ID": own, "Content-Type": "application/json"},
        ),
        client.get("/health", headers={"X-Request-ID": own}),
    ]
    assert [r.status_code for r in answers] == [200, 401, 404, 405, 422, 404, 413, 200]
    for response in answers:
        assert response.headers["x-request-id"] == own
        if response.status_code >= 400:
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["request_id"] == own
    assert "request_id" not in answers[0].json()  # a resource is not a problem


@pytest.mark.parametrize(
    "sent",
    [
        "",
        "x" * 129,
        "has space",
        "tab\there",
        "caf\u00e9",
        "line\\nbreak\x7f",
    ],
)
def test_an_insane_client_id_is_replaced(client: TestClient, sent: str) -> None:
    response = client.get("/nowhere", headers=[("X-Request-ID", sent.encode("latin-1", "replace"))])
    given = response.headers["x-request-id"]
    assert NEW_ID.fullmatch(given), given
    assert response.json()["request_id"] == given


def test_the_longest_sane_id_is_kept(client: TestClient) -> None:
    longest = "~" * 128
    assert client.get("/health", headers={"X-Request-ID": longest}).headers["x-request-id"] == longest


def test_every_request_without_one_gets_a_new_one(client: TestClient) -> None:
    ids = {client.get("/health").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5 and all(NEW_ID.fullmatch(i) for i in ids)


def test_a_500_names_its_request_in_the_body_and_in_the_logged_traceback(app_with) -> None:  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter("json"))
    logger = logging.getLogger("caseapi")
    logger.addHandler(handler)

    def boom() -> None:
        raise RuntimeError("the cause an operator must find")

    try:
        with app_with() as client:
            client.app.router.add_api_route("/test-boom", boom)
            response = client.get("/test-boom", headers={"X-Request-ID": "report-4711"})
    finally:
        logger.removeHandler(handler)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "report-4711"
    body = response.json()
    assert body["detail"] == "An unexpected error occurred."
    assert body["request_id"] == "report-4711"
    assert "the cause" not in response.text  # the cause stays in the log
    [line] = [json.loads(x) for x in stream.getvalue().splitlines() if "unhandled error" in x]
    assert line["request_id"] == "report-4711"
    assert line["level"] == "error"
    assert "RuntimeError: the cause an operator must find" in line["exception"]


def _captured(stream: io.StringIO) -> logging.Handler:
    """Every service log line as JSON; the test client's own (httpx) lines left out."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter("json"))
    handler.addFilter(lambda record: not record.name.startswith(("httpx", "httpcore")))
    return handler


def test_one_request_line_each_and_no_search_term_or_personal_data_in_any_line(
    app_with, lead: Caller
) -> None:  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    handler = _captured(stream)
    root = logging.getLogger()
    root.addHandler(handler)

    def boom() -> None:
        raise RuntimeError("boom")

    try:
        with app_with() as client:
            client.app.router.add_api_route("/test-boom", boom)
            case = new_case(client, lead)
            personal = {"X-Purpose": "purpose-kept-out-of-logs", "X-Request-ID": "req-detainee"}
            detainee = client.post(
                f"{API}/cases/{case['id']}/detainees",
                json={"label": "D-1", "full_name": "Name Kept Out Of Logs"},
                headers={**lead.headers, **personal},
            )
            assert detainee.status_code == 201 and detainee.json()["full_name"] == "Name Kept Out Of Logs"
            answers = {
                200: client.get(
                    f"{API}/cases?q=search-term-kept-out",
                    headers={**lead.headers, "X-Request-ID": "req-200"},
                ),
                404: client.get(
                    f"{API}/cases/{uuid.uuid4()}?q=x", headers={**lead.headers, "X-Request-ID": "req-404"}
                ),
                401: client.get(f"{API}/cases?q=x", headers={"X-Request-ID": "req-401"}),
                500: client.get("/test-boom", headers={"X-Request-ID": "req-500"}),
            }
    finally:
        root.removeHandler(handler)
    assert {status: r.status_code for status, r in answers.items()} == {
        200: 200,
        404: 404,
        401: 401,
        500: 500,
    }
    output = stream.getvalue()
    for secret in ("search-term-kept-out", "purpose-kept-out-of-logs", "Name Kept Out Of Logs", "?q="):
        assert secret not in output
    lines = [json.loads(line) for line in output.splitlines()]
    by_id = {line["request_id"]: line for line in lines if line["event"] == "request"}
    assert by_id["req-200"] == {
        **by_id["req-200"],
        "logger": "caseapi.request",
        "level": "info",
        "method": "GET",
        "path": "/api/v1/cases",
        "route": "/api/v1/cases",
        "status": 200,
        "client_id": str(lead.client_id),
    }
    assert by_id["req-200"]["duration_ms"] >= 0
    assert by_id["req-detainee"]["status"] == 201
    assert by_id["req-detainee"]["route"] == "/api/v1/cases/{case_id}/detainees"
    missing = by_id["req-404"]
    assert (missing["status"], missing["route"]) == (404, "/api/v1/cases/{case_id}")
    assert missing["client_id"] == str(lead.client_id)
    assert (by_id["req-401"]["status"], by_id["req-401"]["client_id"]) == (401, None)
    assert (by_id["req-500"]["status"], by_id["req-500"]["route"]) == (500, "/test-boom")


def test_a_route_nothing_matched_and_a_hostile_path_are_logged_as_sent(app_with) -> None:  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    handler = _captured(stream)
    logging.getLogger("caseapi").addHandler(handler)
    try:
        with app_with() as client:
            assert client.get("/no/such%0Aforged line?q=x", headers={"X-Request-ID": "r1"}).status_code == 404
    finally:
        logging.getLogger("caseapi").removeHandler(handler)
    [line] = [json.loads(x) for x in stream.getvalue().splitlines() if '"request"' in x]
    assert (line["status"], line["route"], line["client_id"]) == (404, "unmatched", None)
    assert line["path"] == "/no/such%0Aforged%20line"  # still percent-encoded: no line break in a text log


def test_the_request_line_can_be_switched_off(app_with) -> None:  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    handler = _captured(stream)
    logging.getLogger("caseapi").addHandler(handler)
    try:
        with app_with(request_log=False) as client:
            assert client.get("/health").status_code == 200
    finally:
        logging.getLogger("caseapi").removeHandler(handler)
    assert '"request"' not in stream.getvalue()
