"""The feed follower of the Python client's guide, run as written against a live server."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

from caseapi_client import Client

from tests.conftest import Caller

ROOT = Path(__file__).parents[2]


def readme_script() -> str:
    readme = (ROOT / "docs" / "guides" / "python-client.md").read_text()
    start = readme.index("cat > follow_feed.py <<'EOF'\n") + len("cat > follow_feed.py <<'EOF'\n")
    return readme[start : readme.index("\nEOF\n", start) + 1]


def test_the_feed_follower_acts_on_each_event_once(
    live_server: str, kz: Caller, kz_client: Client, tmp_path: Path
) -> None:
    (tmp_path / "follow_feed.py").write_text(readme_script())
    env = {
        **os.environ,
        "CASEAPI_URL": live_server,
        "CASEAPI_KEY": kz.key,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "client"), os.environ.get("PYTHONPATH", "")]),
    }

    def follow() -> list[str]:
        run = subprocess.run(
            [sys.executable, "follow_feed.py"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        return run.stdout.splitlines()

    reference = f"KZ-UA-2025-KYIV-{uuid.uuid4().hex[:6]}"
    case = kz_client.cases.create(reference=reference, title="Transnational fraudulent call centre in Kyiv")
    kz_client.locations.create(case, label="Search location 1", city="Kyiv", country="UA")
    first = follow()
    assert f"case.created {reference} open" in " ".join(first)
    assert any("location.created location" in line for line in first)
    assert (tmp_path / "feed.seq").read_text() == first[-1].split()[0]

    assert follow() == []  # resumed from the saved seq: nothing twice

    kz_client.cases.update(case, status="active")
    [line] = follow()
    assert line.endswith(f"case.updated {reference} active")
