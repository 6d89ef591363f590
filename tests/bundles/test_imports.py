"""Bundle imports run in processes of their own (app.bundles.imports): what the worker sees of that."""

import multiprocessing
import os
import pickle
import signal
import threading
import time
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.errors import AppError
from tests.attachments.test_attachments import storage_of, unique_bytes
from tests.bundles.test_bundle_attachments import attach, imported, listed
from tests.bundles.test_bundles import counts, export, import_
from tests.conftest import Caller


def _children() -> set[int]:
    return {child.pid for child in multiprocessing.active_children() if child.pid is not None}


def _new_child(before: set[int]) -> int:
    deadline = time.monotonic() + 30
    while not (new := _children() - before):
        assert time.monotonic() < deadline, "no import process started"
        time.sleep(0.02)
    (pid,) = new
    return pid


def test_an_import_is_made_by_another_process(client: TestClient, case_id: str, lead: Caller) -> None:
    before = _children()
    copy_id = imported(client, lead, export(client, lead, case_id), "ELSEWHERE")
    assert _children() - before, "the import ran in the worker itself"
    assert client.get(f"/api/v1/cases/{copy_id}", headers=lead.headers).status_code == 200


def test_an_import_whose_process_dies_keeps_nothing_and_the_next_one_works(
    client: TestClient,
    application: FastAPI,
    engine: sa.Engine,
    case_id: str,
    lead: Caller,
) -> None:
    attach(client, lead, case_id, unique_bytes())
    bundle = export(client, lead, case_id)
    bundle["case"]["reference"] = "KILLED"
    before, children = counts(engine), _children()
    answers: list[Any] = []
    # The import's process waits for the storage lock in the middle of its
    # transaction (the bundle names a file), and is killed there.
    with storage_of(application).lock():
        sender = threading.Thread(target=lambda: answers.append(import_(client, lead, bundle)))
        sender.start()
        os.kill(_new_child(children), signal.SIGKILL)
        sender.join(60)
    (answer,) = answers
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "urn:caseapi:problem:import-interrupted"
    assert counts(engine) == before
    # A new process takes the next import, which keeps its file link.
    copy_id = imported(client, lead, bundle, "AFTER-THE-KILL")
    assert len(listed(client, lead, copy_id)) == 1


def test_one_client_sending_import_after_import_cannot_take_every_admitted_request(
    client: TestClient, application: FastAPI, case_id: str, lead: Caller
) -> None:
    """A hostile (or broken) client sends imports as fast as it can. Past the
    worker's import processes and `import_queue` waiting imports, the next one
    answers 503 at once instead of holding an admitted request while it waits,
    and other requests are served meanwhile."""
    settings = application.state.settings
    held = settings.import_processes + settings.import_queue
    attach(client, lead, case_id, unique_bytes())
    bundle = export(client, lead, case_id)
    answers: list[Any] = []

    def send(n: int) -> None:
        answers.append(
            import_(client, lead, {**bundle, "case": {**bundle["case"], "reference": f"FLOOD-{n}"}})
        )

    # The first import's process waits for the storage lock in its transaction;
    # the others wait for that process.
    with storage_of(application).lock():
        senders = [threading.Thread(target=send, args=(n,)) for n in range(held + 1)]
        for sender in senders:
            sender.start()
        deadline = time.monotonic() + 30
        while not answers:
            assert time.monotonic() < deadline, "no import was refused"
            time.sleep(0.02)
        (refused,) = answers
        assert refused.status_code == 503
        assert refused.json()["type"] == "urn:caseapi:problem:busy"
        assert refused.headers["retry-after"] == "5"
        assert client.get(f"/api/v1/cases/{case_id}", headers=lead.headers).status_code == 200
    for sender in senders:
        sender.join(60)
    assert sorted(a.status_code for a in answers) == [201] * held + [503]
    # The slots were given back: the next import is taken.
    assert (
        import_(client, lead, {**bundle, "case": {**bundle["case"], "reference": "AFTER"}}).status_code == 201
    )


def test_an_app_error_crosses_the_process_boundary_whole() -> None:
    error = AppError(
        422, "bad", slug="validation-error", headers={"Retry-After": "1"}, extra={"errors": [{"loc": ["x"]}]}
    )
    back = pickle.loads(pickle.dumps(error))
    assert (back.status, back.detail, back.slug, back.title, back.headers, back.extra) == (
        422,
        "bad",
        "validation-error",
        "Unprocessable Content",
        {"Retry-After": "1"},
        {"errors": [{"loc": ["x"]}]},
    )
