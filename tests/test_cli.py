"""The `caseapi` command, run in-process against the test database."""

import argparse
import os
import socket
import sys
import tomllib
import uuid
from collections.abc import Callable, Iterator, Sequence

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app import cli
from app.agencies.models import Agency
from app.core import secrets
from app.core.config import PROJECT_ROOT, Settings
from app.core.db import new_row, table_of
from app.core.records import AuditEntry
from app.webhooks.models import WebhookSubscription
from tests.conftest import Caller, new_case, transaction


@pytest.fixture
def run(
    database_url: str, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    monkeypatch.setenv("CASEAPI_DATABASE_URL", database_url)

    def invoke(*args: str) -> tuple[int, str, str]:
        try:
            cli.main(list(args))
            code = 0
        except SystemExit as exc:
            # sys.exit("message") prints the message and exits with status 1.
            code = 1 if isinstance(exc.code, str) else int(exc.code or 0)
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def test_migrate_seed_and_clients(run, client: TestClient) -> None:  # type: ignore[no-untyped-def]
    assert run("migrate")[0] == 0
    code, out, _ = run("seed")
    assert code == 0 and "rows added" in out
    assert "nothing changed" in run("seed")[1]

    code, out, _ = run("client", "create", "--agency", "KZ-MVD", "--name", "tool", "--scope", "read")
    assert code == 0
    key = out.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/v1/cases", headers=headers).status_code == 200
    # read is the only scope: writing is refused
    assert (
        client.post("/api/v1/cases", json={"reference": "R", "title": "T"}, headers=headers).status_code
        == 403
    )

    code, out, _ = run("client", "list")
    [line] = [row for row in out.splitlines() if "\ttool\t" in row]
    client_id, agency, name, scopes, state = line.split("\t")
    assert (agency, name, scopes, state) == ("KZ-MVD", "tool", "read", "active")

    assert run("client", "revoke", key)[0] == 0
    assert client.get("/api/v1/cases", headers=headers).status_code == 401
    assert "revoked" in run("client", "list")[1]
    assert run("client", "revoke", client_id)[0] == 0  # by id, already revoked: still fine

    code, _, err = run("client", "create", "--agency", "NOPE", "--name", "x")
    assert code == 1 and err.strip().count("\n") == 0 and "NOPE" in err
    assert run("client", "revoke", "00000000-0000-0000-0000-000000000000")[0] == 1
    code, out, _ = run("audit", "verify")
    assert code == 0 and "intact" in out


def _bound_port(fd: int) -> int:
    with socket.socket(fileno=os.dup(fd)) as sock:
        return int(sock.getsockname()[1])


def test_demo_prints_a_working_key_per_agency(run, client: TestClient, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    served: list[tuple[str, int]] = []
    second_demo: list[tuple[int, str, str]] = []

    def serve(_: Settings, host: str, port: int, workers: int, fd: int | None = None) -> None:
        assert fd is not None and workers == 1
        served.append((host, _bound_port(fd)))
        if len(served) == 1:
            # While the first demo serves, a second one is started on its port.
            first_output.append(capsys.readouterr().out)
            second_demo.append(run("demo", "--port", str(_bound_port(fd))))

    first_output: list[str] = []
    monkeypatch.setattr(cli, "_serve", serve)
    code, _, _ = run("demo", "--port", "0")
    assert code == 0
    [(host, port)] = served
    assert host == "127.0.0.1" and port > 0
    [out] = first_output
    assert f"http://127.0.0.1:{port}/docs" in out
    keys = dict(line.split() for line in out.splitlines() if line.startswith("  "))
    assert len(keys) == 18 and "KZ-MVD" in keys and "UA-LE" in keys
    kz = {"Authorization": f"Bearer {keys['KZ-MVD']}"}
    [case] = client.get("/api/v1/cases", headers=kz).json()["items"]
    assert case["reference"] == "KZ-UA-2025-KYIV-CALL-CENTRE"

    # The second demo failed on the busy port before anything else: the
    # first one's keys still work.
    [(code, out, err)] = second_demo
    assert code == 1 and out == ""
    assert err == f"caseapi: cannot listen on 127.0.0.1:{port}: port in use\n"
    assert client.get("/api/v1/cases", headers=kz).status_code == 200

    # A demo that does start revokes the keys of earlier ones.
    assert run("demo", "--port", "0")[0] == 0
    assert client.get("/api/v1/cases", headers=kz).status_code == 401


def test_demo_revokes_earlier_keys_as_client_revoke_does(run, engine: sa.Engine, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Audited, and an agency left with no live key has its webhooks turned off (app.webhooks.lifecycle)."""
    monkeypatch.setattr(cli, "_serve", lambda *args, **kwargs: None)
    assert run("demo", "--port", "0")[0] == 0
    subscriptions = table_of(WebhookSubscription)
    with engine.begin() as conn:
        codes = {row.code: row.id for row in conn.execute(sa.select(Agency.code, Agency.id))}
        hooks = {
            code: new_row(
                WebhookSubscription, agency_id=codes[code], url="https://hooks.example", secret_sealed=b"s"
            )
            for code in ("UA-LE", "KZ-MVD")
        }
        conn.execute(subscriptions.insert(), list(hooks.values()))
    assert run("client", "create", "--agency", "KZ-MVD", "--name", "tool")[0] == 0  # KZ keeps a live key
    assert run("demo", "--port", "0")[0] == 0
    with engine.connect() as conn:
        state = {
            row.id: (row.disabled_at is not None, row.version)
            for row in conn.execute(sa.select(subscriptions))
        }
        entries = conn.execute(sa.select(table_of(AuditEntry)).order_by(AuditEntry.seq)).all()
    assert state == {hooks["UA-LE"]["id"]: (True, 2), hooks["KZ-MVD"]["id"]: (False, 1)}
    [disabled] = [e for e in entries if e.action == "subscription.disabled"]
    assert disabled.resource_id == hooks["UA-LE"]["id"] and disabled.detail == {"reason": "no_live_api_key"}
    # 18 demo keys made, KZ's tool key, the demo keys revoked, and 18 made again.
    assert [e.action for e in entries if e.resource_type == "api_client"] == (
        ["api_client.created"] * 19 + ["api_client.revoked"] * 18 + ["api_client.created"] * 18
    )


def test_demo_on_a_busy_port_leaves_the_database_alone(monkeypatch, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    database = tmp_path / "untouched.db"
    monkeypatch.setenv("CASEAPI_DATABASE_URL", f"sqlite:///{database}")
    monkeypatch.setattr(cli, "_serve", lambda *args, **kwargs: pytest.fail("served"))
    with socket.create_server(("127.0.0.1", 0)) as busy:
        code, err = _exit_of(["demo", "--port", str(busy.getsockname()[1])], capsys)
    assert code == 1 and "port in use" in err
    assert not database.exists()


def test_unreachable_database_is_a_one_line_failure(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CASEAPI_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    code, err = _exit_of(["seed"], capsys)
    assert code == 1 and err.startswith("caseapi: database unavailable: ") and err.count("\n") == 1


def _exit_of(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run a command that must end with SystemExit; its status and stderr."""
    with pytest.raises(SystemExit) as exc:
        cli.main(list(argv))
    if isinstance(exc.value.code, str):  # sys.exit("message"): printed, status 1
        return 1, exc.value.code + "\n"
    return int(exc.value.code or 0), capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert capsys.readouterr().out == f"caseapi {project['version']}\n"


@pytest.mark.parametrize("command", [["migrate"], ["serve"], ["demo"], ["agency", "list"], ["seed"]])
@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("CASEAPI_POOL_SIZE", "abc", "Input should be a valid integer"),
        ("CASEAPI_POOL_SIZE", "0", "Input should be greater than or equal to 1"),
        ("CASEAPI_DATABASE_URL", "mysql://root:hunter2@db/caseapi", "unsupported database 'mysql'"),
        ("CASEAPI_DATABASE_URL", "postgresql://root:hunter2@db/caseapi", "unsupported database 'postgresql'"),
        ("CASEAPI_DATABASE_URL", "hunter2", "not a database URL"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(  # type: ignore[no-untyped-def]
    command, variable, value, reason, monkeypatch, capsys
) -> None:
    monkeypatch.setenv(variable, value)
    monkeypatch.setattr(cli, "_serve", lambda *args, **kwargs: pytest.fail("served"))
    code, err = _exit_of(command, capsys)
    assert code == 2
    assert err.startswith(f"caseapi: {variable}: ") and reason in err
    assert err.count("\n") == 1 and "hunter2" not in err  # a URL may carry a password


def test_a_config_error_is_one_line_exit_2(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    def needs_audit_key(*_: object) -> None:
        secrets.audit_key(Settings(database_url="postgresql+psycopg://caseapi@db/caseapi", audit_key=None))

    monkeypatch.setattr(cli, "cmd_migrate", needs_audit_key)
    code, err = _exit_of(["migrate"], capsys)
    assert code == 2 and err.startswith("caseapi: CASEAPI_AUDIT_KEY is not set") and err.count("\n") == 1


@pytest.mark.parametrize("command", [["serve"], ["demo"], ["seed"], ["agency", "list"], ["audit", "verify"]])
def test_postgresql_without_the_audit_key_stops_before_anything(  # type: ignore[no-untyped-def]
    command, monkeypatch, capsys
) -> None:
    """Not a 500 at the first change: one line naming the setting, before the database
    (unreachable here, which would be another message) or a port is touched."""
    monkeypatch.delenv("CASEAPI_AUDIT_KEY", raising=False)
    monkeypatch.setenv("CASEAPI_DATABASE_URL", "postgresql+psycopg://caseapi@127.0.0.1:1/caseapi")
    monkeypatch.setattr(cli, "_serve", lambda *args, **kwargs: pytest.fail("served"))
    code, err = _exit_of(command, capsys)
    assert code == 2 and err.startswith("caseapi: CASEAPI_AUDIT_KEY is not set") and err.count("\n") == 1


def test_an_unmigrated_database_says_to_migrate(blank_database_url, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CASEAPI_DATABASE_URL", blank_database_url)
    monkeypatch.setattr(cli, "_serve", lambda *args, **kwargs: pytest.fail("served unmigrated"))
    for command in (["serve"], ["seed"], ["agency", "list"], ["client", "list"], ["audit", "verify"]):
        code, err = _exit_of(command, capsys)
        assert code == 1, command
        assert err.startswith("caseapi: the database is not migrated (revision none, newest ")
        assert err.endswith("): run `caseapi migrate`\n") and err.count("\n") == 1
    monkeypatch.setattr(cli, "_serve", lambda *args, **kwargs: None)
    for command in (["migrate"], ["agency", "list"], ["serve"]):
        cli.main(command)
    assert capsys.readouterr().err == ""


def _agency_lines(run) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    code, out, _ = run("agency", "list")
    assert code == 0
    return {line.split("\t")[1]: line.split("\t") for line in out.splitlines()}


def test_agency_create_list_and_set_parent(run, client: TestClient, engine: sa.Engine, lead: Caller) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run("agency", "create", "--code", "KZ-MVD", "--name", "Ministry of Interior",
                       "--kind", "ministry", "--country", "KZ")  # fmt: skip
    assert code == 0
    ministry = out.splitlines()[-1]
    shown = client.get(f"/api/v1/agencies/{ministry}", headers=lead.headers).json()
    assert (shown["code"], shown["name"], shown["kind"], shown["country"], shown["parent_id"]) == (
        "KZ-MVD", "Ministry of Interior", "ministry", "KZ", None)  # fmt: skip

    code, out, _ = run("agency", "create", "--code", "KZ-CYBER", "--name", "Cyber police",
                       "--kind", "police", "--country", "KZ", "--parent", "KZ-MVD")  # fmt: skip
    cyber = out.splitlines()[-1]
    assert code == 0 and uuid.UUID(cyber)
    code, out, _ = run("agency", "create", "--code", "INTERPOL", "--name", "Interpol",
                       "--kind", "international_organization")  # fmt: skip
    interpol = out.splitlines()[-1]
    lines = _agency_lines(run)
    assert lines["KZ-CYBER"] == [cyber, "KZ-CYBER", "Cyber police", "police", "KZ", "KZ-MVD"]
    assert lines["INTERPOL"] == [interpol, "INTERPOL", "Interpol", "international_organization", "-", "-"]

    for args, reason in [
        (["--code", "KZ-MVD", "--name", "Again", "--kind", "police"], "An agency with code 'KZ-MVD' exists."),
        (["--code", "KZ-X", "--name", "X", "--kind", "police", "--parent", "NOPE"], "No agency with code"),
        (["--code", "KZ-X", "--name", "X", "--kind", "police", "--country", "QQ"], "--country: "),
        (["--code", "K", "--name", "X", "--kind", "police"], "--code: "),
    ]:
        code, out, err = run("agency", "create", *args)
        assert code == 1 and out == "" and err.startswith(f"caseapi: {reason}") and err.count("\n") == 1
    assert "KZ-X" not in _agency_lines(run)

    # The hierarchy moves on the host only, audited as the command line's change.
    code, out, _ = run("agency", "set-parent", "KZ-MVD", "--parent", "KZ-CYBER")
    assert code == 1 and "own ancestor" in _
    assert run("agency", "set-parent", "KZ-CYBER", "--parent", "INTERPOL")[0] == 0
    assert _agency_lines(run)["KZ-CYBER"][5] == "INTERPOL"
    assert run("agency", "set-parent", "KZ-CYBER", "--none")[0] == 0
    code, out, _ = run("agency", "set-parent", "KZ-CYBER", "--none")
    assert code == 0 and "already" in out
    assert client.get(f"/api/v1/agencies/{cyber}", headers=lead.headers).json()["parent_id"] is None
    with transaction(engine, write=False) as session:
        entries = session.execute(
            sa.select(AuditEntry.action, AuditEntry.agency_id, AuditEntry.client_id)
            .where(AuditEntry.resource_id == uuid.UUID(cyber))
            .order_by(AuditEntry.seq)
        ).all()
    # created, moved under INTERPOL, moved to the top; the no-op wrote nothing
    assert entries == [("agency.created", None, None)] + [("agency.updated", None, None)] * 2
    assert run("agency", "set-parent", "NOPE", "--none")[0] == 1
    assert run("audit", "verify")[0] == 0


def test_set_parent_decides_who_reads_amber_cases(  # type: ignore[no-untyped-def]
    run, client: TestClient, lead: Caller, outsider: Caller
) -> None:
    case = new_case(client, lead)  # TLP:AMBER by default: participants and their sub-agencies read
    url = f"/api/v1/cases/{case['id']}"
    assert client.get(url, headers=outsider.headers).status_code == 404
    assert run("agency", "set-parent", outsider.agency_code, "--parent", lead.agency_code)[0] == 0
    assert client.get(url, headers=outsider.headers).status_code == 200
    assert run("agency", "set-parent", outsider.agency_code, "--none")[0] == 0
    assert client.get(url, headers=outsider.headers).status_code == 404


# --- the keys: strength, and from files (docker compose secrets) ------------------------------------------

STRONG = "1f0e3dad99908345f7439f8ffabdffc4" * 2
BASE64 = "dBTJ3nK8Rk7m3Xo1XhqJ2l5QJxVd8yZ6qv0Ot9WcS2Y="


@pytest.mark.parametrize("variable", ["CASEAPI_AUDIT_KEY", "CASEAPI_CURSOR_SECRET"])
@pytest.mark.parametrize(
    "value",
    ["x", "unused", "0" * 64, "test-audit-key-" + "0" * 32, STRONG[:62], "ab" * 40],
    ids=["one-letter", "word", "zeros", "padded-word", "31-bytes", "repeated"],
)
@pytest.mark.parametrize(
    "database", ["sqlite:///./caseapi.db", "postgresql+psycopg://caseapi@127.0.0.1:1/caseapi"]
)
def test_a_weak_key_is_one_line_exit_2(  # type: ignore[no-untyped-def]
    variable, value, database, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("CASEAPI_DATABASE_URL", database)
    monkeypatch.setenv(variable, value)
    code, err = _exit_of(["agency", "list"], capsys)
    assert code == 2
    assert err.startswith(f"caseapi: {variable}: ") and "32 random bytes" in err
    assert err.count("\n") == 1 and (len(value) < 6 or value not in err)


@pytest.mark.parametrize("value", [STRONG, BASE64, BASE64.rstrip("=").replace("+", "-").replace("/", "_")])
def test_a_strong_key_hex_or_base64_is_taken(value: str) -> None:
    settings = Settings(audit_key=value, cursor_secret=value)
    assert secrets.audit_key(settings) == value.encode()
    assert secrets.cursor_key(settings) == value.encode()


@pytest.mark.parametrize(
    ("variable", "name"), [("AUDIT_KEY", "audit_key"), ("CURSOR_SECRET", "cursor_secret")]
)
def test_a_key_from_a_file(variable: str, name: str, monkeypatch, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv(f"CASEAPI_{variable}", raising=False)
    path = tmp_path / "secret"
    path.write_text(f"  {STRONG}\n")
    monkeypatch.setenv(f"CASEAPI_{variable}_FILE", str(path))
    settings = Settings()
    assert getattr(settings, f"{name}_file").get_secret_value() == STRONG
    key_of = secrets.audit_key if name == "audit_key" else secrets.cursor_key
    assert key_of(settings) == STRONG.encode()
    # The key and its file both: which one is meant cannot be known.
    monkeypatch.setenv(f"CASEAPI_{variable}", STRONG)
    code, err = _exit_of(["agency", "list"], capsys)
    assert (code, err.count("\n")) == (2, 1)
    assert err.startswith(f"caseapi: CASEAPI_{variable}_FILE: ") and "not both" in err
    monkeypatch.delenv(f"CASEAPI_{variable}")
    for content, reason in ((None, "cannot read the key file"), ("unused\n", "32 random bytes")):
        if content is None:
            path.unlink()
        else:
            path.write_text(content)
        code, err = _exit_of(["agency", "list"], capsys)
        assert (code, err.count("\n")) == (2, 1)
        assert err.startswith(f"caseapi: CASEAPI_{variable}_FILE: ") and reason in err
        assert "unused" not in err


def test_a_server_on_postgresql_takes_its_audit_key_from_a_file(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("CASEAPI_AUDIT_KEY", raising=False)
    path = tmp_path / "audit_key"
    path.write_text(STRONG + "\n")
    monkeypatch.setenv("CASEAPI_AUDIT_KEY_FILE", str(path))
    settings = Settings(database_url="postgresql+psycopg://caseapi@db/caseapi")
    assert secrets.audit_key(settings) == STRONG.encode()


def test_every_command_and_option_says_what_it_does() -> None:
    """`caseapi X --help` describes each command and each of its options (the
    CLI reference in the docs is generated from the same parser)."""

    def walk(parser: argparse.ArgumentParser, prog: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        yield prog, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{prog} {name}")

    for prog, parser in walk(cli._parser(), "caseapi"):
        assert parser.description, prog
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                assert all(choice.help for choice in action._choices_actions), prog
            else:
                assert action.help, (prog, action.dest)
        text = parser.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text, prog
        if prog == "caseapi storage sweep":
            assert "(default: 3600.0)" in text
        if prog == "caseapi":
            assert "exit status: 0" in text


def test_a_thumbprint_that_begins_with_a_dash_is_a_value() -> None:
    """A base64url thumbprint may begin with `-`: never taken for an option."""
    args = cli._parser().parse_args(
        cli._joined(["peer", "add", "--url", "http://ua", "--thumbprint", "-UoY7zs"])
    )
    assert (args.url, args.thumbprint) == ("http://ua", "-UoY7zs")


def test_demo_makes_keys_only_for_the_agencies_it_is_home_of(
    run, engine: sa.Engine, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    """A peer's agency, held here read-only, gets its keys at home: the demo leaves it out."""
    monkeypatch.setattr(cli, "_serve", lambda *args, **kwargs: None)
    assert run("demo", "--port", "0")[0] == 0
    remote = new_row(
        Agency, code="PEER-PD", name="A peer's police", kind="police", home_instance="peer.example"
    )
    with engine.begin() as conn:
        conn.execute(table_of(Agency).insert(), [remote])
    code, out, _ = run("demo", "--port", "0")
    assert code == 0
    keys = dict(line.split() for line in out.splitlines() if line.startswith("  "))
    assert len(keys) == 18 and "PEER-PD" not in keys
