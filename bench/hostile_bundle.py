"""What a hostile bundle costs a server worker: its peak RSS and the size of the 422.

    python -m bench.hostile_bundle

Serves caseapi (`caseapi serve --workers 1`) on a fresh SQLite file, then
sends POST /bundles the bundles an attacker with a valid key would: a
bundle as large as CASEAPI_MAX_BUNDLE_BYTES allows made of unknown keys in
one object, and one of locations each carrying 20 unknown fields (one error
per field). Reports the worker's peak resident set (VmHWM) after each, the
status and the size of the answer.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from app.auth.models import Scope
from app.core import migrate
from app.core.db import create_db_engine
from bench import agency_with_key
from bench.run import free_port

LIMIT = 32 * 1024 * 1024


def unknown_keys() -> bytes:
    """One object of about LIMIT bytes of unknown keys."""
    keys = (LIMIT - 200) // len('"k000000000":0,')
    case = {"reference": "R", "title": "T", **{f"k{n:09d}": 0 for n in range(keys)}}
    return json.dumps({"bundle_version": 1, "case": case}, separators=(",", ":")).encode()


def erring_rows() -> bytes:
    """As many locations as fit, each with 20 unknown fields: one error per field."""
    row = {"id": str(uuid.uuid4()), "label": "L", **{f"x{k}": 0 for k in range(20)}}
    rows = LIMIT // (len(json.dumps(row)) + 2) - 10
    document = {"bundle_version": 1, "case": {"reference": "R", "title": "T"}, "locations": [row] * rows}
    return json.dumps(document).encode()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/hostile.db"
        engine = create_db_engine(url)
        with engine.begin() as conn:
            migrate.upgrade(conn)
        engine.dispose()
        _, key = agency_with_key(url, "HOSTILE", "Hostile", [Scope.read, Scope.write])
        port = free_port()
        env = {**os.environ, "CASEAPI_DATABASE_URL": url, "CASEAPI_KEY_FILE": f"{tmp}/key"}
        serve = ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        server = subprocess.Popen(
            [sys.executable, "-c", "import sys; from app.cli import main; main(sys.argv[1:])", *serve],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
                for _ in range(100):
                    try:
                        if http.get("/health").status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.1)
                print(f"worker at rest: peak RSS {peak_rss_mib(server.pid):.0f} MiB")
                headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
                for name, build in (("unknown keys", unknown_keys), ("erring rows", erring_rows)):
                    raw = build()
                    started = time.perf_counter()
                    response = http.post("/api/v1/bundles", content=raw, headers=headers)
                    took = time.perf_counter() - started
                    errors = response.json().get("error_count")
                    print(
                        f"{name}: {len(raw) / 2**20:.1f} MiB in -> {response.status_code}, "
                        f"{len(response.content)} bytes out ({errors} errors) in {took:.1f} s; "
                        f"worker peak RSS {peak_rss_mib(server.pid):.0f} MiB"
                    )
        finally:
            server.terminate()
            server.wait(15)


if __name__ == "__main__":
    main()
