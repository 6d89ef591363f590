"""Bundle imports run in processes of their own (app.bundles.imports): what the worker sees of that."""

import contextlib
import json
import multiprocessing
import os
import pickle
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.attachments.storage import LocalStorage
from app.bundles.imports import IMPORTS_PER_CHILD
from app.core.config import Settings
from app.core.errors import AppError
from tests.attachments.test_attachments import storage_of, unique_bytes
from tests.bundles.test_bundle_attachments import attach, entry, imported, listed
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


# --- the worker's lifetime bounds its import processes' --------------------------------------------------


def _descendants(pid: int) -> set[int]:
    """Every process below `pid`, read from /proc."""
    children: dict[int, list[int]] = defaultdict(list)
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children[todo.pop()]:
            found.add(child)
            todo.append(child)
    return found


def _running(pid: int) -> bool:
    """Whether `pid` is a process that still runs (a zombie waits only to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _import_in_transaction(engine: sa.Engine) -> bool:
    """Whether a transaction of another process is open on the database: on SQLite,
    one holding the write lock; on PostgreSQL, one idle in its transaction."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            waiting = sa.text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
            )
            return conn.execute(waiting).scalar_one() > 0
    assert engine.url.database
    with closing(sqlite3.connect(engine.url.database, timeout=0, isolation_level=None)) as conn:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return True
        conn.execute("ROLLBACK")
        return False


