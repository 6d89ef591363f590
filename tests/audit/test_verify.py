"""The keyed audit chain under attack: a database writer without the audit key
cannot add, forge or hide entries; verification over HTTP is admin only and
incremental from a MAC'ed checkpoint; the CLI checks the whole chain and a
head recorded earlier."""

import hashlib
import hmac
import json
import os
import pty
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app import cli
from app.audit import service as audit_service
from app.core.chain import GENESIS
from app.core.records import AuditEntry
from tests.conftest import Caller, new_case, run_verify

API = "/api/v1"


def _canonical(row: dict[str, Any]) -> bytes:
    """The entry's content as app.audit.service hashes it, written out here
    the way an attacker reading the source would."""
    content = {k: row[k] for k in ("seq", "at", "action", "resource_type", "purpose", "prev_hash")}
    for k in ("agency_id", "client_id", "resource_id", "case_id"):
        content[k] = str(row[k]) if row[k] is not None else None
    return json.dumps(content, sort_keys=True, separators=(",", ":")).encode()


def plain_sha256(row: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(row)).hexdigest()


def wrong_key(row: dict[str, Any]) -> str:
    return hmac.new(b"a guess at the audit key", _canonical(row), hashlib.sha256).hexdigest()


def head(engine: sa.Engine) -> tuple[int, str]:
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT seq, hash FROM audit_entry ORDER BY seq DESC LIMIT 1")).first()
    return (row.seq, row.hash) if row else (0, GENESIS)


def append_straight(engine: sa.Engine, digest: Any, actor: Caller) -> int:
    """What a hostile database writer does: an entry crediting `actor` with a
    case deletion, linked to the head and hashed as well as it can."""
    seq, prev = head(engine)
    row = {
        "seq": seq + 1,
        "at": datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
        "agency_id": actor.agency_id,
        "client_id": actor.client_id,
        "action": "case.deleted",
        "resource_type": "case",
        "resource_id": uuid.uuid4(),
        "case_id": None,
        "purpose": None,
        "prev_hash": prev,
    }
    row["hash"] = digest(row)
    with engine.begin() as conn:
        conn.execute(AuditEntry.__table__.insert(), {**row, "at": datetime(2026, 1, 1, tzinfo=UTC)})  # type: ignore[attr-defined]
    return seq + 1


def tamper(engine: sa.Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


def http_verify(client: TestClient, admin: Caller) -> dict[str, Any]:
    response = client.get(f"{API}/audit/verify", headers=admin.headers)
    assert response.status_code == 200, response.text
    return response.json()


def checkpoint(engine: sa.Engine) -> tuple[int, str] | None:
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT seq, hash FROM audit_checkpoint")).first()
    return (row.seq, row.hash) if row else None


# --- the key ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("digest", [plain_sha256, wrong_key], ids=["sha256", "wrong-key"])
def test_an_entry_written_straight_into_the_database_fails(
    client: TestClient,
    engine: sa.Engine,
    lead: Caller,
    admin: Caller,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
    digest: Any,
) -> None:
    new_case(client, lead)
    forged = append_straight(engine, digest, lead)
    verdict = http_verify(client, admin)
    assert (verdict["ok"], verdict["first_bad_seq"], verdict["entries"]) == (False, forged, forged - 1)
    code, out = run_verify(capsys)
    assert code == 1
    assert f"broken at entry {forged}" in out
    # Nor does a checkpoint move past it: it stays where the chain's first entry put it.
    assert checkpoint(engine) == (0, GENESIS)


def rewrite_unkeyed(engine: sa.Engine, alter: dict[int, dict[str, Any]] | None = None) -> None:
    """What a database administrator without the key does: every entry
    rewritten as an entry from before the key (plain SHA-256, relinked),
    with the changes in `alter` (seq: column values) made on the way."""
    table = AuditEntry.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(table).order_by(table.c.seq)).mappings()]
        prev = GENESIS
        for row in rows:
            row.update((alter or {}).get(row["seq"], {}), prev_hash=prev)
            content = {**row, "at": row["at"].isoformat()}
            assert row["detail"] is None, "entries of new_case() carry no detail"
            row["hash"] = prev = plain_sha256(content)
            conn.execute(table.update().where(table.c.seq == row["seq"]).values(**row))


