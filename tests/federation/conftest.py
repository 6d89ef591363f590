"""Real instances for federation tests: each a `caseapi serve` process with a
database and a working directory of its own (where its instance key is
made), run and peered through the CLI as an operator would.

The pair most tests use, Kazakhstan's and Ukraine's (`kz_ua`), is made once
per backend and shared by the tests of this package: each test makes cases
of its own in it. A test that changes what the others stand on (stops or
restarts an instance, adds or removes a peer, adds or changes an agency,
signs deliveries as a home itself) is marked `fresh_instances` and gets a
pair of its own. After each test the shared pair is checked: a test that
changed its processes, peers or agencies fails, and the pair is made again
for the next one.
"""

import contextlib
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import httpx
import pytest
import sqlalchemy as sa

from app import cli
from app.core.config import Settings
from app.federation.identity import Identity, identity
from tests.conftest import POSTGRES_URL, _fresh_postgres

ROOT = Path(__file__).parents[2]
CLI = [sys.executable, "-c", "import sys; from app.cli import main; main(sys.argv[1:])"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "fresh_instances: the test gets a `kz_ua` pair of its own (it stops, restarts or re-peers "
        "the instances, or changes their agencies), not the one the package shares",
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Instance:
    instance_id: str
    home: Path
    env: dict[str, str]
    url: str = ""
    process: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The command as its operator runs it: a process of its own, in the instance's directory."""
        done = subprocess.run(
            [*CLI, *args], env=self.env, cwd=self.home, capture_output=True, text=True, timeout=60
        )
        if check:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    def command(self, *args: str) -> list[str]:
        """The same command run in this process (app.cli.main, with the instance's
        environment and directory), which must succeed; its output lines. For
        what a test sets up or reads rather than what it checks of the CLI
        itself: it spares a second of imports per command."""
        out, err = io.StringIO(), io.StringIO()
        with (
            mock.patch.dict(os.environ, self.env, clear=True),
            contextlib.chdir(self.home),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            try:
                cli.main(list(args))
            except SystemExit as exc:
                raise AssertionError((args, exc.code, out.getvalue(), err.getvalue())) from None
        return out.getvalue().splitlines()

    def start(self) -> None:
        """Start it (see serve()) without waiting for it to be ready."""
        port = int(self.url.rsplit(":", 1)[1]) if self.url else free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [*CLI, "serve", "--port", str(port)],
            env=self.env,
            cwd=self.home,
            stdout=subprocess.DEVNULL,
            # Kept in the instance's directory: what to read when a test fails.
            stderr=(self.home / "serve.log").open("ab"),
        )

    def ready(self) -> None:
        """Wait until the started instance answers it is ready."""
        assert self.process is not None
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.process.poll() is None and time.monotonic() < deadline, "the instance did not start"
            time.sleep(0.05)

    def serve(self) -> None:
        """Start it; started again, it keeps its address (its peers know it by it)."""
        self.start()
        self.ready()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)
            self.process = None

    @property
    def identity(self) -> Identity:
        """The instance's own key, as its files hold it (for tests that sign as it)."""
        return identity(
            Settings(instance_id=self.instance_id, instance_key_file=self.home / "caseapi-instance.key")
        )

    @property
    def thumbprint(self) -> str:
        """What `caseapi instance show` prints last (run in this process)."""
        return self.command("instance", "show")[-1]


class Instances:
    """A factory of migrated instances on one backend, in one directory; close() stops them all."""

    def __init__(self, backend: str, directory: Path) -> None:
        self.backend = backend
        self.directory = directory
        self.made: list[Instance] = []
        self.databases: list[tuple[sa.Engine, str]] = []

    def __call__(self, instance_id: str) -> Instance:
        home = self.directory / instance_id
        home.mkdir()
        if self.backend == "sqlite":
            url = f"sqlite:///{home / 'caseapi.db'}"
        else:
            assert POSTGRES_URL
            url, admin, name = _fresh_postgres(POSTGRES_URL)
            self.databases.append((admin, name))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "CASEAPI_DATABASE_URL": url,
            "CASEAPI_INSTANCE_ID": instance_id,
            "CASEAPI_STORAGE_DIR": str(home / "files"),
            "CASEAPI_WEBHOOK_DELIVERY": "false",
            # Tests of the periodic refresh of peers' agencies set their own period; the others
            # add peers again to refresh them, and would race it.
            "CASEAPI_FEDERATION_DIRECTORY_SECONDS": "3600",
        }
        instance = Instance(instance_id, home, env)
        instance.command("migrate")
        self.made.append(instance)
        return instance

    def close(self) -> None:
        stop(self.made)
        for admin, name in self.databases:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()
        self.made, self.databases = [], []


