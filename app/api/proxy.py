"""Behind a reverse proxy: the client's address from the proxy alone, and the replica's name.

Several API replicas run behind nginx (``docker-compose.yml``, ``deploy/nginx/``).
nginx opens the connections, so the peer a replica sees is nginx; nginx passes the
client's address in ``X-Forwarded-For`` and the scheme in ``X-Forwarded-Proto``.
Anyone who reaches a replica directly can send those headers too, so they are
believed only from a peer listed in ``RBMREC_TRUSTED_PROXIES`` (IP addresses,
networks, host names): then the request's client (in the access log, the metrics and
the handlers) is the right-most address of ``X-Forwarded-For`` that is not itself a
trusted proxy, and its scheme is the forwarded one. From any other peer the headers
are ignored. A value that is not an IP address never becomes the client, so the
header cannot write arbitrary text into the logs.

Host names are resolved because a proxy in a container has no fixed address: Docker's
DNS answers the service name with its containers' current addresses. They are
resolved at the first request that carries forwarded headers, and again (at most
every ``resolve_interval`` seconds) when such a request comes from an address not
among those last resolved, so a recreated proxy is recognised at its first request.
Requests without forwarded headers never cost a lookup.

Every response also names the replica that answered (``Rbmrec-Replica``, the host
name: a container's id under Docker), so that a client, a test or a dashboard behind
the proxy can tell the replicas apart.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Iterable
from typing import Final

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

__all__ = [
    "REPLICA_HEADER",
    "ForwardedHeadersMiddleware",
    "ReplicaHeaderMiddleware",
    "TrustedProxies",
    "parse_proxy_entry",
    "replica_name",
]

REPLICA_HEADER: Final = "rbmrec-replica"
RESOLVE_INTERVAL_SECONDS: Final = 1.0
_FORWARDED_SCHEMES: Final = frozenset({"http", "https"})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def replica_name() -> str:
    """The name this replica reports: the host name (a container's id under Docker)."""
    return socket.gethostname() or "unknown"


def _ip(value: str) -> IPAddress | None:
    """``value`` as an IP address (IPv4-mapped IPv6 as IPv4; ``[v6]`` accepted), or None."""
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_host_name(value: str) -> bool:
    labels = value.rstrip(".").split(".")
    return len(value) <= 253 and all(
        0 < len(label) <= 63
        and label[0] != "-"
        and label[-1] != "-"
        and all(c.isascii() and (c.isalnum() or c in "-_") for c in label)
        for label in labels
    )


def parse_proxy_entry(entry: str) -> IPAddress | IPNetwork | str:
    """One ``RBMREC_TRUSTED_PROXIES`` entry: an address, a network, or a host name.

    Raises
    ------
    ValueError
        ``entry`` is none of them (the message says what is accepted).
    """
    text = entry.strip()
    address = _ip(text)
    if address is not None:
        return address
    if "/" in text:
        try:
            return ipaddress.ip_network(text, strict=False)
        except ValueError:
            pass
    elif text and not text.replace(".", "").isdigit() and _is_host_name(text):
        return text.lower()
    raise ValueError(
        f"{entry!r} is not an IP address, a network such as 10.0.0.0/8, or a host name"
    )


class TrustedProxies:
    """The peers whose forwarded headers are believed (see the module docstring).

    Parameters
    ----------
    entries : iterable of str
        IP addresses, networks (CIDR) and host names.
    resolve_interval : float
        Shortest time between two lookups of the host names.
    """

    def __init__(
        self, entries: Iterable[str], *, resolve_interval: float = RESOLVE_INTERVAL_SECONDS
    ) -> None:
        self._addresses: set[IPAddress] = set()
        self._networks: list[IPNetwork] = []
        self._names: list[str] = []
        for entry in entries:
            parsed = parse_proxy_entry(entry)
            if isinstance(parsed, str):
                self._names.append(parsed)
            elif isinstance(parsed, ipaddress.IPv4Network | ipaddress.IPv6Network):
                self._networks.append(parsed)
            else:
                self._addresses.add(parsed)
        self._resolve_interval = resolve_interval
        self._resolved: frozenset[IPAddress] = frozenset()
        self._resolved_at: float | None = None
        self._lock = asyncio.Lock()

    @property
    def empty(self) -> bool:
        """Whether no peer at all is trusted."""
        return not (self._addresses or self._networks or self._names)

    def known(self, address: IPAddress) -> bool:
        """Whether ``address`` is trusted, by the addresses known now (no lookup)."""
        return (
            address in self._addresses
            or address in self._resolved
            or any(address in network for network in self._networks)
        )

    async def trusts(self, peer: str) -> bool:
        """Whether the peer ``peer`` is a trusted proxy, resolving the host names if due."""
        address = _ip(peer)
        if address is None:
            return False
        if self.known(address):
            return True
        if not self._names:
            return False
        async with self._lock:
            # A request that waited for another's lookup finds it fresh and re-checks.
            if (
                self._resolved_at is None
                or time.monotonic() - self._resolved_at >= self._resolve_interval
            ):
                await self._resolve()
        return self.known(address)

    async def _resolve(self) -> None:
        loop = asyncio.get_running_loop()
        found: set[IPAddress] = set()
        for name in self._names:
            try:
                infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
            except OSError as exc:
                logger.warning("trusted proxy %r does not resolve: %s", name, exc)
                continue
            for *_ignored, sockaddr in infos:
                address = _ip(str(sockaddr[0]))
                if address is not None:
                    found.add(address)
        if found != self._resolved:
            logger.info(
                "trusted proxies %s resolve to %s",
                ", ".join(self._names),
                ", ".join(sorted(map(str, found))) or "nothing",
            )
        self._resolved = frozenset(found)
        self._resolved_at = time.monotonic()

    def client_from(self, forwarded_for: str) -> str | None:
        """The client address in an ``X-Forwarded-For`` value sent by a trusted proxy.

        The right-most address that is not a trusted proxy (each proxy appends the
        address it saw); the left-most if all are. ``None`` when that entry is not an
        IP address (garbage, ``unknown``, a port), so the client stays the peer.
        """
        hops = [hop for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            address = _ip(hop)
            if address is None:
                return None
            if not self.known(address):
                return str(address)
        first = _ip(hops[0]) if hops else None
        return str(first) if first is not None else None


class ForwardedHeadersMiddleware:
    """Apply ``X-Forwarded-For`` and ``X-Forwarded-Proto`` sent by a trusted proxy.

    Rewrites ``scope["client"]`` and ``scope["scheme"]`` in place, as uvicorn's own
    proxy-headers middleware does, so uvicorn's access log shows the client too.
    """

    def __init__(self, app: ASGIApp, trusted: TrustedProxies) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.trusted.empty:
            await self._apply(scope)
        await self.app(scope, receive, send)

    async def _apply(self, scope: Scope) -> None:
        forwarded_for: list[str] = []
        proto: str | None = None
        for name, value in scope.get("headers", ()):
            if name == b"x-forwarded-for":
                forwarded_for.append(value.decode("latin-1"))
            elif name == b"x-forwarded-proto":
                proto = value.decode("latin-1").strip().lower()
        peer = scope.get("client")
        if not (forwarded_for or proto) or not peer:
            return
        if not await self.trusted.trusts(str(peer[0])):
            return
        if proto in _FORWARDED_SCHEMES:
            scope["scheme"] = proto
        if forwarded_for:
            client = self.trusted.client_from(",".join(forwarded_for))
            if client is not None:
                scope["client"] = (client, 0)


class ReplicaHeaderMiddleware:
    """Name the replica that answered in every HTTP response (``Rbmrec-Replica``)."""

    def __init__(self, app: ASGIApp, replica: str) -> None:
        self.app = app
        self.replica = replica

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_replica(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REPLICA_HEADER] = self.replica
            await send(message)

        await self.app(scope, receive, send_with_replica)
