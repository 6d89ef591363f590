"""hit.received after the search (app.identifiers.notices): once per searching agency and identifier
within the window, driven here directly; by `caseapi serve` and `caseapi hits process` in operation.
And the retention of search terms."""

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app import cli
from app.auth.models import Scope
from app.core.config import Settings
from app.core.db import utcnow
from app.identifiers import notices
from app.identifiers.models import HitSearchTerm
from tests.conftest import Caller, make_caller, new_case, walk
from tests.hits.test_hits import PHONE, add, on_database, search

API = "/api/v1"


def received(client: TestClient, caller: Caller) -> list[dict[str, Any]]:
    """The caller's hit.received events as they are, without writing pending notices."""
    return [e for e in walk(client, f"{API}/events", caller.headers) if e["type"] == "hit.received"]


def count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


@pytest.fixture
def searcher(engine: sa.Engine) -> Caller:
    return make_caller(engine, "EU-SEARCH", Scope.read)


@pytest.fixture
def hidden(client: TestClient, lead: Caller) -> dict[str, Any]:
    """A TLP:RED case of `lead` holding PHONE; its identifier."""
    case = new_case(client, lead, handling_code="TLP:RED")
    return add(client, lead, case["id"], "phone", PHONE)


def test_a_search_is_notified_after_it_and_once_per_agency_and_identifier(
    client: TestClient,
    engine: sa.Engine,
    settings: Settings,
    lead: Caller,
    searcher: Caller,
    hidden: dict[str, Any],
) -> None:
    for _ in range(3):
        assert search(client, searcher, ("phone", PHONE)).status_code == 200
    assert received(client, lead) == []  # the search itself writes no event
    assert count(engine, "hit_notice_pending") == 3
    assert on_database(engine, notices.notify_batch, settings, now=utcnow()) == (3, 1)
    assert count(engine, "hit_notice_pending") == 0
    (event,) = received(client, lead)
    assert (event["resource_id"], event["from_agency_id"]) == (hidden["id"], str(searcher.agency_id))
    # Searching again within the window adds nothing; another agency's search is news.
    other = make_caller(engine, "EU-OTHER", Scope.read)
    search(client, searcher, ("phone", PHONE))
    search(client, other, ("phone", PHONE))
    assert on_database(engine, notices.notify_batch, settings, now=utcnow()) == (2, 1)
    assert [e["from_agency_id"] for e in received(client, lead)] == [
        str(searcher.agency_id),
        str(other.agency_id),
    ]
    # Past the window the same search is notified again.
    search(client, searcher, ("phone", PHONE))
    later = utcnow() + timedelta(hours=settings.hit_notice_window_hours, minutes=1)
    assert on_database(engine, notices.notify_batch, settings, now=later) == (1, 1)
    assert len(received(client, lead)) == 3


def test_without_a_window_every_search_is_notified(
    client: TestClient, engine: sa.Engine, settings: Settings, lead: Caller, searcher: Caller, hidden: Any
) -> None:
    for _ in range(2):
        search(client, searcher, ("phone", PHONE))
    every = settings.model_copy(update={"hit_notice_window_hours": 0})
    assert on_database(engine, notices.process, every).notices == 2


def test_a_notice_names_what_existed_at_the_search(
    client: TestClient, engine: sa.Engine, settings: Settings, lead: Caller, searcher: Caller
) -> None:
    search(client, searcher, ("phone", PHONE))
    case = new_case(client, lead, handling_code="TLP:RED")
    add(client, lead, case["id"], "phone", PHONE)  # after the search, before its notices
    assert on_database(engine, notices.process, settings).notices == 0
    assert received(client, lead) == []


def test_a_batch_notifies_an_identifier_once(
    client: TestClient, engine: sa.Engine, settings: Settings, lead: Caller, searcher: Caller, hidden: Any
) -> None:
    """Two searches notified in one transaction: the second sees no event of the first yet."""
    search(client, searcher, ("phone", PHONE))
    search(client, searcher, ("phone", PHONE))
    assert on_database(engine, notices.notify_batch, settings, now=utcnow(), limit=10) == (2, 1)


def test_summary_matches_notify_the_lead(
    client: TestClient, engine: sa.Engine, settings: Settings, lead: Caller, partner: Caller, searcher: Caller
) -> None:
    public = new_case(client, lead, handling_code="TLP:GREEN")
    identifier = add(client, lead, public["id"], "phone", PHONE)
    own = new_case(client, partner, handling_code="TLP:RED")
    add(client, partner, own["id"], "phone", PHONE)
    (item,) = search(client, searcher, ("phone", PHONE)).json()["items"]
    assert [m["access"] for m in item["matches"]] == ["summary"]
    # The partner searching its own case's value: the GREEN case's lead hears of it, the partner not.
    search(client, partner, ("phone", PHONE))
    on_database(engine, notices.process, settings)
    events = received(client, lead)
    assert [(e["resource_id"], e["from_agency_id"]) for e in events] == [
        (identifier["id"], str(searcher.agency_id)),
        (identifier["id"], str(partner.agency_id)),
    ]
    # The partner hears of the searcher's match in its own RED case, not of its own search.
    assert [e["from_agency_id"] for e in received(client, partner)] == [str(searcher.agency_id)]


