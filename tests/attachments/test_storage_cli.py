"""`caseapi storage sweep`, run in-process against the test database and files."""

from pathlib import Path

import pytest
import sqlalchemy as sa

from app import cli
from app.attachments.storage import LocalStorage
from app.config import get_settings


def test_storage_sweep_removes_what_no_row_names(
    engine: sa.Engine,
    tmp_path: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    storage = LocalStorage(tmp_path)
    monkeypatch.setenv("CASEAPI_DATABASE_URL", database_url)
    monkeypatch.setenv("CASEAPI_STORAGE_DIR", str(storage.root))
    get_settings.cache_clear()
    try:
        orphan = storage.staging.writer()
        orphan.write(b"no row names this file")
        sealed = orphan.seal()
        storage.put(sealed.sha256, sealed.path)
        # What an upload leaves when its process dies while receiving.
        storage.staging.root.mkdir(parents=True, exist_ok=True)
        abandoned = storage.staging.root / "0123456789abcdef.part"
        abandoned.write_bytes(b"half a file")

        cli.main(["storage", "sweep", "--older-than", "0"])
        out = capsys.readouterr().out
    finally:
        get_settings.cache_clear()
    assert "1 staging files and 1 unreferenced files removed" in out, out
    assert not storage.exists(sealed.sha256)
    assert not abandoned.exists()
