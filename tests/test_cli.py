"""The `caseapi` command, run in-process against the test database."""

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app import cli
from app.config import get_settings


@pytest.fixture
def run(
    database_url: str, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator:  # type: ignore[type-arg]
    monkeypatch.setenv("CASEAPI_DATABASE_URL", database_url)
    get_settings.cache_clear()

    def invoke(*args: str) -> tuple[int, str, str]:
        try:
            cli.main(list(args))
            code = 0
        except SystemExit as exc:
            code = 1 if isinstance(exc.code, str) else int(exc.code or 0)
            if isinstance(exc.code, str):
                print(exc.code, file=__import__("sys").stderr)
        out, err = capsys.readouterr()
        return code, out, err

    yield invoke
    get_settings.cache_clear()


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


def test_demo_prints_a_working_key_per_agency(run, client: TestClient, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    served: list[tuple[str, int, int]] = []
    monkeypatch.setattr(cli, "_serve", lambda host, port, workers: served.append((host, port, workers)))
    code, out, _ = run("demo")
    assert code == 0
    assert served == [("127.0.0.1", 8000, 1)]
    keys = dict(line.split() for line in out.splitlines() if line.startswith("  "))
    assert len(keys) == 18 and "KZ-MVD" in keys and "UA-LE" in keys
    kz = {"Authorization": f"Bearer {keys['KZ-MVD']}"}
    [case] = client.get("/api/v1/cases", headers=kz).json()["items"]
    assert case["reference"] == "KZ-UA-2025-KYIV-CALL-CENTRE"
    # The demo is repeatable: a second run revokes the first run's keys.
    run("demo")
    assert client.get("/api/v1/cases", headers=kz).status_code == 401


def test_unreachable_database_is_a_one_line_failure(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CASEAPI_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as exc:
            cli.main(["seed"])
    finally:
        get_settings.cache_clear()
    assert isinstance(exc.value.code, str) and "\n" not in exc.value.code