def test_searches_sealed_under_another_key_are_dropped(
    client: TestClient, engine: sa.Engine, settings: Settings, lead: Caller, searcher: Caller, hidden: Any
) -> None:
    search(client, searcher, ("phone", PHONE))
    other = settings.model_copy(update={"audit_key": SecretStr("another-audit-key-" + "1" * 32)})
    assert on_database(engine, notices.process, other).searches == 1
    assert count(engine, "hit_notice_pending") == 0
    assert received(client, lead) == []


def _age_first_search(engine: sa.Engine, by: timedelta) -> None:
    """Move the search with two terms back in time by `by`."""
    terms = HitSearchTerm.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        row = conn.execute(
            sa.select(terms.c.search_id, terms.c.searched_at).where(terms.c.position == 1)
        ).one()
        at: datetime = row.searched_at
        conn.execute(terms.update().where(terms.c.search_id == row.search_id).values(searched_at=at - by))


def test_search_terms_are_purged_after_the_retention(
    client: TestClient, engine: sa.Engine, settings: Settings, searcher: Caller
) -> None:
    search(client, searcher, ("phone", PHONE), ("ip", "10.0.0.1"))
    search(client, searcher, ("ip", "10.0.0.2"))
    assert on_database(engine, notices.purge_terms, settings, now=utcnow()) == 0
    retention = timedelta(days=settings.hit_search_retention_days)
    _age_first_search(engine, retention + timedelta(minutes=1))
    assert on_database(engine, notices.purge_terms, settings, now=utcnow()) == 2
    assert count(engine, "hit_search_term") == 1  # the later search stays
    assert (
        on_database(engine, notices.purge_terms, settings, now=utcnow() + retention + timedelta(minutes=1))
        == 1
    )
    assert count(engine, "hit_search_term") == 0


def test_serve_notifies_and_purges(
    app_with: Callable[..., AbstractContextManager[TestClient]],
    client: TestClient,
    engine: sa.Engine,
    settings: Settings,
    lead: Caller,
    searcher: Caller,
    hidden: Any,
) -> None:
    search(client, searcher, ("phone", PHONE), ("ip", "10.0.0.1"))
    _age_first_search(engine, timedelta(days=settings.hit_search_retention_days, minutes=1))
    with app_with(hit_notices=True, hit_notice_poll_seconds=0.05) as served:
        search(served, searcher, ("phone", PHONE))
        deadline = time.monotonic() + 20
        while len(received(served, lead)) < 1 or count(engine, "hit_notice_pending"):
            assert time.monotonic() < deadline, "the server wrote no notice"
            time.sleep(0.05)
    assert count(engine, "hit_search_term") == 1  # purged at start: the first search's two terms


def test_the_cli_notifies_and_purges(
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
    client: TestClient,
    lead: Caller,
    searcher: Caller,
    hidden: Any,
) -> None:
    search(client, searcher, ("phone", PHONE))
    cli.main(["hits", "process"])
    assert capsys.readouterr().out.splitlines()[-1] == (
        "hit notices: 1 searches processed, 1 hit.received events written, "
        "0 search terms past retention purged"
    )
    assert len(received(client, lead)) == 1


def test_searched_values_reach_no_log(
    app_with: Callable[..., AbstractContextManager[TestClient]],
    caplog: pytest.LogCaptureFixture,
    client: TestClient,
    engine: sa.Engine,
    settings: Settings,
    lead: Caller,
    searcher: Caller,
    hidden: Any,
) -> None:
    caplog.set_level(logging.DEBUG)
    with app_with(hit_rate_limit="1000/hour", hit_notices=True, hit_notice_poll_seconds=0.05) as served:
        assert search(served, searcher, ("phone", PHONE), ("ip", "10.0.0.1")).status_code == 200
        flood = [("ip", f"10.0.{n // 256}.{n % 256}") for n in range(1000)]
        assert search(served, searcher, *flood).status_code == 429
        deadline = time.monotonic() + 20
        while count(engine, "hit_notice_pending"):
            assert time.monotonic() < deadline, "the server wrote no notice"
            time.sleep(0.05)
    search(client, searcher, ("phone", PHONE))
    other = settings.model_copy(update={"audit_key": SecretStr("another-audit-key-" + "1" * 32)})
    on_database(engine, notices.process, other)  # logs the search it cannot read
    assert "sealed under another audit key" in caplog.text
    for value in ("7010000001", "10.0.0.1", "10.0.3.231"):
        assert value not in caplog.text