def _wait_for(condition: Any, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _serving(database_url: str, storage_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`caseapi serve` in a process of its own (one worker: the process itself) and its base URL."""
    port = _free_port()
    env = {**os.environ, "CASEAPI_DATABASE_URL": database_url, "CASEAPI_STORAGE_DIR": str(storage_dir)}
    command = [sys.executable, "-c", "from app.cli import main; main()", "serve", "--port", str(port)]
    worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert worker.poll() is None, "caseapi serve ended"
        try:
            return httpx.get(f"{base}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait_for(up, "caseapi serve did not start")
        yield worker, base
    finally:
        worker.kill()
        worker.wait()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_a_killed_worker_takes_its_import_processes_and_their_transactions_with_it(
    engine: sa.Engine, database_url: str, lead: Caller, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path)
    # The bundle names a file: its import waits for the storage lock in its transaction.
    bundle = {
        "bundle_version": 1,
        "case": {"reference": "KILLED-WORKER", "title": "Cut short"},
        "attachments": [entry(b"any bytes")],
    }
    left: set[int] = set()
    try:
        with storage.lock(), _serving(database_url, tmp_path) as (worker, base):

            def send() -> None:
                with contextlib.suppress(httpx.HTTPError):  # the worker dies before it answers
                    httpx.post(f"{base}/api/v1/bundles", json=bundle, headers=lead.headers, timeout=60)

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            # The worker, its fork server, and the fork server's child running the import.
            _wait_for(lambda: any(_descendants(pid) for pid in _descendants(worker.pid)), "no import process")
            _wait_for(lambda: _import_in_transaction(engine), "the import did not begin its transaction")
            left = _descendants(worker.pid)
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
            _wait_for(
                lambda: not any(_running(pid) for pid in left),
                "processes outlived their worker",
                seconds=10,
            )
            # Their transaction went with them: the write lock or the connection is free again,
            # before the storage lock is, and nothing was written.
            _wait_for(lambda: not _import_in_transaction(engine), "the transaction outlived the worker", 10)
        with engine.connect() as conn:
            assert conn.execute(sa.text('SELECT count(*) FROM "case"')).scalar_one() == 0
    finally:
        for pid in left:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


# --- on a live server: imports at once, a large one, a refused one --------------------------------------


def _post(base: str, caller: Caller, body: bytes, timeout: float, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{base}/api/v1/bundles",
        content=body,
        headers={**caller.headers, "Content-Type": "application/json", **headers},
        timeout=timeout,
    )


def _at_once(base: str, caller: Caller, bodies: list[dict[str, Any]], timeout: float) -> list[int]:
    """The status of each import, all sent at once; 0 for one not answered within `timeout`."""
    answers = [0] * len(bodies)

    def send(n: int) -> None:
        with contextlib.suppress(httpx.TimeoutException):
            answers[n] = _post(base, caller, json.dumps(bodies[n]).encode(), timeout).status_code

    senders = [threading.Thread(target=send, args=(n,)) for n in range(len(bodies))]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(timeout + 10)
    return answers


def test_imports_at_once_and_past_the_recycling_of_processes_each_answer_in_time(
    client: TestClient, live_server: str, settings: Settings, case_id: str, lead: Caller
) -> None:
    """As many imports at once as a worker takes, more than it has processes, round after round
    until every process was replaced twice: each is answered, none waits for the next one."""
    bundle = export(client, lead, case_id)
    at_once = settings.import_processes + settings.import_queue
    assert at_once > settings.import_processes
    rounds = -(-2 * IMPORTS_PER_CHILD * settings.import_processes // at_once) + 1
    deadline = 60.0
    seen: set[int] = set()
    for r in range(rounds):
        bodies = [
            {**bundle, "case": {**bundle["case"], "reference": f"ROUND-{r}-{n}"}} for n in range(at_once)
        ]
        answers = _at_once(live_server, lead, bodies, deadline)
        assert answers == [201] * at_once, f"round {r}: {answers} (0: no answer in time)"
        seen |= _children()
    # Each child lives through at least one round's end: as many were seen as served the imports.
    assert len(seen) >= -(-rounds * at_once // IMPORTS_PER_CHILD)


def _padded_bundle(size: int) -> bytes:
    """A JSON document of about `size` bytes, of many small objects (what costs to parse), that the
    import refuses for its unknown field once it has parsed it."""
    row = b'{"label": "Flat %07d"}'
    rows = b",".join(row % n for n in range(size // (len(row % 0) + 1)))
    return b'{"bundle_version": 1, "case": {"reference": "PADDED", "title": "T"}, "padding": [%s]}' % rows


def test_a_large_idempotent_import_leaves_the_event_loop_free(live_server: str, lead: Caller) -> None:
    raw = _padded_bundle(30 * 1024 * 1024)
    answer: list[httpx.Response] = []
    sender = threading.Thread(
        target=lambda: answer.append(_post(live_server, lead, raw, 300, **{"Idempotency-Key": "large-one"}))
    )
    slowest = 0.0
    probes = 0
    with httpx.Client(base_url=live_server, timeout=30) as probe:
        for _ in range(5):  # the probe's connection made, and the server warm, before the upload
            probe.get("/health")
        sender.start()
        while sender.is_alive():
            started = time.monotonic()
            assert probe.get("/health").status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            probes += 1
            time.sleep(0.02)
    sender.join()
    # The unknown field is the import's 422, once the document is parsed in the import process.
    assert answer[0].status_code == 422, answer[0].text
    assert probes > 10
    assert slowest < 0.2, f"/health waited {slowest:.3f} s"


def test_a_refused_import_answers_503_before_its_body_is_read(
    live_server: str, settings: Settings, lead: Caller
) -> None:
    """One import more than a worker takes, each with a body sent only in part: the one refused
    answers 503 at once, without its body read, hashed or held in memory; the others wait for theirs."""
    taken = settings.import_processes + settings.import_queue
    head = (
        "POST /api/v1/bundles HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {lead.key}\r\nContent-Length: {30 * 1024 * 1024}\r\n"
    )
    host, port = live_server.removeprefix("http://").split(":")
    with contextlib.ExitStack() as stack:
        imports = []
        for n in range(taken + 1):
            sock = stack.enter_context(socket.create_connection((host, int(port)), timeout=5))
            sock.sendall(f"{head}Idempotency-Key: part-{n}\r\n\r\n".encode() + b"[" + b" " * 65536)
            imports.append(sock)
        answered, _, _ = select.select(imports, [], [], 30)
        assert len(answered) == 1, "no import was refused before its body was sent"
        status, _, rest = answered[0].recv(65536).partition(b"\r\n")
        assert status == b"HTTP/1.1 503 Service Unavailable"
        assert b"urn:caseapi:problem:busy" in rest
        # The others were taken: they wait for their bodies, and answer nothing yet.
        assert select.select([s for s in imports if s is not answered[0]], [], [], 1)[0] == []
