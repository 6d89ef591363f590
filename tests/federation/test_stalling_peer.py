"""A hostile peer that never finishes acknowledging a delivery (a byte of its
answer now and then, each well within a read timeout) holds back its own
mirrors only: the home's other peers go on receiving theirs."""

import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from app.core.config import Settings
from app.federation.identity import identity
from tests.federation.conftest import Instance
from tests.federation.test_mirrors import Api, a_case, eventually, status_of

EVIL = "evil.caseapi"


@pytest.fixture
def stalling_peer(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A peer (its URL, thumbprint and one agency's id) that answers every delivery by a trickle."""
    me = identity(Settings(instance_id=EVIL, instance_key_file=tmp_path / "evil.key"))
    agency_id = str(uuid.uuid4())
    now = "2026-01-01T00:00:00Z"
    agency = {"id": agency_id, "code": "EVIL-POL", "name": "Evil police", "country": "GB", "kind": "police"}
    agency |= {"parent_id": None, "home_instance": None, "version": 1, "created_at": now, "updated_at": now}
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def answer(self, document: object) -> None:
            body = orjson.dumps(document)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.endswith("/federation/instance"):
                self.answer({"instance_id": EVIL, "public_key": me.jwk, "thumbprint": me.thumbprint})
            else:
                self.answer({"instance_id": EVIL, "items": [agency]})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            while not stop.wait(0.5):
                try:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                except OSError:
                    return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", me.thumbprint, agency_id
    stop.set()
    server.shutdown()
    server.server_close()


@pytest.mark.fresh_instances
def test_a_peer_that_never_acknowledges_holds_back_only_its_own_mirrors(
    kz_ua: tuple[Instance, Instance], stalling_peer: tuple[str, str, str]
) -> None:
    kz_i, ua_i = kz_ua
    url, thumbprint, evil_agency = stalling_peer
    assert kz_i.command("peer", "add", "--url", url, "--thumbprint", thumbprint)[-1] == EVIL
    kz, ua = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE")
    # A case the hostile peer's agency takes part in: its delivery starts, and never ends.
    hostile = a_case(kz, reference="KZ-EVIL")
    kz.ok("POST", f"/cases/{hostile['id']}/participants", json={"agency_id": evil_agency, "role": "partner"})
    time.sleep(2)
    # Ukraine's instance still receives a case its agency joins.
    case = a_case(kz, reference="KZ-AFTER")
    kz.ok(
        "POST",
        f"/cases/{case['id']}/participants",
        json={"agency_id": kz.agency_id("UA-LE"), "role": "partner"},
    )
    eventually(lambda: status_of(ua, f"/cases/{case['id']}") == 200, timeout=30)
