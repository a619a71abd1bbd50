"""Connecting to Temporal: the resolved target (``stakeflow.config.Target``), TLS read from its files, stakeflow's
plugin (the pydantic data converter, payload encryption when keys are configured, tracing), and errors that name
the fix.

Every Temporal client stakeflow makes (CLI, workers, webhook server, codec server checks, doctor) comes
from ``connect``, so all of them reach the same server the same way and encrypt the same way: a client
that skipped the codec would write payloads in clear, or fail to read the ones the others wrote.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NoReturn

from temporalio.client import Client
from temporalio.service import TLSConfig

from stakeflow.config import Pem, Settings, Target
from stakeflow.core.errors import ConfigError, ServiceError
from stakeflow.temporal.plugin import StakeflowPlugin

if TYPE_CHECKING:
    from temporalio.runtime import Runtime


async def connect(
    settings: Settings, *, runtime: Runtime | None = None, plugin: StakeflowPlugin | None = None
) -> Client:
    """A client for the configured server, with stakeflow's plugin (``plugin``, or one without activity holders);
    ConfigError for unusable TLS files, ServiceError naming the fix when the server cannot be reached or refuses
    the connection."""
    target = settings.target
    tls = tls_config(target)
    try:
        return await Client.connect(
            target.address,
            namespace=target.namespace,
            api_key=target.api_key.get_secret_value() if target.api_key else None,
            tls=tls,
            rpc_metadata=dict(target.grpc_meta),
            plugins=[plugin or StakeflowPlugin(settings)],
            runtime=runtime,
        )
    except RuntimeError as e:
        raise ServiceError(explain_failure(target, e)) from None


def tls_config(target: Target) -> TLSConfig | bool:
    """The SDK's TLS settings, each PEM read and checked here, so a bad file is named before any handshake."""
    if not target.tls:
        return False
    cert_pem, key_pem = target.client_cert, target.client_key
    ca = _read(target.server_ca, "server CA certificate", "CERTIFICATE")
    cert = _read(cert_pem, "client certificate", "CERTIFICATE")
    key = _read(key_pem, "client private key", "PRIVATE KEY")
    # _read gives the bytes of exactly the PEMs that are configured.
    if cert_pem is not None and key_pem is None:
        _unpaired("certificate", "key", cert_pem)
    if key_pem is not None and cert_pem is None:
        _unpaired("key", "certificate", key_pem)
    if cert is not None and key is not None and cert_pem is not None and key_pem is not None:
        _check_pair(cert, key, cert_pem, key_pem)
    return TLSConfig(server_root_ca_cert=ca, domain=target.server_name, client_cert=cert, client_private_key=key)


def _unpaired(have: str, missing: str, given: Pem) -> NoReturn:
    raise ConfigError(
        f"a client {have} is configured ({given.label}, from {given.origin}) without its {missing}: set both "
        "(STAKEFLOW_TEMPORAL_TLS_CERT_FILE and _KEY_FILE, or TEMPORAL_TLS_CLIENT_CERT_PATH and _KEY_PATH)"
    )


def _read(pem: Pem | None, what: str, marker: str) -> bytes | None:
    if pem is None:
        return None
    if pem.path is not None:
        try:
            data = pem.path.read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read the {what} {pem.path} (from {pem.origin}): {e.strerror}") from None
    elif pem.data is not None:
        data = pem.data.get_secret_value().encode()
    else:
        raise ConfigError(f"the {what} from {pem.origin} has neither a file nor inline PEM data")
    if b"-----BEGIN" not in data or marker.encode() not in data:
        raise ConfigError(
            f"the {what} {pem.label} (from {pem.origin}) is not a PEM {marker.lower()}: "
            "give the PEM file (-----BEGIN ...-----)"
        )
    return data


