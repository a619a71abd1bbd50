"""The http_get tool: an HTTP(S) GET within a host allowlist, a size limit and a time limit.

A model chooses the URL, so this is the tool that could reach the worker's own network: every
redirect hop is checked, internal addresses are refused unless a host is listed exactly, the
connection goes to the address that was checked (no second DNS answer), and no proxy from the
environment is used.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import httpx

from stakeflow.activities.tools.context import ToolContext
from stakeflow.agents.tools import HttpGetArgs
from stakeflow.agents.types import ToolResult
from stakeflow.config import HttpGetConfig
from stakeflow.core.errors import ToolError

MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}
_ALLOW_HOSTS = "[tools.http_get] allow_hosts in stakeflow.toml"


async def execute(args: HttpGetArgs, ctx: ToolContext) -> ToolResult:
    """Fetch a URL, checking the host of every hop and reading at most ``max_bytes``."""
    raw_url, cfg = args.url, ctx.config.http_get
    url = _parse_url(raw_url)
    try:
        async with asyncio.timeout(cfg.timeout_s):
            return await _fetch(url, cfg)
    except (TimeoutError, httpx.TimeoutException):
        raise ToolError(f"{raw_url} did not answer within {cfg.timeout_s:g}s: try again later or another URL") from None
    except httpx.HTTPError as e:
        raise ToolError(f"fetching {raw_url} failed: {e or type(e).__name__}") from None


async def _fetch(url: httpx.URL, cfg: HttpGetConfig) -> ToolResult:
    # No proxies from the environment (a proxy would make the address checks moot), and no
    # automatic redirects (every hop is checked). SSL_CERT_FILE is still honoured.
    async with httpx.AsyncClient(
        timeout=cfg.timeout_s, follow_redirects=False, trust_env=False, verify=httpx.create_ssl_context()
    ) as client:
        for _ in range(MAX_REDIRECTS + 1):
            address = await _vet_host(url, cfg.allow_hosts)
            response = await client.send(_pinned_request(client, url, address), stream=True)
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    url = _parse_url(str(url.join(location)))
                    continue
                body, truncated = await _read_capped(response, cfg.max_bytes)
            finally:
                await response.aclose()
            return ToolResult(output=_describe_response(url, response, body, truncated, cfg), truncated=truncated)
    raise ToolError(f"more than {MAX_REDIRECTS} redirects, the last to {url}: fetch the final URL directly")


def _parse_url(raw: str) -> httpx.URL:
    try:
        url = httpx.URL(raw.strip())
    except httpx.InvalidURL as e:
        raise ToolError(f"'{raw}' is not a valid URL ({e})") from None
    if url.scheme not in ("http", "https"):
        scheme = f"the {url.scheme}: scheme" if url.scheme else "no scheme"
        raise ToolError(f"'{raw}' has {scheme}: only http:// and https:// URLs can be fetched")
    if not url.host:
        raise ToolError(f"'{raw}' has no host: e.g. https://example.com/page")
    return url


def _pinned_request(client: httpx.AsyncClient, url: httpx.URL, address: str) -> httpx.Request:
    """A request to the vetted address, so a second DNS answer cannot point it elsewhere."""
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
    # identity: max_bytes then bounds what the server sends, not what a compressed body inflates to.
    headers = {"Host": url.netloc.decode("ascii"), "Accept-Encoding": "identity"}
    return client.build_request("GET", url.copy_with(host=address), headers=headers, extensions=extensions)


async def _vet_host(url: httpx.URL, allow_hosts: list[str]) -> str:
    """Check the host against the allowlist and its addresses; return the address to connect to."""
    host = url.host.lower().rstrip(".")
    listed = _listed(host, allow_hosts)
    if allow_hosts and listed is None:
        raise ToolError(f"host '{host}' is not allowed: add it to {_ALLOW_HOSTS} (allowed: {', '.join(allow_hosts)})")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            url.raw_host.decode("ascii"), port, type=socket.SOCK_STREAM
        )
    except (socket.gaierror, UnicodeError) as e:
        raise ToolError(f"cannot resolve host '{host}' ({e}): check the URL") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses:
        raise ToolError(f"host '{host}' has no address: check the URL")
    if listed != "exact":
        # Wildcards do not vouch for internal addresses: *.example.com may resolve to 10.0.0.5.
        for address in addresses:
            internal = _internal_kind(address)
            if internal:
                kind, embedded = internal
                inside = f" ({embedded})" if embedded else ""
                raise ToolError(
                    f"host '{host}' resolves to {address}, a {kind} address{inside}, and internal addresses are "
                    f"refused: if you trust it, list '{host}' exactly in {_ALLOW_HOSTS}"
                )
    return str(addresses[0])


def _listed(host: str, allow_hosts: list[str]) -> str | None:
    """'exact' or 'wildcard' when an allow_hosts entry matches ``host``, else None."""
    entries = [entry.strip().lower().strip("[]").rstrip(".") for entry in allow_hosts]
    if host in entries:
        return "exact"
    if _is_ip(host):
        return None  # a wildcard names domains, never addresses
    if any(e.startswith("*.") and host.endswith(e[1:]) for e in entries):
        return "wildcard"
    return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: where the IPv4 sits is the network's choice
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated (RFC 4291), still routed by some stacks
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _internal_kind(address: Address) -> tuple[str, str] | None:
    """(kind, what it embeds) when ``address`` is internal, or an IPv4 address inside it is; else None.

    An IPv6 address can carry an IPv4 one that the network delivers to: 6to4 (2002::/16),
    Teredo (2001::/32, the client's address inverted in the last 32 bits; its server's in bits 32-63),
    NAT64 (64:ff9b::/96), IPv4-mapped and IPv4-compatible forms. Python classifies 2002:7f00:1::1 as
    global, yet it reaches 127.0.0.1 through a 6to4 relay: so every embedded IPv4 is classified first.
    The translated forms (mapped, NAT64) are that IPv4 address and nothing else; the tunnelled ones
    (6to4, Teredo, compatible) must pass as IPv6 addresses too.
    """
    if isinstance(address, ipaddress.IPv6Address):
        translated, tunnelled = _embedded_ipv4(address)
        for inner, form in translated + tunnelled:
            kind = _kind_of(inner)
            if kind:
                return kind, f"{inner} inside {form} address"
        if translated:
            return None
        if address in _NAT64_LOCAL:
            return "private", ""
    kind = _kind_of(address)
    return (kind, "") if kind else None


_Embedded = list[tuple[ipaddress.IPv4Address, str]]


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[_Embedded, _Embedded]:
    """(translated, tunnelled): the IPv4 addresses ``address`` carries, each with the form's name."""
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.ipv4_mapped is not None:
        return [(address.ipv4_mapped, "an IPv4-mapped")], []
    if address in _NAT64:
        return [(low32, "a NAT64")], []
    if address.sixtofour is not None:
        return [], [(address.sixtofour, "a 6to4")]
    if address.teredo is not None:
        server, client = address.teredo
        return [], [(client, "a Teredo"), (server, "a Teredo")]
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # not :: or ::1, which are themselves
        return [], [(low32, "an IPv4-compatible")]
    return [], []


def _kind_of(address: Address) -> str | None:
    # The specific kinds first: 169.254.169.254 is private too, but link-local says what it is.
    for kind in ("loopback", "link_local", "unspecified", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if address.is_global else "non-public"


async def _read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            return bytes(body[:limit]), True  # stop reading: the rest never leaves the socket
    return bytes(body), False


def _describe_response(
    url: httpx.URL, response: httpx.Response, body: bytes, truncated: bool, cfg: HttpGetConfig
) -> str:
    try:
        text = body.decode(response.encoding or "utf-8", errors="replace")
    except LookupError:
        text = body.decode("utf-8", errors="replace")
    head = [
        f"HTTP {response.status_code} {response.reason_phrase}".rstrip(),
        f"url: {url}",
        f"content-type: {response.headers.get('content-type', 'unknown')}",
    ]
    note = ""
    if truncated:
        note = (
            f"\n[truncated: stopped reading after {cfg.max_bytes} bytes; "
            "raise [tools.http_get] max_bytes in stakeflow.toml to read more]"
        )
    return "\n".join(head) + "\n\n" + text + note