def test_the_unkeyed_rewrite_attack_fails(
    client: TestClient,
    engine: sa.Engine,
    lead: Caller,
    admin: Caller,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The checkpoint row deleted, every entry rewritten as a pre-key entry,
    entry 4 altered: the chain must not verify, and no checkpoint may be
    written over the forged head."""
    for _ in range(3):
        new_case(client, lead)
    assert http_verify(client, admin)["ok"] is True
    tamper(engine, "DELETE FROM audit_checkpoint")
    rewrite_unkeyed(engine, {4: {"action": "case.deleted"}})
    code, out = run_verify(capsys)
    assert code == 1
    assert "broken at entry 1 " in out
    verdict = http_verify(client, admin)
    assert (verdict["ok"], verdict["first_bad_seq"], verdict["entries"]) == (False, 1, 0)
    assert checkpoint(engine) is None
    assert http_verify(client, admin)["ok"] is False, "nor does a second call start afresh"


def test_a_missing_checkpoint_is_a_finding(
    client: TestClient,
    engine: sa.Engine,
    lead: Caller,
    admin: Caller,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Deleted, the checkpoint would let a cut tail pass: its absence is reported, never a reset."""
    for _ in range(3):
        new_case(client, lead)
    http_verify(client, admin)
    tamper(
        engine,
        "DELETE FROM audit_checkpoint",
        "DELETE FROM audit_entry WHERE seq = (SELECT max(seq) FROM audit_entry)",
    )
    seq, hash_ = head(engine)
    verdict = http_verify(client, admin)
    assert verdict == {
        "ok": False,
        "entries": seq,
        "head": hash_,
        "first_bad_seq": None,
        "reason": "the checkpoint is missing",
    }
    assert checkpoint(engine) is None
    code, out = run_verify(capsys)
    assert code == 1
    missing = "caseapi: audit chain not verified: the checkpoint is missing"
    assert out == f"{missing} ({seq} entries verify, head {hash_})"
    assert checkpoint(engine) is None
    # The operator, having looked into it, records a new one on the host.
    assert run_reset(capsys) == (0, f"audit checkpoint recorded: {seq} entries, head {hash_}\n")
    assert checkpoint(engine) == (seq, hash_)
    assert http_verify(client, admin)["ok"] is True


def run_reset(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    try:
        cli.main(["audit", "reset-checkpoint", *args])
    except SystemExit as exc:
        return (exc.code if isinstance(exc.code, int) else 1), str(exc.code)
    return 0, capsys.readouterr().out


def test_a_chain_from_before_the_key_verifies_once_its_end_is_recorded(
    client: TestClient,
    engine: sa.Engine,
    lead: Caller,
    admin: Caller,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A chain written by an earlier version: plain SHA-256 entries, and no
    # checkpoint (the fixtures' own keyed entries make way for it).
    tamper(engine, "DELETE FROM audit_entry", "DELETE FROM audit_checkpoint")
    legacy = [append_straight(engine, plain_sha256, lead) for _ in range(3)]
    assert legacy == [1, 2, 3]
    pre_key_head = head(engine)[1]
    new_case(client, lead)  # appended keyed, after them
    # Unrecorded, the unkeyed beginning is what a forger would write.
    assert http_verify(client, admin)["first_bad_seq"] == 1
    assert run_reset(capsys)[0] == 1
    code, out = run_reset(capsys, "--pre-key-head", "f" * 64)
    assert (code, out) == (1, f"caseapi: no audit entry has the hash {'f' * 64}")
    # The operator names the pre-key head (recorded before the upgrade).
    code, out = run_reset(capsys, "--pre-key-head", pre_key_head)
    seq, hash_ = head(engine)
    assert (code, out) == (0, f"audit checkpoint recorded: {seq} entries, head {hash_}\n")
    assert http_verify(client, admin) == {
        "ok": True,
        "entries": seq,
        "head": hash_,
        "first_bad_seq": None,
        "reason": None,
    }
    assert run_verify(capsys)[0] == 0
    # After the recorded end, an unkeyed entry is a forgery.
    forged = append_straight(engine, plain_sha256, lead)
    verdict = http_verify(client, admin)
    assert (verdict["ok"], verdict["first_bad_seq"]) == (False, forged)
    tamper(engine, f"DELETE FROM audit_entry WHERE seq = {forged}")
    # The record of where the pre-key entries end is under the key too:
    # moved by the database alone, or deleted, it no longer admits them.
    tamper(engine, "UPDATE audit_checkpoint SET seq = seq + 1 WHERE id = 2")
    assert run_verify(capsys)[0] == 1
    tamper(engine, "DELETE FROM audit_checkpoint WHERE id = 2")
    code, out = run_verify(capsys)
    assert (code, "broken at entry 1 " in out) == (1, True)


@pytest.mark.parametrize("first", ["session", "hot write"])
def test_the_chain_s_first_entry_writes_its_checkpoint(
    client: TestClient, engine: sa.Engine, lead: Caller, admin: Caller, first: str
) -> None:
    """Both writing paths (app.core.journal): from the first entry on, a checkpoint exists."""
    case = new_case(client, lead)
    tamper(engine, "DELETE FROM audit_entry", "DELETE FROM audit_checkpoint")  # a chain not begun yet
    if first == "session":
        response = client.patch(
            f"{API}/cases/{case['id']}", json={"title": "T2"}, headers=lead.h(if_match='"1"')
        )
    else:
        response = client.post(
            f"{API}/cases/{case['id']}/seized-items",
            json={"category": "cash", "description": "d"},
            headers=lead.headers,
        )
    assert response.status_code in (200, 201), response.text
    assert checkpoint(engine) == (0, GENESIS)
    seq, hash_ = head(engine)
    assert seq >= 1
    assert http_verify(client, admin)["ok"] is True
    assert checkpoint(engine) == (seq, hash_)
    # Written once: a later first-entry check never moves it back.
    new_case(client, lead)
    assert checkpoint(engine) == (seq, hash_)


# --- GET /audit/verify --------------------------------------------------------------------------------


def test_verify_over_http_is_admin_only(
    client: TestClient, engine: sa.Engine, lead: Caller, outsider: Caller, admin: Caller
) -> None:
    new_case(client, lead)
    response = client.get(f"{API}/audit/verify", headers=lead.headers)  # read and write, no admin
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert client.get(f"{API}/audit/verify").status_code == 401
    assert checkpoint(engine) == (0, GENESIS), "a refused call verifies nothing"
    assert http_verify(client, outsider)["ok"] is True  # every scope, admin among them


def test_verify_starts_from_the_checkpoint_and_moves_it(
    client: TestClient,
    engine: sa.Engine,
    lead: Caller,
    admin: Caller,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for _ in range(2):
        new_case(client, lead)
    first = head(engine)
    assert http_verify(client, admin)["head"] == first[1]
    assert checkpoint(engine) == first
    # An entry before the checkpoint is altered: the next call reads only what came after.
    tamper(engine, "UPDATE audit_entry SET purpose = 'quiet' WHERE seq = 1")
    new_case(client, lead)
    second = head(engine)
    assert http_verify(client, admin) == {
        "ok": True,
        "entries": second[0],
        "head": second[1],
        "first_bad_seq": None,
        "reason": None,
    }
    assert checkpoint(engine) == second
    # ... while the whole chain, from the command line, shows it.
    code, out = run_verify(capsys)
    assert (code, "entry 1 " in out) == (1, True)


def test_the_chain_is_read_a_batch_at_a_time(
    client: TestClient,
    engine: sa.Engine,
    lead: Caller,
    admin: Caller,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A chain of several batches (keyset reads, so memory stays flat): verified across
    their boundaries, from genesis and from the checkpoint, listed whole, and a bad entry
    in a later batch named."""
    monkeypatch.setattr(audit_service, "BATCH", 2)
    for _ in range(3):
        new_case(client, lead)
    seq, hash_ = head(engine)
    assert seq > 4
    code, out = run_verify(capsys)
    assert (code, f"intact: {seq} entries, head {hash_}" in out) == (0, True)
    cli.main(["audit", "list"])
    assert [int(line.split("\t")[0]) for line in capsys.readouterr().out.splitlines()] == list(
        range(1, seq + 1)
    )
    for _ in range(2):
        new_case(client, lead)
    assert http_verify(client, admin)["entries"] == head(engine)[0]
    tamper(engine, f"UPDATE audit_entry SET purpose = 'quiet' WHERE seq = {seq}")
    code, out = run_verify(capsys)
    assert (code, f"broken at entry {seq} " in out) == (1, True)


@pytest.mark.parametrize(
    "attack",
    [
        "UPDATE audit_entry SET purpose = 'quiet' WHERE seq = (SELECT seq FROM audit_checkpoint)",
        "DELETE FROM audit_entry WHERE seq >= (SELECT seq FROM audit_checkpoint)",
    ],
    ids=["checkpoint-entry-altered", "tail-cut"],
)
def test_the_checkpoint_entry_must_keep_its_hash(
    client: TestClient, engine: sa.Engine, lead: Caller, admin: Caller, attack: str
) -> None:
    for _ in range(2):
        new_case(client, lead)
    seq, _ = head(engine)
    http_verify(client, admin)
    tamper(engine, attack)
    verdict = http_verify(client, admin)
    assert (verdict["ok"], verdict["first_bad_seq"]) == (False, seq)


def test_a_forged_checkpoint_is_ignored(
    client: TestClient, engine: sa.Engine, lead: Caller, admin: Caller
) -> None:
    """The database writer appends an entry and moves the checkpoint past it: without
    the key its MAC fails, so the walk starts at genesis and finds the entry."""
    new_case(client, lead)
    http_verify(client, admin)
    forged = append_straight(engine, plain_sha256, lead)
    seq, hash_ = head(engine)
    tamper(engine, f"UPDATE audit_checkpoint SET seq = {seq}, hash = '{hash_}'")
    verdict = http_verify(client, admin)
    assert (verdict["ok"], verdict["first_bad_seq"]) == (False, forged)


# --- caseapi audit verify -----------------------------------------------------------------------------


def test_cli_expect_head(
    client: TestClient, engine: sa.Engine, lead: Caller, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    new_case(client, lead)
    recorded = head(engine)[1]
    new_case(client, lead)
    assert run_verify(capsys, "--expect-head", recorded)[0] == 0
    code, out = run_verify(capsys, "--expect-head", "f" * 64)
    assert code == 1
    assert f"head {'f' * 64} is not in the audit chain" in out
    # History cut from the recorded head on, and the checkpoint with it: a finding,
    # and once the operator has reset the checkpoint, the recorded head is still gone.
    tamper(engine, "DELETE FROM audit_checkpoint", "DELETE FROM audit_entry WHERE seq >= 3")
    assert run_verify(capsys)[0] == 1
    assert run_reset(capsys)[0] == 0
    assert run_verify(capsys)[0] == 0
    code, out = run_verify(capsys, "--expect-head", recorded)
    assert code == 1
    assert recorded in out


def _cli_process(database_url: str, **stderr: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CASEAPI_DATABASE_URL": database_url}
    command = [sys.executable, "-c", "from app.cli import main; main()", "audit", "verify"]
    return subprocess.run(
        command, env=env, stdout=subprocess.PIPE, text=True, timeout=60, check=False, **stderr
    )


def test_cli_shows_progress_on_a_terminal_only(
    client: TestClient, engine: sa.Engine, lead: Caller, database_url: str
) -> None:
    for _ in range(3):
        new_case(client, lead)
    piped = _cli_process(database_url, stderr=subprocess.PIPE)
    assert piped.returncode == 0
    assert piped.stderr == ""
    controller, terminal = pty.openpty()
    try:
        on_tty = _cli_process(database_url, stderr=terminal)
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal side is closed: all read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
    assert on_tty.returncode == 0
    assert f"audit chain intact: {head(engine)[0]} entries" in on_tty.stdout
    assert b"verifying the audit chain: 100%" in shown


def test_a_forged_checkpoint_is_a_finding_until_the_operator_resets_it(
    client: TestClient,
    engine: sa.Engine,
    lead: Caller,
    admin: Caller,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A checkpoint whose MAC does not hold was written without the key: the
    chain is reported, and nothing over HTTP replaces the row."""
    new_case(client, lead)
    http_verify(client, admin)
    tamper(engine, "UPDATE audit_checkpoint SET seq = 1000000")
    verdict = http_verify(client, admin)
    assert (verdict["ok"], verdict["reason"]) == (False, "the checkpoint is not written with the audit key")
    assert checkpoint(engine) == (1000000, head(engine)[1])
    assert run_verify(capsys)[0] == 1
    assert run_reset(capsys)[0] == 0
    assert checkpoint(engine) == head(engine)
    assert http_verify(client, admin)["ok"] is True
