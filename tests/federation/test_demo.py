"""`caseapi demo --federation`: Kazakhstan's and Ukraine's instances from one
command, the Kyiv case at its lead's home and mirrored on the other by
delivery; stopped by a Ctrl-C, and started again from the same directory."""

import fcntl
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from app import cli, supervisor
from tests.federation.conftest import CLI, ROOT

API = "/api/v1"
KEY = re.compile(r"^  (\S+)\s+(cak_\S+)$")
TITLE = re.compile(r"^(\S+\.caseapi): \w+'s instance")
STARTED = 120.0  # seconds: migrating, seeding, two servers, peering and the first delivery


@dataclass
class Demo:
    process: subprocess.Popen[str]
    urls: dict[str, str] = field(default_factory=dict)  # instance id -> base URL
    keys: dict[str, str] = field(default_factory=dict)  # agency code -> demo key
    output: list[str] = field(default_factory=list)

    def get(self, instance: str, code: str, path: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[code]}"}
        return httpx.get(f"{self.urls[instance]}{API}{path}", headers=headers, timeout=30)

    def ok(self, instance: str, code: str, path: str) -> Any:
        answer = self.get(instance, code, path)
        assert answer.status_code == 200, (path, answer.status_code, answer.text)
        return answer.json()

    def stop(self) -> None:
        """A Ctrl-C, as the demo asks for: both servers stop and it exits 0."""
        self.process.send_signal(signal.SIGINT)
        assert self.process.wait(60) == 0, "".join(self.output)
        for url in self.urls.values():
            with pytest.raises(httpx.TransportError):
                httpx.get(f"{url}/health", timeout=5)


def _lines(stream: IO[str], into: "queue.Queue[str | None]") -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def start(directory: Path) -> Demo:
    """The demo on free ports, its instances' URLs and keys read from what it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEAPI_")} | {
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "CASEAPI_WEBHOOK_DELIVERY": "false",
    }
    process = subprocess.Popen(
        [*CLI, "demo", "--federation", "--port", "0", "--dir", "demo"],
        cwd=directory,
        env=env,
        stdout=subprocess.PIPE,
        stderr=(directory / "demo.log").open("a"),
        text=True,
    )
    demo = Demo(process)
    lines: queue.Queue[str | None] = queue.Queue()
    assert process.stdout is not None
    threading.Thread(target=_lines, args=(process.stdout, lines), daemon=True).start()
    deadline = time.monotonic() + STARTED
    instance = None
    try:
        while True:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            assert line is not None, "the demo stopped:\n" + "".join(demo.output)
            demo.output.append(line)
            if title := TITLE.match(line):
                instance = title.group(1)
            elif key := KEY.match(line.rstrip("\n")):
                demo.keys[key.group(1)] = key.group(2)
            elif line.startswith("explorer: ") and instance:
                demo.urls[instance] = line.split()[1].removesuffix("/docs")
            elif line.startswith("serving "):
                return demo
    except BaseException:
        process.kill()
        process.wait()
        raise


def test_the_federation_demo_mirrors_the_kyiv_case_and_runs_again(tmp_path: Path) -> None:
    demo = start(tmp_path)
    try:
        # Each instance has keys for its own agencies only, and knows the other's.
        assert set(demo.urls) == {"kz.caseapi", "ua.caseapi"}
        assert set(demo.keys) == {"KZ-MVD", "KZ-MVD-CYBER", "UA-LE"}
        assert demo.get("kz.caseapi", "UA-LE", "/cases").status_code == 401
        agencies = demo.ok("ua.caseapi", "UA-LE", "/agencies?limit=200")["items"]
        assert {a["code"]: a["home_instance"] for a in agencies} == {
            "UA-LE": None,
            "KZ-MVD": "kz.caseapi",
            "KZ-MVD-CYBER": "kz.caseapi",
        }
        [case] = demo.ok("kz.caseapi", "KZ-MVD", "/cases?q=Kyiv")["items"]
        assert case["home_instance"] is None and case["reference"] == "KZ-UA-2025-KYIV-CALL-CENTRE"

        # Ukraine's instance holds it as a mirror (its home is Kazakhstan's): same ids and versions.
        mirrored = mirror_of(demo, case["id"])
        assert (mirrored["id"], mirrored["version"]) == (case["id"], case["version"])
        assert mirrored["home_instance"] == "kz.caseapi"
        items = {
            instance: [
                (i["id"], i["version"], i["quantity"])
                for i in demo.ok(instance, code, f"/cases/{case['id']}/seized-items")["items"]
            ]
            for instance, code in (("kz.caseapi", "KZ-MVD"), ("ua.caseapi", "UA-LE"))
        }
        assert items["kz.caseapi"] == items["ua.caseapi"] and len(items["kz.caseapi"]) == 4
        # Personal data stays home: the case does not share it.
        [detainee, *_] = demo.ok("ua.caseapi", "UA-LE", f"/cases/{case['id']}/detainees?limit=1")["items"]
        assert detainee["personal_data_redacted"] is True
        peers = demo.ok("kz.caseapi", "KZ-MVD", "/federation/peers")["items"]
        assert [(p["instance_id"], p["pending"], p["last_error"]) for p in peers] == [("ua.caseapi", 0, None)]
    finally:
        demo.stop()

    # Again, from the same directory: nothing seeded twice, new keys, the mirror still there.
    old_keys = demo.keys
    again = start(tmp_path)
    try:
        assert "seed already loaded: nothing changed" in "".join(again.output)
        assert set(again.keys) == set(old_keys) and not set(again.keys.values()) & set(old_keys.values())
        again.keys["OLD-UA-LE"] = old_keys["UA-LE"]
        assert again.get("ua.caseapi", "OLD-UA-LE", "/cases").status_code == 401
        [home] = again.ok("kz.caseapi", "KZ-MVD", "/cases?q=Kyiv")["items"]
        assert (home["id"], home["version"]) == (case["id"], case["version"])
        mirrored = mirror_of(again, case["id"])
        assert (mirrored["id"], mirrored["version"]) == (case["id"], case["version"])
        assert [c["id"] for c in again.ok("ua.caseapi", "UA-LE", "/cases")["items"]] == [case["id"]]
    finally:
        again.stop()


def mirror_of(demo: Demo, case_id: str) -> Any:
    """The case as Ukraine's instance holds it, once delivered."""
    deadline = time.monotonic() + 30
    while (answer := demo.get("ua.caseapi", "UA-LE", f"/cases/{case_id}")).status_code != 200:
        assert answer.status_code == 404 and time.monotonic() < deadline, answer.text
        time.sleep(0.2)
    return answer.json()


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command in process: it must fail with one line; that line."""
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert isinstance(exc.value.code, str), capsys.readouterr()
    return exc.value.code


def test_a_busy_port_or_a_running_demo_leaves_the_directory_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(supervisor, "spawn", lambda *args, **kwargs: pytest.fail("served"))
    directory = tmp_path / "demo"
    # Ukraine's port (the next one) is taken: nothing is made, not even the directory.
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1] - 1
        reason = _refused(["demo", "--federation", "--port", str(port), "--dir", str(directory)], capsys)
    assert "port in use" in reason and not directory.exists()
    # Another federation demo serves from the directory: this one stops before any database.
    directory.mkdir()
    with (directory / "demo.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        reason = _refused(["demo", "--federation", "--port", "0", "--dir", str(directory)], capsys)
    assert "another `caseapi demo --federation` serves from" in reason
    assert sorted(p.name for p in directory.iterdir()) == ["demo.lock"]
