"""`caseapi ... | head -1` (contract §6b): a reader that stops early ends the command
quietly, as it ends a POSIX tool, with no traceback."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

ROOT = Path(__file__).resolve().parents[1]
# More than a pipe holds (64 KiB): the command is still writing when `head` leaves.
ROWS = 2000


@pytest.fixture
def many_rows(engine: sa.Engine) -> None:
    agency, api_client = SQLModel.metadata.tables["agency"], SQLModel.metadata.tables["api_client"]
    agency_ids = [uuid.uuid4() for _ in range(ROWS)]
    with engine.begin() as conn:
        conn.execute(
            agency.insert(),
            [
                {
                    "id": id_,
                    "code": f"PIPE-{n:05}",
                    "name": f"Agency number {n} " + "x" * 40,
                    "kind": "police",
                }
                for n, id_ in enumerate(agency_ids)
            ],
        )
        conn.execute(
            api_client.insert(),
            [
                {
                    "agency_id": id_,
                    "name": f"tool {n} " + "y" * 40,
                    "key_hash": f"{n:064x}",
                    "scopes": ["read"],
                }
                for n, id_ in enumerate(agency_ids)
            ],
        )


@pytest.mark.parametrize("command", ["client list", "agency list"])
@pytest.mark.usefixtures("many_rows")
def test_piping_into_head_is_quiet(database_url: str, command: str) -> None:
    program = f"{sys.executable} -c 'import sys; from app.cli import main; main(sys.argv[1:])' {command}"
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {program} | head -1"],
        env={**os.environ, "CASEAPI_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1 and "\t" in result.stdout
    assert result.returncode == 0  # the reader had what it wanted, even under pipefail
