"""Outbound calls to addresses an admin typed in (supplier and shop `api_base_url`) may not
reach our own network: the guard refuses private, loopback, link-local, unspecified,
multicast and reserved destinations unless allow-listed.

Checked twice. When the URL is saved (`check_url`: a clear 422), and when a connection is
opened (`GuardedTransport`): the host is resolved, every address it resolves to is
checked, and the connection is made to the address that was checked, so a name that
resolves to 127.0.0.1, or that changes its answer between the check and the connect (DNS
rebinding), never reaches it. TLS still verifies the certificate for the host name (httpcore
sends the URL's host as SNI whatever address the socket connects to).

The guarded client ignores proxy variables (`HTTP_PROXY`...): a proxy would connect on
our behalf, past the check. An egress proxy with its own policy is the alternative.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpcore
import httpx

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolve = Callable[[str, int], Awaitable[list[str]]]
REFUSED = "egress refused"
"""Start of the message of a connection the guard refused (see `is_refusal`)."""


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (the system resolver, as a connect would use)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def forbidden_address(address: IpAddress) -> str | None:
    """Why `address` is internal (loopback, private...), or None for a public one."""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    for reason, flag in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("not globally routable", not address.is_global),
    ):
        if flag:
            return reason
    return None


@dataclass(frozen=True)
class EgressPolicy:
    """`enforce` (production) and the allow-list: host names (`erp.local`, or `.corp.example`
    for every name under it) and networks (`10.20.0.0/16`, `192.0.2.7`)."""

    enforce: bool
    hosts: frozenset[str] = frozenset()
    networks: tuple[IpNetwork, ...] = ()
    resolver: Resolve = field(default=resolve, compare=False)

    @classmethod
    def parse(cls, enforce: bool, allowed: str | Iterable[str] = "") -> EgressPolicy:
        items = allowed.split(",") if isinstance(allowed, str) else list(allowed)
        hosts: set[str] = set()
        networks: list[IpNetwork] = []
        for item in (i.strip().lower() for i in items):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                hosts.add(item.rstrip("."))
        return cls(enforce, frozenset(hosts), tuple(networks))

    def host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in self.hosts or any(h.startswith(".") and host.endswith(h) for h in self.hosts)

    def refusal(self, address: IpAddress) -> str | None:
        """Why a connection to `address` is refused, or None."""
        if not self.enforce or any(address in n for n in self.networks):
            return None
        reason = forbidden_address(address)
        return f"{address} is {reason}" if reason else None

    async def check_url(self, url: str) -> str | None:
        """Why `url` may not be called (resolving its host), or None. For saving a URL; the
        connect-time check is what protects."""
        if not self.enforce:
            return None
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https") or not host:
            return "must be an absolute http(s) URL"
        if self.host_allowed(host):
            return None
        if host == "localhost" or host.endswith(".localhost"):
            return f"{host} is loopback"
        try:
            literal: IpAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            return self.refusal(literal)
        try:
            async with asyncio.timeout(3):
                addresses = await self.resolver(host, parts.port or 443)
        except (OSError, TimeoutError):
            return None  # not resolvable now: checked again at every connect
        for address in addresses:
            if why := self.refusal(ipaddress.ip_address(address)):
                return f"{host} resolves to {why}"
        return None

    async def pinned(self, host: str, port: int) -> list[str]:
        """The addresses a connection to `host` may use, every one checked; raises
        `httpcore.ConnectError` naming the refusal."""
        try:
            literal: IpAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            if why := self.refusal(literal):
                raise httpcore.ConnectError(f"{REFUSED}: {why}")
            return [host]
        try:
            addresses = await self.resolver(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        if self.enforce and not self.host_allowed(host):
            for address in addresses:  # every one: a rebinding answer may come next time
                if why := self.refusal(ipaddress.ip_address(address)):
                    raise httpcore.ConnectError(f"{REFUSED}: {host} resolves to {why}")
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host}")
        return addresses


def is_refusal(exc: BaseException) -> bool:
    """Did the guard refuse this connection (not worth retrying)?"""
    return str(exc).startswith(REFUSED)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves and checks the host itself, then connects to a checked address."""

    def __init__(self, policy: EgressPolicy, inner: httpcore.AsyncNetworkBackend | None = None):
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if not self.policy.enforce:
            return await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)
        last: Exception | None = None
        for address in await self.policy.pinned(host, port):
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError(f"{REFUSED}: unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """`httpx.AsyncHTTPTransport` whose connections go through `GuardedBackend`."""

    def __init__(self, policy: EgressPolicy, limits: httpx.Limits = httpx.Limits()) -> None:
        super().__init__(limits=limits, trust_env=False)
        # httpx takes no network backend; its pool is rebuilt the way httpx builds it
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy),
        )


def guarded_client(
    policy: EgressPolicy,
    limits: httpx.Limits = httpx.Limits(),
    timeout: float | None = 5.0,
) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` for calls to admin-configured URLs."""
    return httpx.AsyncClient(
        transport=GuardedTransport(policy, limits), trust_env=False, timeout=timeout
    )


async def refuse_internal(policy: EgressPolicy, url: object, field: str, allow_list: str) -> None:
    """422 (`shared.http.Unprocessable`) naming `field` when `url` is an internal address
    the guard refuses; `allow_list` names the setting that would allow it."""
    from shared.http import Unprocessable

    if url is None:
        return
    if why := await policy.check_url(str(url)):
        raise Unprocessable(
            f"{field.removeprefix('body.')}: {why}",
            details=[
                {
                    "field": field,
                    "reason": f"internal address refused ({why}); an on-premise host goes "
                    f"in {allow_list}",
                }
            ],
        )