def stop(instances: list[Instance]) -> None:
    """Stop them all at once: each is asked to stop before any is waited for."""
    running = [i for i in instances if i.process is not None]
    for instance in running:
        assert instance.process is not None
        instance.process.terminate()
    for instance in running:
        assert instance.process is not None
        instance.process.wait(30)
        instance.process = None


@pytest.fixture(scope="package", params=["sqlite", "postgresql"])
def federation_backend(request: pytest.FixtureRequest) -> str:
    """The database the instances run on; the tests of each run together."""
    if request.param == "postgresql" and not POSTGRES_URL:
        pytest.skip("CASEAPI_TEST_POSTGRES_URL not set")
    return str(request.param)


@pytest.fixture
def instances(federation_backend: str, tmp_path: Path) -> Iterator[Callable[[str], Instance]]:
    """A factory of migrated instances on one backend, all stopped at the end."""
    made = Instances(federation_backend, tmp_path)
    yield made
    made.close()


def peer(a: Instance, b: Instance) -> list[str]:
    """`caseapi peer add` on `a` for `b`, with the thumbprint `b`'s operator shows; its output lines."""
    lines = a.cli("peer", "add", "--url", b.url, "--thumbprint", b.thumbprint).stdout.splitlines()
    assert lines[-1] == b.instance_id
    return lines


def peered(a: Instance, b: Instance) -> list[str]:
    """peer(), the command run in this process."""
    lines = a.command("peer", "add", "--url", b.url, "--thumbprint", b.thumbprint)
    assert lines[-1] == b.instance_id
    return lines


def make_kz_ua(instances: Callable[[str], Instance]) -> tuple[Instance, Instance]:
    """Kazakhstan's and Ukraine's instances, each hosting one agency, peered both ways
    (the commands run in this process; tests/federation/test_peers.py peers a pair
    with the CLI's own processes, as its operators do)."""
    kz = instances("kz.caseapi")
    kz.command(
        "agency", "create", "--code", "KZ-MVD", "--name", "Ministry of Internal Affairs", "--kind", "ministry"
    )
    kz.start()  # it starts while Ukraine's is made
    ua = instances("ua.caseapi")
    ua.command(
        "agency", "create", "--code", "UA-LE", "--name", "Law enforcement of Ukraine", "--kind", "police"
    )
    ua.start()
    kz.ready()
    ua.ready()
    # Nothing flows before both have added each other: KZ learns UA's agencies when it adds UA again.
    assert "follow once it has added kz.caseapi" in peered(kz, ua)[1]
    assert "agencies held here: 1" in peered(ua, kz)[1]
    assert "agencies held here: 1" in peered(kz, ua)[1]
    return kz, ua


@dataclass
class Shared:
    """The package's KZ/UA pair on one backend, made when first asked for."""

    backend: str
    directory: Path
    instances: Instances | None = None
    pair: tuple[Instance, Instance] | None = None
    made: int = 0
    last: list[object] | None = None  # its state() after the last test

    def get(self) -> tuple[Instance, Instance]:
        if self.pair is None:
            self.made += 1
            self.instances = Instances(self.backend, self.directory / f"pair-{self.made}")
            self.instances.directory.mkdir()
            self.pair = make_kz_ua(self.instances)
            self.last = self.state()
        return self.pair

    def state(self) -> list[object]:
        """What the tests sharing the pair stand on: its processes, peers and agencies."""
        assert self.pair is not None
        return [
            (
                instance.process and instance.process.pid,
                instance.process and instance.process.poll(),
                [line.split("\t")[:3] for line in instance.command("peer", "list")],
                instance.command("agency", "list"),
            )
            for instance in self.pair
        ]

    def close(self) -> None:
        if self.instances is not None:
            self.instances.close()
        self.instances = self.pair = self.last = None


@pytest.fixture(scope="package")
def _shared_kz_ua(federation_backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    shared = Shared(federation_backend, tmp_path_factory.mktemp("kz_ua"))
    yield shared
    shared.close()


@pytest.fixture
def kz_ua(federation_backend: str, request: pytest.FixtureRequest) -> Iterator[tuple[Instance, Instance]]:
    """Kazakhstan's and Ukraine's instances, each hosting one agency, peered both ways."""
    if request.node.get_closest_marker("fresh_instances"):
        yield make_kz_ua(request.getfixturevalue("instances"))
        return
    shared: Shared = request.getfixturevalue("_shared_kz_ua")
    pair = shared.get()
    before = shared.last
    yield pair
    after = shared.last = shared.state()
    if after != before:
        shared.close()  # the next test gets a pair made again
        pytest.fail(
            "the test changed the shared kz_ua pair (its processes, peers or agencies): "
            f"mark it fresh_instances\nbefore: {before}\nafter:  {after}"
        )
