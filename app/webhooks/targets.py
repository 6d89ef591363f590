"""Where a webhook may point: `https` on a public address (SSRF defence).

An API key must not turn the server into a client of the hosts behind its
firewall (the database, a cloud's metadata service at 169.254.169.254, an
admin panel on 127.0.0.1). So a URL is checked when it is subscribed, and
the host is resolved again before each batch of deliveries, which then
connects to the very address that was checked: a DNS answer that changes
in between (DNS rebinding) does not reach a private address.
`CASEAPI_WEBHOOK_ALLOW_PRIVATE=true` lifts the rule, and also allows plain
`http`, for tests and closed networks.

A URL is kept in the form it is sent in: an IDNA host, a percent-encoded
path and query. What would be read one way and sent another (spaces,
control or invisible format characters) is refused.
"""

import functools
import ipaddress
import socket
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import anyio.to_thread
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# NAT64's well-known prefix (RFC 6052) carries an IPv4 address in its last 32 bits.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class RefusedTarget(Exception):
    """A URL or address a webhook may not reach; the message says why."""

    def __init__(self, reason: str, *, unresolvable: bool = False) -> None:
        super().__init__(reason)
        self.unresolvable = unresolvable


@dataclass(frozen=True)
class Target:
    """A subscribed URL and the checked address to connect to for it."""

    url: httpx.URL
    address: str

    @property
    def authority(self) -> str:
        """The Host header: the server sees the name it was subscribed with."""
        return self.url.netloc.decode("ascii")


def host_of(url: httpx.URL) -> str:
    """The name as looked up and certified: its IDNA (ASCII) form, the one the
    stored URL shows, not the standard library's older IDNA encoding."""
    return url.raw_host.decode("ascii")


def check_characters(url: str) -> None:
    """Checked when subscribing, not when delivering: a stored URL is sent to
    as it is encoded (a space as %20), never refused for how it was written."""
    if any(c.isspace() or unicodedata.category(c).startswith("C") for c in url):
        raise RefusedTarget("the URL must not contain spaces or control characters")


def parse_url(url: str, *, allow_private: bool) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
        # Reading the host decodes it: a malformed IDNA label (`xn--x-`) fails here, not later.
        host = parsed.host
    except (httpx.InvalidURL, ValueError) as exc:
        raise RefusedTarget("not a valid URL") from exc
    schemes = ("https", "http") if allow_private else ("https",)
    if parsed.scheme not in schemes:
        raise RefusedTarget("the URL must use https")
    if not host:
        raise RefusedTarget("the URL has no host")
    if parsed.userinfo:
        # Credentials in a URL end up in logs and in every GET of the subscription.
        raise RefusedTarget("the URL must not carry a user name or password")
    return parsed


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """Globally routable unicast: not loopback, private, link-local, site-local
    (fec0::/10), shared (100.64/10), multicast, reserved, documentation or unspecified."""
    inner = embedded_ipv4(address)
    if inner is not None and not is_public(inner):
        return False
    # fec0::/10 is deprecated (RFC 3879) but still routed inside some networks;
    # the standard library counts it as global.
    site_local = isinstance(address, ipaddress.IPv6Address) and address.is_site_local
    return address.is_global and not address.is_multicast and not address.is_reserved and not site_local


def check_addresses(addresses: list[str], *, allow_private: bool) -> str:
    """The address to connect to. Every address the name has must be public:
    an attacker who controls the name's DNS chooses which one a client takes."""
    if not addresses:
        raise RefusedTarget("the host does not resolve", unresolvable=True)
    if not allow_private:
        for text in addresses:
            if not is_public(ipaddress.ip_address(text)):
                raise RefusedTarget(f"the host resolves to a non-public address ({text})")
    return addresses[0]


def _literal(host: str) -> list[str] | None:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        return None


def _addresses(infos: Sequence[tuple[object, ...]]) -> list[str]:
    found: list[str] = []
    for info in infos:
        # An IPv6 sockaddr may carry a scope: "fe80::1%eth0".
        text = str(info[4][0]).split("%", 1)[0]  # type: ignore[index]
        if text not in found:
            found.append(text)
    return found


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def resolve(url: str, *, allow_private: bool) -> Target:
    """Check a URL and its host's addresses now (blocking: DNS)."""
    parsed = parse_url(url, allow_private=allow_private)
    host = host_of(parsed)
    addresses = _literal(host)
    if addresses is None:
        try:
            addresses = _addresses(socket.getaddrinfo(host, _port(parsed), type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:
            raise RefusedTarget("the host does not resolve", unresolvable=True) from exc
    return Target(parsed, check_addresses(addresses, allow_private=allow_private))


async def resolve_async(url: str, *, allow_private: bool) -> Target:
    """resolve() in a worker thread, as asyncio's own getaddrinfo does; a
    caller's time-out leaves the thread to finish alone."""
    return await anyio.to_thread.run_sync(
        functools.partial(resolve, url, allow_private=allow_private), abandon_on_cancel=True
    )
