"""A client generated from the live /openapi.json by openapi-python-client
drives the service over HTTP: the document is complete enough for generated
clients (contract §7). Skipped only where the generator is not installed (the
`test` extra installs it)."""

import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.auth.models import Scope
from app.core import openapi
from tests.conftest import make_caller

PACKAGE = "caseapi_generated"


def _generator() -> str | None:
    beside_python = Path(sys.executable).with_name("openapi-python-client")
    return shutil.which("openapi-python-client") or (str(beside_python) if beside_python.exists() else None)


@pytest.fixture(scope="module")
def generated(live_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    tool = _generator()
    if tool is None:
        pytest.skip("openapi-python-client is not installed")
    out = tmp_path_factory.mktemp("generated")
    document = out / "openapi.json"
    document.write_text(json.dumps(httpx.get(f"{live_server}/openapi.json").json()))
    # The generator formats its output with ruff, which lives beside this Python.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run(
        [tool, "generate", "--path", str(document), "--output-path", str(out / PACKAGE), "--meta", "none"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    # A warning means an operation or a model was skipped or degraded.
    assert "Warning" not in run.stdout + run.stderr, run.stdout + run.stderr
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def example(operation_id: str, **ids: str) -> dict[str, Any]:
    text = json.dumps(openapi.EXAMPLES[operation_id])
    for placeholder, real in ids.items():
        text = text.replace(placeholder, real)
    return json.loads(text)


def test_create_read_update_and_a_stale_update(
    generated: ModuleType, live_server: str, engine: sa.Engine
) -> None:
    kz = make_caller(engine, "KZ-MVD", Scope.read, Scope.write)
    api = generated.AuthenticatedClient(base_url=live_server, token=kz.key)
    cases = module("api.cases")
    models = module("models")
    cases_create, cases_get, cases_update = (
        importlib.import_module(f"{cases.__name__}.{name}")
        for name in ("cases_create", "cases_get", "cases_update")
    )

    created = cases_create.sync_detailed(
        client=api, body=models.CaseCreate.from_dict(example("cases.create")), idempotency_key="kyiv-1"
    )
    assert created.status_code == 201
    case = created.parsed
    assert isinstance(case, models.CasePublic)
    assert case.reference == "KZ-UA-2025-KYIV-CALL-CENTRE"
    assert created.headers["Location"] == f"/api/v1/cases/{case.id}"
    assert created.headers["ETag"] == '"1"'

    got = cases_get.sync_detailed(case.id, client=api)
    assert got.status_code == 200 and got.parsed.title == case.title
    etag = got.headers["ETag"]

    updated = cases_update.sync_detailed(
        case.id, client=api, body=models.CaseUpdate.from_dict({"status": "active"}), if_match=etag
    )
    assert updated.status_code == 200
    assert updated.parsed.status.value == "active"
    assert updated.headers["ETag"] == '"2"'

    stale = cases_update.sync_detailed(
        case.id, client=api, body=models.CaseUpdate.from_dict({"status": "suspended"}), if_match=etag
    )
    assert stale.status_code == 412
    assert isinstance(stale.parsed, models.Problem)
    assert stale.headers["ETag"] == '"2"'
    assert cases_get.sync_detailed(case.id, client=api).parsed.status.value == "active"


def test_the_two_agency_exchange(generated: ModuleType, live_server: str, engine: sa.Engine) -> None:
    """The README's exchange: KZ-MVD sends an urgent request, UA-LE acknowledges,
    answers with a message and marks it answered; the sender can no longer withdraw."""
    kz_caller = make_caller(engine, "KZ-MVD", Scope.read, Scope.write)
    ua_caller = make_caller(engine, "UA-LE", Scope.read, Scope.write)
    outsider = make_caller(engine, "KG-MVD-CYBER", Scope.read)
    kz = generated.AuthenticatedClient(base_url=live_server, token=kz_caller.key)
    ua = generated.AuthenticatedClient(base_url=live_server, token=ua_caller.key)
    other = generated.AuthenticatedClient(base_url=live_server, token=outsider.key)
    models = module("models")
    requests_api = "api.information_requests"
    create, listing, update = (
        module(f"{requests_api}.{name}") for name in ("requests_create", "requests_list", "requests_update")
    )
    message_create, message_list = (
        module(f"{requests_api}.{n}") for n in ("messages_create", "messages_list")
    )
    events = module("api.events.events_list")

    case = module("api.cases.cases_create").sync(
        client=kz, body=models.CaseCreate.from_dict(example("cases.create"))
    )
    body = example(
        "requests.create",
        **{openapi.EXAMPLE_UA_LE: str(ua_caller.agency_id), openapi.EXAMPLE_CASE: str(case.id)},
    )
    sent = create.sync_detailed(
        client=kz, body=models.InformationRequestCreate.from_dict(body), idempotency_key="kz-req-0001"
    )
    assert sent.status_code == 201 and sent.headers["ETag"] == '"1"'
    request = sent.parsed
    assert request.priority.value == "urgent" and request.status.value == "sent"

    inbox = listing.sync(client=ua, box=models.RequestsListBoxType0("inbox"))
    assert [r.id for r in inbox.items] == [request.id]

    def move(client: Any, status: str, etag: str) -> Any:
        body = models.InformationRequestUpdate.from_dict({"status": status})
        return update.sync_detailed(request.id, client=client, body=body, if_match=etag)

    acknowledged = move(ua, "acknowledged", '"1"')
    assert acknowledged.status_code == 200 and acknowledged.headers["ETag"] == '"2"'

    answer = message_create.sync_detailed(
        request.id, client=ua, body=models.RequestMessageCreate.from_dict(example("messages.create"))
    )
    assert answer.status_code == 201
    assert answer.headers["Location"] == f"/api/v1/requests/{request.id}/messages/{answer.parsed.id}"

    answered = move(ua, "answered", '"2"')
    assert answered.status_code == 200 and answered.headers["ETag"] == '"3"'
    assert answered.parsed.status.value == "answered" and answered.parsed.overdue is False

    too_late = move(kz, "withdrawn", '"3"')
    assert too_late.status_code == 409 and isinstance(too_late.parsed, models.Problem)

    read = message_list.sync(request.id, client=kz)
    assert [m.body for m in read.items] == [example("messages.create")["body"]]

    def request_events(client: Any) -> list[str]:
        page = events.sync(client=client, limit=200)
        return [e.type_ for e in page.items if e.resource_type in ("information_request", "request_message")]

    expected = ["request.created", "request.updated", "request_message.created", "request.updated"]
    assert request_events(kz) == expected
    assert request_events(ua) == expected
    assert request_events(other) == []
