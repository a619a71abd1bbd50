"""Which Temporal server, namespace and credentials stakeflow connects with, and why.

Stakeflow honours Temporal's standard client configuration (the ``TEMPORAL_*`` variables and the
profiles of Temporal's config file, read by the SDK's ``temporalio.envconfig``), so an operator who
already points `temporal` and their own workers at a cluster or at Temporal Cloud points stakeflow
there too. Stakeflow's own settings keep working and, being the more specific, win. Each field is
resolved on its own, strongest source first:

1. ``STAKEFLOW_TEMPORAL_*`` variables (``STAKEFLOW_TEMPORAL_ADDRESS``, ``_NAMESPACE``, ``_API_KEY``,
   ``_TLS``, ``_TLS_CA_FILE``, ``_TLS_CERT_FILE``, ``_TLS_KEY_FILE``, ``_TLS_SERVER_NAME``);
2. Temporal's variables (``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``,
   ``TEMPORAL_TLS``, ``TEMPORAL_TLS_SERVER_CA_CERT_PATH``/``_DATA``, ``TEMPORAL_TLS_CLIENT_CERT_PATH``/
   ``_DATA``, ``TEMPORAL_TLS_CLIENT_KEY_PATH``/``_DATA``, ``TEMPORAL_TLS_SERVER_NAME``,
   ``TEMPORAL_GRPC_META_*``);
3. ``stakeflow.toml`` (the same names as 1, lower case, without the prefix; never the API key);
4. the profile of Temporal's config file (``TEMPORAL_CONFIG_FILE``, default
   ``~/.config/temporalio/temporal.toml``): ``STAKEFLOW_TEMPORAL_PROFILE``, else ``TEMPORAL_PROFILE``,
   else ``temporal_profile`` in stakeflow.toml, else ``default``;
5. nothing anywhere: stakeflow's own dev server on 127.0.0.1 (`stakeflow up` starts it), namespace
   ``default``.

An address from any source means a server stakeflow did not start: it never starts one then. TLS is
on when a source turns it on, or when a CA, a client certificate, a server name or an API key is
configured (an API key always travels over TLS unless TLS is explicitly off, as in the SDK).

The API key and private keys are held as secrets: ``describe`` names where they came from, never
what they are.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from stakeflow.core.errors import ConfigError

AUTO = "auto"  # config_file: look where Temporal's tools look


@dataclass(frozen=True)
class TemporalFields:
    """Stakeflow's own settings for the connection (``Settings.temporal_fields``): what resolution reads of them."""

    values: Mapping[str, Any]
    """The ``temporal_*`` settings that were set (by a variable, stakeflow.toml or code), by field name."""
    config_path: Path
    """stakeflow.toml, named as the origin of what it set."""
    port: int
    """The port of stakeflow's own dev server, when no address is configured anywhere."""
    profile: str | None
    """``temporal_profile``: the profile of Temporal's config file to read."""


@dataclass(frozen=True)
class Pem:
    """One TLS file or inline PEM: where it is and which source named it (the error and the report say)."""

    origin: str
    path: Path | None = None
    data: SecretStr | None = None  # inline PEM (TEMPORAL_TLS_*_DATA or a profile's `data`): never shown

    @property
    def label(self) -> str:
        return str(self.path) if self.path is not None else f"inline PEM from {self.origin}"


@dataclass(frozen=True)
class Target:
    """A resolved connection: what to connect to, with what, and the source of each part."""

    address: str
    namespace: str
    local: bool  # True = stakeflow's own dev server (no address configured anywhere)
    api_key: SecretStr | None = None
    tls: bool = False
    server_ca: Pem | None = None
    client_cert: Pem | None = None
    client_key: Pem | None = None
    server_name: str | None = None
    grpc_meta: Mapping[str, str] = field(default_factory=dict)
    origins: Mapping[str, str] = field(default_factory=dict)  # field -> where it came from
    profile: str | None = None  # the profile read, when a config file was read
    config_file: Path | None = None

    def describe(self) -> str:
        """One line for `doctor` and `up`: server, namespace, security, and why each."""
        security = "plaintext"
        if self.tls:
            parts = [f"CA {self.server_ca.label}" if self.server_ca else "system CAs"]
            if self.client_cert:
                parts.append(f"client certificate {self.client_cert.label}")
            if self.server_name:
                parts.append(f"server name {self.server_name}")
            security = "TLS (" + ", ".join(parts) + ")"
        if self.api_key is not None:
            security += ", API key (not shown)"
        why = [f"address from {self.origins.get('address', 'stakeflow defaults')}"]
        why.append(f"namespace from {self.origins.get('namespace', 'stakeflow defaults')}")
        for part, name in (("api_key", "API key"), ("tls", "TLS"), ("client_cert", "client certificate")):
            if part in self.origins:
                why.append(f"{name} from {self.origins[part]}")
        if self.grpc_meta:
            why.append(f"gRPC headers {', '.join(sorted(self.grpc_meta))} from {self.origins.get('grpc_meta')}")
        return f"{self.address}, namespace {self.namespace}, {security} — " + "; ".join(why)


