"""TLS in front of the dev server, for the connection tests: a throwaway PKI and nghttpx.

`temporal server start-dev` has no TLS options, so the tests put a real terminator in front of it:
nghttp2's nghttpx (Debian's nghttp2-proxy, installed by .ci/run), an HTTP/2 reverse proxy that speaks
gRPC, negotiates ALPN h2, can require a client certificate from our CA (mutual TLS), and logs each
request's headers, which is how a test sees the API key header exactly as the SDK sent it.

Debian's stunnel4 was tried first and cannot do this: it negotiates no ALPN, and the SDK's gRPC client
(tonic over rustls) refuses a TLS connection without h2 (``ConnectError(H2NotNegotiated)``).
"""

from __future__ import annotations

import datetime
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support import free_port

NGHTTPX = shutil.which("nghttpx")


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA the terminator does not trust
    stranger_cert: Path  # a client certificate signed by other_ca
    stranger_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _ca(cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(ca_key, ca_cert, cn: str, *, server: bool):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def make_pki(folder: Path, server_name: str = "temporal.test") -> Pki:
    """A CA, a server certificate for ``server_name``, a client certificate; and a stranger's pair."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("stakeflow test CA")
    other_key, other_cert = _ca("someone else's CA")
    files = {}
    for name, (key, cert) in {
        "server": _leaf(ca_key, ca_cert, server_name, server=True),
        "client": _leaf(ca_key, ca_cert, "stakeflow-worker", server=False),
        "stranger": _leaf(other_key, other_cert, "stranger", server=False),
    }.items():
        _write_key(folder / f"{name}.key", key)
        (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[name] = (folder / f"{name}.pem", folder / f"{name}.key")
    (folder / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (folder / "other-ca.pem").write_bytes(other_cert.public_bytes(serialization.Encoding.PEM))
    return Pki(folder / "ca.pem", *files["server"], *files["client"], folder / "other-ca.pem", *files["stranger"])


def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.args[0]} did not listen on {port}: {log.read_text(errors='replace')[-2000:]}")


class TlsTerminator:
    """nghttpx: TLS in front, HTTP/2 (gRPC) in plaintext to ``upstream``; logs each request's path and
    authorization header (the proof that a header reached a server we control, as the SDK sent it).

    ``require_client_cert``: the handshake fails unless the client presents a certificate signed by
    the PKI's CA (mutual TLS).
    """

    def __init__(self, folder: Path, pki: Pki, upstream: str, *, require_client_cert: bool = False) -> None:
        self.port = free_port()
        self.log = folder / "nghttpx-access.log"
        self.errors = folder / "nghttpx-error.log"
        host, port = upstream.rsplit(":", 1)
        self.argv = [
            NGHTTPX,
            f"--frontend=127.0.0.1,{self.port}",
            f"--backend={host},{port};;proto=h2",
            str(pki.server_key),
            str(pki.server_cert),
            "--workers=1",
            "--no-ocsp",
            f"--accesslog-file={self.log}",
            f"--errorlog-file={self.errors}",
            "--accesslog-format=$method $path authorization=[$http_authorization] ns=[$http_temporal_namespace]",
        ]
        if require_client_cert:
            self.argv += ["--verify-client", f"--verify-client-cacert={pki.ca}"]
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> TlsTerminator:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc, self.errors)
        return self

    def __exit__(self, *exc) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(10)

    def errors_text(self) -> str:
        return self.errors.read_text(errors="replace") if self.errors.exists() else ""

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines() if self.log.exists() else []

    def wait_for(self, needle: str, timeout: float = 10) -> list[str]:
        """The access-log lines containing ``needle``, once there is one (nghttpx writes them a little later)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.lines() if needle in line]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)
