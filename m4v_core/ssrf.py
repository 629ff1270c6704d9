"""SSRF guard for outbound webhooks: the address that was checked is the address that is connected to.

A guard that resolves the receiver's name, checks the answer and then lets the HTTP client connect by name
resolves it twice. A hostile DNS server can answer a public address to the check and 127.0.0.1 or
169.254.169.254 to the connection (DNS rebinding). PinnedTransport closes that window with httpx's own
extension points (the custom-transport pattern of encode/httpx#2868):

- it resolves the host once per request (Resolver, injectable; system_resolver by default),
- it refuses the request if ANY resolved address is not global unicast (is_blocked: private, loopback,
  link-local, shared 100.64/10, documentation, reserved, unspecified, multicast), unless the name or every
  address is allow-listed. Refusing rather than filtering: a name that mixes public and internal addresses
  is either misconfigured or an attack, and a webhook can wait,
- it hands the inner transport a copy of the request whose URL carries the checked IP. The Host header stays
  the name (httpx wrote it from the original URL), and for https the `sni_hostname` request extension makes
  httpcore send the name as TLS SNI and verify the certificate against the name (ssl server_hostname),
- it tries the checked addresses in resolver order, moving on only when a connect fails (as
  socket.create_connection would); every try gets the client's connect timeout.

The default inner transport keeps no idle connections: httpcore pools by origin, which is now the IP, so
a kept-alive TLS connection verified for one name could otherwise carry a later request for another name
served from the same IP. Environment proxies are not used (a proxy would resolve the name itself).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence

import httpx

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], Sequence[str]]  # (host, port) -> IP addresses, in preference order
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class HostLookupError(httpx.ConnectError):
    """The receiver's name did not resolve (now): a transport error, retried with backoff like a refused
    connection, unlike WebhookRefusedError (a URL that may never be called)."""


class WebhookRefusedError(ValueError):
    """The URL may not be called: wrong scheme, or a non-public address not allow-listed. The message is
    shown to the tenant and never names the address a name resolved to; ``address`` (for logs) does."""

    def __init__(self, message: str, address: str | None = None) -> None:
        super().__init__(message)
        self.address = address


def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's answer (getaddrinfo), deduplicated, order kept."""
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))


def is_blocked(ip: IPAddress) -> bool:
    """Everything that is not global unicast: the IANA special-purpose ranges (RFC 6890 and successors:
    private, loopback, link-local, shared address space 100.64/10 (carrier NAT; cloud metadata services such
    as 100.100.100.200 live there), documentation, benchmarking, reserved, unspecified) and multicast."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def ascii_host(url: httpx.URL) -> str:
    """The host as it goes on the wire: lower case, IDNA (punycode) for international names."""
    return url.raw_host.decode("ascii").lower()


def _resolve(host: str, port: int, resolver: Resolver) -> list[str]:
    if _literal(host) is not None:
        return [host]
    try:
        addresses = list(resolver(host, port))
    except OSError as exc:  # socket.gaierror and friends: a DNS outage passes, so this is retried
        raise HostLookupError(f"cannot resolve webhook host {host!r}: {exc}") from exc
    if not addresses:
        raise HostLookupError(f"webhook host {host!r} resolves to no address")
    for addr in addresses:
        if _literal(addr) is None:
            raise WebhookRefusedError(f"resolver answered {addr!r} for {host!r}, not an IP address")
    return addresses


def check_url(
    url: str | httpx.URL, allow_hosts: Sequence[str] = (), resolver: Resolver = system_resolver
) -> list[str]:
    """Resolve the URL's host once; return its addresses if all may be called, else raise WebhookRefusedError.

    http(s) only. Allow-listing matches the host as written, or every address it resolves to.
    """
    parsed = httpx.URL(url) if isinstance(url, str) else url
    if parsed.scheme not in ("http", "https"):
        raise WebhookRefusedError(f"webhook URL must be http(s), got {parsed.scheme!r}")
    host = ascii_host(parsed)
    if not host:
        raise WebhookRefusedError(f"webhook URL has no host: {str(url)!r}")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses = _resolve(host, port, resolver)
    allowed = {h.lower() for h in allow_hosts}
    if host in allowed or set(addresses) <= allowed:
        return addresses
    for addr in addresses:
        if is_blocked(ipaddress.ip_address(addr)):
            # The tenant sees the URL refused, not what an internal name resolves to; the operator's log does.
            log.warning("webhook refused", extra={"host": host, "address": addr})
            raise WebhookRefusedError(f"webhook host {host!r} is not a public internet address", addr)
    return addresses


def pin(request: httpx.Request, address: str) -> httpx.Request:
    """A copy of `request` sent to `address`, with the Host header and TLS name of the original host."""
    extensions = dict(request.extensions)
    host = ascii_host(request.url)
    if request.url.scheme == "https" and _literal(host) is None:
        extensions["sni_hostname"] = host  # SNI and certificate check against the name
    return httpx.Request(
        request.method,
        request.url.copy_with(host=address),
        headers=request.headers,  # keeps Host: <name>[:port]
        stream=request.stream,
        extensions=extensions,
    )


class PinnedTransport(httpx.BaseTransport):
    """Checks each request's host (check_url) and connects only to the addresses that were checked."""

    def __init__(
        self,
        allow_hosts: Sequence[str] = (),
        resolver: Resolver = system_resolver,
        inner: httpx.BaseTransport | None = None,
    ) -> None:
        self.allow_hosts = list(allow_hosts)
        self.resolver = resolver
        self.inner = inner or httpx.HTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        addresses = check_url(request.url, self.allow_hosts, self.resolver)  # the only lookup
        error: httpx.TransportError | None = None
        for address in addresses:
            try:
                return self.inner.handle_request(pin(request, address))
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing sent yet: next address
                error = exc
        assert error is not None  # check_url returns at least one address
        raise error

    def close(self) -> None:
        self.inner.close()