def _check_pair(cert: bytes, key: bytes, cert_pem: Pem, key_pem: Pem) -> None:
    """A certificate and a key that do not belong together fail every handshake with an opaque error."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        certificate = x509.load_pem_x509_certificate(cert)
    except ValueError as e:
        raise ConfigError(
            f"the client certificate {cert_pem.label} (from {cert_pem.origin}) does not parse: {e}"
        ) from None
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(
            f"the client private key {key_pem.label} (from {key_pem.origin}) does not load "
            f"({e}): give an unencrypted PEM key"
        ) from None
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if certificate.public_key().public_bytes(*fmt) != private.public_key().public_bytes(*fmt):
        raise ConfigError(
            f"the client private key {key_pem.label} does not belong to the client certificate "
            f"{cert_pem.label}: configure the key that was issued with that certificate"
        )


def explain_failure(target: Target, e: Exception) -> str:
    """What a failed connect means and what to change, from the SDK's message (one line, no secrets)."""
    text = " ".join(str(e).split())
    low = text.lower()
    where = f"Temporal at {target.address} (address from {target.origins.get('address', 'stakeflow defaults')})"
    if target.local:
        return f"cannot reach {where} ({_short(text)}): run `stakeflow up` to start it"
    if "unknownissuer" in low or "invalid peer certificate" in low or "certificate verify failed" in low:
        ca = (
            f"the server CA {target.server_ca.label} (from {target.server_ca.origin})"
            if target.server_ca
            else "the system CAs"
        )
        return (
            f"{where} presented a certificate that {ca} does not trust ({_short(text)}): configure the CA that "
            "signed the server's certificate (STAKEFLOW_TEMPORAL_TLS_CA_FILE or TEMPORAL_TLS_SERVER_CA_CERT_PATH), "
            "or the name it carries (TEMPORAL_TLS_SERVER_NAME)"
        )
    if "notvalidforname" in low or "not valid for name" in low:
        return (
            f"{where} presented a certificate for another name ({_short(text)}): set TEMPORAL_TLS_SERVER_NAME "
            "(or STAKEFLOW_TEMPORAL_TLS_SERVER_NAME) to the name on it"
        )
    # Under TLS 1.3 a server checks the client certificate after the client's side of the handshake is
    # done, so its refusal surfaces as whatever the first call then meets: an alert, a reset, a broken
    # pipe, a closed connection, or one closed before the call was sent ("connection was not ready").
    handshake = "connection refused" not in low and any(
        w in low
        for w in (
            "tls",
            "handshake",
            "certificate",
            "alert",
            "connection reset",
            "broken pipe",
            "connection closed",
            "connection was not ready",
            "transport error",
        )
    )
    if target.tls and target.client_cert is not None and handshake:
        return (
            f"{where} refused the TLS handshake ({_short(text)}): the server did not accept the client certificate "
            f"{target.client_cert.label} (from {target.client_cert.origin}); configure one signed by the CA the "
            "server requires"
        )
    if target.tls and handshake:
        return (
            f"{where} refused the TLS handshake ({_short(text)}): if the server requires a client certificate, "
            "set TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH; if it speaks plaintext, "
            "set TEMPORAL_TLS=false"
        )
    if not target.tls and ("broken pipe" in low or "connection reset" in low):
        return (
            f"{where} closed the connection ({_short(text)}): if it speaks TLS (Temporal Cloud does), set "
            "TEMPORAL_TLS=true, and its CA when it is not a public one (TEMPORAL_TLS_SERVER_CA_CERT_PATH)"
        )
    if "unauthenticated" in low or "permission" in low or _AUTH_STATUS.search(low):
        key = f"the API key from {target.origins['api_key']}" if target.api_key else "no API key"
        return f"{where} refused the credentials ({_short(text)}): {key} was sent; check it (TEMPORAL_API_KEY)"
    return (
        f"cannot reach {where} ({_short(text)}): check the address, or that the server is up "
        "(`stakeflow doctor` shows where each setting came from)"
    )


# An HTTP status of refused credentials: a number of its own, not digits of a port ("127.0.0.1:40115") or an address.
_AUTH_STATUS = re.compile(r"(?<![\w.:])40[13](?![\w.])")


def _short(text: str) -> str:
    return text[:220]
