"""The http_get tool through run_tool: the allowlist, internal addresses, redirects, limits and TLS.

It talks to real HTTP(S) servers on 127.0.0.1 started here; where a test needs a host name to
resolve somewhere chosen, it swaps the event loop's resolver, the one the tool uses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from stakeflow.activities.tools.http_get import _internal_kind
from stakeflow.config import HttpGetConfig, ToolsConfig
from tests.tool_cases import refused, run, tools_config

ALLOW_HOSTS = "[tools.http_get] allow_hosts in stakeflow.toml"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the name http.server calls
        url = urlparse(self.path)
        if url.path == "/hello":
            self._send(200, b"hello world")
        elif url.path == "/big":
            self._send(200, b"x" * 10_000)
        elif url.path == "/host":
            self._send(200, self.headers["Host"].encode())
        elif url.path in ("/redirect", "/loop"):
            self.send_response(302)
            self.send_header("Location", "/loop" if url.path == "/loop" else parse_qs(url.query)["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, b"not found")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(server: ThreadingHTTPServer) -> Iterator[int]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    yield from _serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))


@pytest.fixture
async def resolve_to(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Make chosen host names resolve to chosen addresses, for the activity's resolver."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    names: dict[str, str] = {}

    async def getaddrinfo(host, port, *args, **kwargs):
        if host in names:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (names[host], port))]
        return await real(host, port, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return names


def _http(*allow_hosts: str, max_bytes: int = 1_000_000) -> ToolsConfig:
    return tools_config(http=HttpGetConfig(allow_hosts=list(allow_hosts), max_bytes=max_bytes, timeout_s=5))


async def test_http_get_refuses_loopback_by_default(port: int) -> None:
    error = refused(await run("http_get", {"url": f"http://127.0.0.1:{port}/hello"}, config=_http()))
    assert error == (
        "host '127.0.0.1' resolves to 127.0.0.1, a loopback address, and internal addresses are refused: "
        f"if you trust it, list '127.0.0.1' exactly in {ALLOW_HOSTS}"
    )


async def test_http_get_refuses_ipv4_mapped_loopback(port: int) -> None:
    error = refused(await run("http_get", {"url": f"http://[::ffff:127.0.0.1]:{port}/hello"}, config=_http()))
    assert error.startswith("host '::ffff:127.0.0.1' resolves to ::ffff:7f00:1, a loopback address")


@pytest.mark.parametrize(
    ("host", "kind", "embedded"),
    [
        ("2002:7f00:1::1", "loopback", "127.0.0.1 inside a 6to4 address"),
        ("2002:a00:1::1", "private", "10.0.0.1 inside a 6to4 address"),
        # Teredo: the client's IPv4 is the last 32 bits, inverted (0x80fffffe ^ 0xffffffff = 127.0.0.1).
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback", "127.0.0.1 inside a Teredo address"),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private", "10.0.0.1 inside a Teredo address"),
        ("64:ff9b::7f00:1", "loopback", "127.0.0.1 inside a NAT64 address"),
        ("64:ff9b::a9fe:a9fe", "link-local", "169.254.169.254 inside a NAT64 address"),
        ("::7f00:1", "loopback", "127.0.0.1 inside an IPv4-compatible address"),
        ("::ffff:a00:1", "private", "10.0.0.1 inside an IPv4-mapped address"),
    ],
)
async def test_http_get_refuses_internal_ipv4_embedded_in_ipv6(host: str, kind: str, embedded: str) -> None:
    # Literal addresses: no resolver involved, so exactly what a model could put in a URL.
    error = refused(await run("http_get", {"url": f"http://[{host}]:8080/"}, config=_http()))
    address = ipaddress.ip_address(host)
    assert error == (
        f"host '{host}' resolves to {address}, a {kind} address ({embedded}), and internal addresses are "
        f"refused: if you trust it, list '{host}' exactly in {ALLOW_HOSTS}"
    )


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("2002:808:808::1", None),  # 6to4 of a public address: a tunnel endpoint on the internet
        ("64:ff9b::808:808", None),  # NAT64 of a public address: how an IPv6-only network reaches it
        ("::ffff:808:808", None),
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "private"),  # Teredo of 8.8.8.8: 2001::/32 itself is not global
        ("64:ff9b:1::a00:1", "private"),  # local-use NAT64 (RFC 8215): where the IPv4 sits is the network's choice
        ("2606:4700::1111", None),
    ],
)
def test_http_get_classifies_the_ipv6_address_after_its_embedded_ipv4(address: str, kind: str | None) -> None:
    found = _internal_kind(ipaddress.ip_address(address))
    assert (found[0] if found else None) == kind


async def test_http_get_fetches_an_allowlisted_host(port: int) -> None:
    result = await run("http_get", {"url": f"http://127.0.0.1:{port}/hello"}, config=_http("127.0.0.1"))
    assert (result.ok, result.truncated) == (True, False)
    assert result.output == (
        f"HTTP 200 OK\nurl: http://127.0.0.1:{port}/hello\ncontent-type: text/plain; charset=utf-8\n\nhello world"
    )


async def test_http_get_reports_an_error_status(port: int) -> None:
    result = await run("http_get", {"url": f"http://127.0.0.1:{port}/missing"}, config=_http("127.0.0.1"))
    assert result.ok
    assert result.output.startswith("HTTP 404 Not Found\n") and result.output.endswith("\n\nnot found")


async def test_http_get_stops_reading_at_max_bytes(port: int) -> None:
    result = await run("http_get", {"url": f"http://127.0.0.1:{port}/big"}, config=_http("127.0.0.1", max_bytes=100))
    assert result.ok and result.truncated
    assert result.output == (
        f"HTTP 200 OK\nurl: http://127.0.0.1:{port}/big\ncontent-type: text/plain; charset=utf-8\n\n"
        + "x" * 100
        + "\n[truncated: stopped reading after 100 bytes; raise [tools.http_get] max_bytes in stakeflow.toml to read more]"
    )


async def test_http_get_follows_a_redirect_to_an_allowed_host(port: int) -> None:
    url = f"http://127.0.0.1:{port}/redirect?to=/hello"
    result = await run("http_get", {"url": url}, config=_http("127.0.0.1"))
    assert result.output.startswith(f"HTTP 200 OK\nurl: http://127.0.0.1:{port}/hello\n")
    assert result.output.endswith("\n\nhello world")


async def test_http_get_checks_every_redirect_hop(port: int) -> None:
    # localhost is loopback too, but only 127.0.0.1 is listed.
    url = f"http://127.0.0.1:{port}/redirect?to=http://localhost:{port}/hello"
    error = refused(await run("http_get", {"url": url}, config=_http("127.0.0.1")))
    assert error == f"host 'localhost' is not allowed: add it to {ALLOW_HOSTS} (allowed: 127.0.0.1)"


async def test_http_get_checks_the_address_of_a_wildcard_hop(port: int, resolve_to: dict[str, str]) -> None:
    resolve_to["evil.example.com"] = "127.0.0.1"
    url = f"http://127.0.0.1:{port}/redirect?to=http://evil.example.com:{port}/hello"
    error = refused(await run("http_get", {"url": url}, config=_http("127.0.0.1", "*.example.com")))
    assert error == (
        "host 'evil.example.com' resolves to 127.0.0.1, a loopback address, and internal addresses are refused: "
        f"if you trust it, list 'evil.example.com' exactly in {ALLOW_HOSTS}"
    )


async def test_http_get_wildcard_does_not_vouch_for_private_addresses(resolve_to: dict[str, str]) -> None:
    resolve_to["intranet.example.com"] = "10.0.0.5"
    error = refused(await run("http_get", {"url": "http://intranet.example.com/"}, config=_http("*.example.com")))
    assert error.startswith("host 'intranet.example.com' resolves to 10.0.0.5, a private address")


async def test_http_get_connects_to_the_address_it_checked(port: int, resolve_to: dict[str, str]) -> None:
    # httpx cannot resolve pinned.test itself: the response proves it went to the vetted address,
    # with the original Host header.
    resolve_to["pinned.test"] = "127.0.0.1"
    result = await run("http_get", {"url": f"http://pinned.test:{port}/host"}, config=_http("pinned.test"))
    assert result.output.endswith(f"\n\npinned.test:{port}")


async def test_http_get_refuses_a_host_not_on_the_allowlist(port: int) -> None:
    error = refused(await run("http_get", {"url": f"http://127.0.0.1:{port}/hello"}, config=_http("example.com")))
    assert error == f"host '127.0.0.1' is not allowed: add it to {ALLOW_HOSTS} (allowed: example.com)"
    error = refused(await run("http_get", {"url": "https://badexample.com/"}, config=_http("*.example.com")))
    assert error == f"host 'badexample.com' is not allowed: add it to {ALLOW_HOSTS} (allowed: *.example.com)"


@pytest.mark.parametrize(
    ("url", "error"),
    [
        (
            "file:///etc/passwd",
            "'file:///etc/passwd' has the file: scheme: only http:// and https:// URLs can be fetched",
        ),
        (
            "ftp://example.com/x",
            "'ftp://example.com/x' has the ftp: scheme: only http:// and https:// URLs can be fetched",
        ),
        ("example.com/page", "'example.com/page' has no scheme: only http:// and https:// URLs can be fetched"),
    ],
)
async def test_http_get_refuses_other_schemes(url: str, error: str) -> None:
    assert refused(await run("http_get", {"url": url}, config=_http())) == error


async def test_http_get_gives_up_after_five_redirects(port: int) -> None:
    error = refused(await run("http_get", {"url": f"http://127.0.0.1:{port}/loop"}, config=_http("127.0.0.1")))
    assert error == f"more than 5 redirects, the last to http://127.0.0.1:{port}/loop: fetch the final URL directly"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """An HTTPS server on 127.0.0.1 whose certificate names only secure.test."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=secure.test",
            "-addext",
            "subjectAltName=DNS:secure.test",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    for port in _serve(server):
        yield port, cert


@pytest.fixture
def trusted_tls(tls: tuple[int, Path], monkeypatch: pytest.MonkeyPatch) -> int:
    """The HTTPS server's port, its certificate the one this process trusts (SSL_CERT_FILE)."""
    port, cert = tls
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    return port


async def test_https_pins_the_address_and_verifies_the_name(trusted_tls: int, resolve_to: dict[str, str]) -> None:
    resolve_to["secure.test"] = "127.0.0.1"
    result = await run("http_get", {"url": f"https://secure.test:{trusted_tls}/hello"}, config=_http("secure.test"))
    assert (result.ok, result.error) == (True, None)
    assert result.output.endswith("\n\nhello world")


async def test_https_refuses_a_certificate_for_another_name(trusted_tls: int, resolve_to: dict[str, str]) -> None:
    resolve_to["other.test"] = "127.0.0.1"
    url = f"https://other.test:{trusted_tls}/hello"
    error = refused(await run("http_get", {"url": url}, config=_http("other.test")))
    assert error.startswith(f"fetching {url} failed: ")
    assert "certificate is not valid for 'other.test'" in error