def default_config_file(environ: Mapping[str, str]) -> Path:
    """Where Temporal's CLI and SDKs look for their config file when TEMPORAL_CONFIG_FILE is unset."""
    if environ.get("TEMPORAL_CONFIG_FILE"):
        return Path(environ["TEMPORAL_CONFIG_FILE"]).expanduser()
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    else:
        base = Path(environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "temporalio" / "temporal.toml"


# stakeflow field -> (STAKEFLOW_ variable). The file layer is what was set but not by these variables.
_OWN = {
    "address": ("temporal_address", "STAKEFLOW_TEMPORAL_ADDRESS"),
    "namespace": ("temporal_namespace", "STAKEFLOW_TEMPORAL_NAMESPACE"),
    "api_key": ("temporal_api_key", "STAKEFLOW_TEMPORAL_API_KEY"),
    "tls": ("temporal_tls", "STAKEFLOW_TEMPORAL_TLS"),
    "server_ca": ("temporal_tls_ca_file", "STAKEFLOW_TEMPORAL_TLS_CA_FILE"),
    "client_cert": ("temporal_tls_cert_file", "STAKEFLOW_TEMPORAL_TLS_CERT_FILE"),
    "client_key": ("temporal_tls_key_file", "STAKEFLOW_TEMPORAL_TLS_KEY_FILE"),
    "server_name": ("temporal_tls_server_name", "STAKEFLOW_TEMPORAL_TLS_SERVER_NAME"),
}
_TEMPORAL_VARS = {
    "address": "TEMPORAL_ADDRESS",
    "namespace": "TEMPORAL_NAMESPACE",
    "api_key": "TEMPORAL_API_KEY",
    "tls": "TEMPORAL_TLS",
    "server_ca": "TEMPORAL_TLS_SERVER_CA_CERT_PATH/_DATA",
    "client_cert": "TEMPORAL_TLS_CLIENT_CERT_PATH/_DATA",
    "client_key": "TEMPORAL_TLS_CLIENT_KEY_PATH/_DATA",
    "server_name": "TEMPORAL_TLS_SERVER_NAME",
    "grpc_meta": "TEMPORAL_GRPC_META_*",
}


def resolve_target(fields: TemporalFields, environ: Mapping[str, str], config_file: Path | str | None = AUTO) -> Target:
    """The connection, field by field from the strongest source (module docstring); ConfigError when a
    named profile or the config file is unusable."""
    own_env, own_file = _own_layers(fields, environ)
    layers = [own_env, _profile_values(_load_env_profile(environ), _TEMPORAL_VARS), own_file]
    profile, path, from_file = _file_profile(fields, environ, config_file)
    if from_file is not None:
        where = f"profile '{profile}' of {path}"
        layers.append(_profile_values(from_file, {k: where for k in _TEMPORAL_VARS}))

    chosen: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for layer in layers:
        for key, (value, origin) in layer.items():
            if key not in chosen and value is not None:
                chosen[key], origins[key] = value, origin
    address = chosen.get("address")
    api_key = chosen.get("api_key")
    pem_set = any(chosen.get(k) is not None for k in ("server_ca", "client_cert", "client_key", "server_name"))
    tls = chosen.get("tls")
    if tls is None:
        tls = pem_set or api_key is not None
    return Target(
        address=address or f"127.0.0.1:{fields.port}",
        namespace=chosen.get("namespace") or "default",
        local=address is None,
        api_key=api_key,
        tls=bool(tls),
        server_ca=chosen.get("server_ca"),
        client_cert=chosen.get("client_cert"),
        client_key=chosen.get("client_key"),
        server_name=chosen.get("server_name"),
        grpc_meta=chosen.get("grpc_meta") or {},
        origins=origins,
        profile=profile if from_file is not None else None,
        config_file=path if from_file is not None else None,
    )


def _own_layers(fields: TemporalFields, environ: Mapping[str, str]) -> tuple[dict, dict]:
    """Stakeflow's fields, split into what its variables set and what stakeflow.toml (or code) set."""
    env: dict[str, tuple[Any, str]] = {}
    file: dict[str, tuple[Any, str]] = {}
    for key, (name, var) in _OWN.items():
        if name not in fields.values:
            continue
        origin = var if var in environ else (str(fields.config_path) if environ else "stakeflow settings")
        value = fields.values[name]
        if key in ("server_ca", "client_cert", "client_key") and value is not None:
            value = Pem(origin, path=Path(value).expanduser())
        if key == "api_key" and value is not None and not value.get_secret_value():
            value = None
        (env if var in environ else file)[key] = (value, origin)
    return env, file


def _load_env_profile(environ: Mapping[str, str]):
    from temporalio.envconfig import ClientConfigProfile

    temporal_vars = {k: v for k, v in environ.items() if k.startswith("TEMPORAL_") and v != ""}
    try:
        return ClientConfigProfile.load(disable_file=True, override_env_vars=temporal_vars)
    except RuntimeError as e:
        raise ConfigError(f"Temporal's environment variables are not usable ({_first_line(e)}): fix them") from None


def _file_profile(fields: TemporalFields, environ: Mapping[str, str], config_file: Path | str | None):
    """(profile name, file, the profile) -- the profile None when no file is read."""
    from temporalio.envconfig import ClientConfig, ClientConfigProfile

    explicit = environ.get("STAKEFLOW_TEMPORAL_PROFILE") or environ.get("TEMPORAL_PROFILE") or fields.profile
    name = explicit or "default"
    if config_file is None:
        if fields.profile:
            raise ConfigError(f"temporal_profile '{fields.profile}' is set but no Temporal config file is read here")
        return name, None, None
    path = default_config_file(environ) if config_file == AUTO else Path(config_file)
    if not path.is_file():
        if explicit:
            raise ConfigError(
                f"Temporal profile '{name}' was asked for, but there is no config file at {path}: create it "
                f"(`temporal config set --profile {name} --prop address --value HOST:PORT`) or set TEMPORAL_CONFIG_FILE"
            )
        return name, path, None
    try:
        names = set(ClientConfig.load(config_source=path).profiles)
    except RuntimeError as e:
        raise ConfigError(f"Temporal's config file {path} is not usable ({_first_line(e)}): fix it") from None
    if name not in names:
        if explicit:
            known = ", ".join(sorted(names)) or "none"
            raise ConfigError(
                f"Temporal profile '{name}' is not in {path} (profiles there: {known}): "
                "fix TEMPORAL_PROFILE / STAKEFLOW_TEMPORAL_PROFILE / temporal_profile"
            )
        return name, path, None
    return name, path, ClientConfigProfile.load(profile=name, config_source=path, disable_env=True)


def _profile_values(profile, origin_of: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """An envconfig profile as (value, origin) per field."""
    values: dict[str, tuple[Any, str]] = {}

    def put(key: str, value: Any) -> None:
        if value is not None:
            values[key] = (value, origin_of[key])

    put("address", profile.address or None)
    put("namespace", profile.namespace or None)
    put("api_key", SecretStr(profile.api_key) if profile.api_key else None)
    if profile.grpc_meta:
        put("grpc_meta", dict(profile.grpc_meta))
    tls = profile.tls
    if tls is not None:
        put("tls", None if tls.disabled is None else not tls.disabled)
        put("server_name", tls.server_name)
        for key, source in (
            ("server_ca", tls.server_root_ca_cert),
            ("client_cert", tls.client_cert),
            ("client_key", tls.client_private_key),
        ):
            put(key, _pem(source, origin_of[key]))
    return values


def _pem(source, origin: str) -> Pem | None:
    if source is None:
        return None
    if isinstance(source, Path):
        return Pem(origin, path=source.expanduser())
    text = source.decode() if isinstance(source, bytes) else str(source)
    return Pem(origin, data=SecretStr(text))


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:200]
