"""`caseapi storage sweep`, run in-process against the test database and files;
and the mark that ties a storage directory to one database."""

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app import cli
from app.attachments.storage import LocalStorage, StorageOfAnotherDatabase
from app.core.config import Settings
from app.main import create_app
from tests.attachments.conftest import API, attachment_rows, storage_of, unique_bytes, upload
from tests.conftest import Caller


@pytest.fixture
def cli_on(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, Path], None]:
    """Point the in-process `caseapi` at a database and a storage directory."""

    def point(database_url: str, storage_dir: Path) -> None:
        monkeypatch.setenv("CASEAPI_DATABASE_URL", database_url)
        monkeypatch.setenv("CASEAPI_STORAGE_DIR", str(storage_dir))

    return point


def run(*args: str) -> tuple[int, str]:
    """`caseapi ARGS` in-process: its exit status and its one-line failure (or 0 and "")."""
    try:
        cli.main(list(args))
    except SystemExit as exc:
        return (exc.code if isinstance(exc.code, int) else 1), str(exc.code)
    return 0, ""


def test_a_sweep_only_lists_and_apply_removes(
    engine: sa.Engine,
    tmp_path: Path,
    database_url: str,
    cli_on: Callable[[str, Path], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    storage = LocalStorage(tmp_path)
    cli_on(database_url, storage.root)
    orphan = storage.staging.writer()
    orphan.write(b"no row names this file")
    sealed = orphan.seal()
    storage.put(sealed.sha256, sealed.path)
    # What an upload leaves when its process dies while receiving.
    storage.staging.root.mkdir(parents=True, exist_ok=True)
    abandoned = storage.staging.root / "0123456789abcdef.part"
    abandoned.write_bytes(b"half a file")

    assert run("storage", "sweep", "--older-than", "0") == (0, "")
    listed = capsys.readouterr().out.splitlines()
    assert listed == [
        f"would remove staging file: {abandoned.name}",
        f"would remove unreferenced file: {sealed.sha256}",
        "dry run, nothing changed: 0 committed uploads would move into place, 1 staging files and "
        "1 unreferenced files would remove; --apply does it",
    ]
    assert storage.exists(sealed.sha256) and abandoned.exists()

    assert run("storage", "sweep", "--older-than", "0", "--apply") == (0, "")
    done = capsys.readouterr().out.splitlines()
    assert done[:2] == [
        f"removed staging file: {abandoned.name}",
        f"removed unreferenced file: {sealed.sha256}",
    ]
    assert not storage.exists(sealed.sha256)
    assert not abandoned.exists()


@pytest.fixture
def other_database(blank_database_url: str, cli_on: Callable[[str, Path], None], tmp_path: Path) -> str:
    """A second database, migrated, that has never stored a file."""
    cli_on(blank_database_url, tmp_path / "unused")
    assert run("migrate") == (0, "")
    return blank_database_url


@pytest.fixture
def abandoned(application: FastAPI) -> Iterator[Path]:
    """What an interrupted upload left in the app's staging folder, which serves every
    test: removed after this one."""
    root = storage_of(application).staging.root
    root.mkdir(parents=True, exist_ok=True)
    path = root / "feedfacefeedface.part"
    path.write_bytes(b"half a file")
    yield path
    path.unlink(missing_ok=True)


def test_a_sweep_or_a_server_on_another_databases_files_refuses_and_removes_nothing(
    client: TestClient,
    application: FastAPI,
    engine: sa.Engine,
    settings: Settings,
    case: dict[str, Any],
    lead: Caller,
    abandoned: Path,
    other_database: str,
    cli_on: Callable[[str, Path], None],
) -> None:
    # This database's files: an attachment, and what an interrupted upload left.
    storage = storage_of(application)
    kept = upload(client, lead, f"{API}/cases/{case['id']}/attachments", unique_bytes()).json()["sha256"]
    mark = storage.owner()
    assert mark is not None

    # The other database's sweep, pointed at them by mistake (or on purpose).
    cli_on(other_database, storage.root)
    for args in (["--older-than", "0"], ["--older-than", "0", "--apply"]):
        status, message = run("storage", "sweep", *args)
        assert status == 1
        assert "\n" not in message and "belongs to another database" in message, message
    assert storage.exists(kept) and abandoned.exists()
    assert storage.owner() == mark

    # Its server refuses to start on them: the app, and `caseapi serve` with one line and exit 1.
    with pytest.raises(StorageOfAnotherDatabase):
        create_app(settings.model_copy(update={"database_url": other_database}))
    env = {**os.environ, "CASEAPI_DATABASE_URL": other_database, "CASEAPI_STORAGE_DIR": str(storage.root)}
    served = subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert served.returncode == 1, served.stderr
    assert served.stderr.strip().startswith("caseapi: storage directory"), served.stderr
    assert len(served.stderr.strip().splitlines()) == 1, served.stderr
    assert storage.exists(kept) and abandoned.exists()
    assert attachment_rows(engine) == 1


def test_an_upload_into_another_databases_directory_is_refused(
    app_with: Callable[..., AbstractContextManager[TestClient]],
    engine: sa.Engine,
    tmp_path: Path,
    case: dict[str, Any],
    lead: Caller,
) -> None:
    """Marked after the server started (or while its database did not answer): the first use checks."""
    with app_with(storage_dir=tmp_path) as misplaced:
        (tmp_path / "caseapi-database-id").write_text("00000000-0000-4000-8000-000000000000\n")
        response = upload(misplaced, lead, f"{API}/cases/{case['id']}/attachments", unique_bytes())
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert attachment_rows(engine) == 0
    assert not (tmp_path / "staging").exists() or list((tmp_path / "staging").iterdir()) == []
