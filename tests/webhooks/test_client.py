"""The webhook HTTP client against receivers that answer in every way HTTP/1.x allows."""

import asyncio
import ssl
import time

import httpx
import pytest

from app.webhooks.client import MAX_RESPONSE_BYTES, Client, PinnedResolver, ReceiverError
from app.webhooks.targets import Target
from tests.webhooks.receiver import dribbling

HEADERS = [("Content-Type", "application/json"), ("webhook-id", "evt_1")]


async def _exchange(answers: list[bytes], posts: int) -> tuple[list[int | str], int, list[bytes]]:
    """POST `posts` times to a server that sends `answers` in turn (one per
    request, on whatever connection it came); the statuses (or the error
    class), how many connections were opened, and the requests received."""
    queue = list(answers)
    connections = 0
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while queue:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                requests.append(head + await reader.readexactly(length))
                answer = queue.pop(0)
                writer.write(answer)
                await writer.drain()
                if b"close-after" in answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # A name no DNS knows: the client connects to the address it was checked with.
    target = Target(httpx.URL(f"http://receiver.test:{port}/hooks/kz?v=1"), "127.0.0.1")
    client = Client(ssl.create_default_context(), timeout=2.0)
    results: list[int | str] = []
    for _ in range(posts):
        try:
            results.append(await client.post(target, HEADERS, b'{"seq": 1}'))
        except ReceiverError:
            results.append("connection")
        except TimeoutError:
            results.append("timeout")
    await client.close()
    server.close()
    return results, connections, requests


def exchange(answers: list[bytes], posts: int) -> tuple[list[int | str], int, list[bytes]]:
    return asyncio.run(_exchange(answers, posts))


def test_keeps_the_connection_and_sends_one_well_formed_request() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    results, connections, requests = exchange([ok, b"HTTP/1.1 204 No Content\r\n\r\n", ok], 3)
    assert results == [200, 204, 200]
    assert connections == 1
    head, body = requests[0].split(b"\r\n\r\n")
    request_line, *fields = head.decode().split("\r\n")
    assert request_line == "POST /hooks/kz?v=1 HTTP/1.1"
    sent = dict(field.split(": ", 1) for field in fields)
    assert sent["Host"].startswith("receiver.test:")
    assert (sent["Content-Length"], sent["Content-Type"], sent["webhook-id"]) == (
        "10",
        "application/json",
        "evt_1",
    )
    assert not {"Cookie", "Accept-Encoding", "Authorization"} & set(sent)
    assert body == b'{"seq": 1}'


def test_chunked_answers_are_read_past() -> None:
    chunked = (
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"
    )
    results, connections, _ = exchange([chunked, chunked], 2)
    assert results == [202, 202]
    assert connections == 1


def test_a_large_body_is_not_read_the_connection_is_dropped() -> None:
    """A body announced as a gigabyte, or sent in one large chunk, that the
    receiver then holds back: the status is the answer, the connection goes."""
    big = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % 10**9 + b"x" * 2 * MAX_RESPONSE_BYTES
    big_chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % 10**9
    big_chunked += b"x" * 2 * MAX_RESPONSE_BYTES
    started = time.monotonic()
    results, connections, _ = exchange([big, big_chunked, b"HTTP/1.1 204 No Content\r\n\r\n"], 3)
    assert results == [200, 200, 204]
    assert connections == 3
    assert time.monotonic() - started < 1.5  # not the 2 s bound: nothing waited for the rest


def test_close_http10_and_unbounded_bodies_end_the_connection() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\nX: close-after\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nX: close-after\r\n\r\n",
        b"HTTP/1.1 500 Oops\r\nX: close-after\r\n\r\nno length, ends at close",
    ]
    results, connections, _ = exchange(answers, 3)
    assert results == [200, 200, 500]
    assert connections == 3


def test_informational_answers_are_skipped() -> None:
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
    assert exchange([early], 1)[0] == [201]


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 5000,
    ],
)
def test_what_is_not_http_is_a_connection_error(answer: bytes) -> None:
    results, _, _ = exchange([answer], 1)
    assert results == ["connection"]


def test_a_receiver_that_closes_is_reconnected_on_the_next_post() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: close-after\r\n\r\n"
    results, connections, _ = exchange([ok, ok], 2)
    assert results == [200, 200]
    assert connections == 2


def test_one_bound_covers_the_whole_post() -> None:
    """A receiver that sends a `100 Continue` well within the bound, again and
    again, is cut off when the whole POST has taken the bound: no single read
    was slow, the answer as a whole was."""

    async def post() -> tuple[list[int | str], float]:
        async with dribbling(lambda _path: 1.0, drip=0.05) as receiver:
            target = Target(httpx.URL(receiver.url("/slow")), "127.0.0.1")
            client = Client(ssl.create_default_context(), timeout=0.3)
            started = time.monotonic()
            results: list[int | str] = []
            try:
                results.append(await client.post(target, HEADERS, b"{}"))
            except TimeoutError:
                results.append("timeout")
            took = time.monotonic() - started
            await client.close()
        return results, took

    results, took = asyncio.run(post())
    assert results == ["timeout"]
    assert 0.3 <= took < 0.6


def test_no_cookies_and_no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A receiver's cookie is not sent back; HTTP_PROXY does not take the deliveries elsewhere."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    cookie = b"HTTP/1.1 200 OK\r\nSet-Cookie: session=abc; Path=/\r\nContent-Length: 0\r\n\r\n"
    results, connections, requests = exchange([cookie, cookie], 2)
    assert results == [200, 200]
    assert connections == 1
    assert b"cookie" not in requests[1].lower()


def test_only_a_checked_name_resolves() -> None:
    """The connector asks no DNS: a name resolves only to the address it was checked with."""

    async def resolve(host: str) -> list[str]:
        resolver = PinnedResolver()
        resolver.pin(Target(httpx.URL("https://hooks.kz-mvd.test/x"), "93.184.215.14"))
        return [r["host"] for r in await resolver.resolve(host, 443)]

    assert asyncio.run(resolve("hooks.kz-mvd.test")) == ["93.184.215.14"]
    with pytest.raises(OSError, match="was not checked"):
        asyncio.run(resolve("localhost"))
