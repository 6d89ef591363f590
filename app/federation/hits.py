"""Federated hit/no-hit (§9): a search asks every peer too, signed, naming the
searching agency. Each peer answers by its own rules of §8 for that agency
(full, summary or nothing; `hit.received` to its own case's lead) from the
cases it is home of, and every peer is named in the answer with how it
answered: none is silently left out."""

import asyncio

import httpx
import orjson
import sqlalchemy as sa
from pydantic import ValidationError
from starlette.datastructures import State

from app.auth.service import Principal
from app.core.db import table_of
from app.core.uow import Row
from app.federation import answers, signatures
from app.federation.identity import identity
from app.federation.models import Peer
from app.identifiers.models import HitMatch, HitResults, PeerAnswer
from app.identifiers.normalize import IdentifierKind

HITS_PATH = "/api/v1/federation/hits"
PEERS = table_of(Peer)
_PEERS = sa.select(PEERS).order_by(PEERS.c.instance_id)

Matches = list[list[HitMatch]]


# Idle connections to the peers are dropped before uvicorn's default keep-alive (5 s) closes
# them at the other end: a search is not sent on a connection the peer is about to close.
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=4)


class PeerSearcher:
    """app.identifiers.models.PeerSearch for an app: asks all its peers at once."""

    def __init__(self, state: State) -> None:
        self.state = state
        self._http: httpx.AsyncClient | None = None

    def http(self) -> httpx.AsyncClient:
        """One client from the first search until close(): its connections to the peers stay open
        between searches, and its TLS context (the CA store read from disk) is made once, not per search."""
        if self._http is None:
            timeout = httpx.Timeout(self.state.settings.federation_hit_timeout_seconds)
            self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False, limits=_LIMITS)
        return self._http

    async def close(self) -> None:
        """At the app's shutdown: a next start (tests start an app many times) makes a new client."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def __call__(
        self, p: Principal, keys: list[tuple[IdentifierKind, str]]
    ) -> tuple[Matches, list[PeerAnswer]]:
        peers = await self.state.database.all(_PEERS)
        body = orjson.dumps(
            {
                "agency_id": str(p.agency_id),
                "client_id": str(p.client_id),
                "scopes": ["read"],
                "items": [{"kind": kind.value, "value": value} for kind, value in keys],
            }
        )
        http = self.http()
        asked = await asyncio.gather(*(self._ask(http, peer, body, len(keys)) for peer in peers))
        matches: Matches = [[] for _ in keys]
        for found, _ in asked:
            for item, item_matches in zip(matches, found, strict=True):
                item.extend(item_matches)
        return matches, [answer for _, answer in asked]

    async def _ask(
        self, http: httpx.AsyncClient, peer: Row, body: bytes, count: int
    ) -> tuple[Matches, PeerAnswer]:
        url = peer.url + HITS_PATH
        headers = signatures.sign(identity(self.state.settings), "POST", url, body)
        nothing: Matches = [[] for _ in range(count)]
        settings = self.state.settings
        try:
            # The whole exchange, not each read: a peer that answers a byte now and then is cut off too.
            async with asyncio.timeout(settings.federation_hit_timeout_seconds):
                response = await answers.request(
                    http,
                    "POST",
                    url,
                    limit=settings.max_delivery_bytes,
                    content=body,
                    headers=headers | {"Content-Type": "application/json"},
                )
        except (httpx.TimeoutException, TimeoutError):
            return nothing, PeerAnswer(instance_id=peer.instance_id, status="timeout")
        except answers.AnswerTooLarge:
            return nothing, PeerAnswer(instance_id=peer.instance_id, status="refused")
        except httpx.HTTPError:
            return nothing, PeerAnswer(instance_id=peer.instance_id, status="unreachable")
        try:
            if response.status_code != 200:
                raise ValueError(response.status_code)
            results = HitResults.model_validate_json(response.content)
            if len(results.items) != count:
                raise ValueError("another number of items")
        except (ValueError, ValidationError):
            return nothing, PeerAnswer(instance_id=peer.instance_id, status="refused")
        # What the peer found is its own: a peer never speaks for another instance's cases.
        found = [
            [match.model_copy(update={"home_instance": peer.instance_id}) for match in item.matches]
            for item in results.items
        ]
        return found, PeerAnswer(instance_id=peer.instance_id, status="answered")
