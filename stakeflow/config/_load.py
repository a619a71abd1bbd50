"""Reading the settings: the environment over ``$STAKEFLOW_HOME/stakeflow.toml`` over the defaults, then the
Temporal target (``_target``) and every tool name the file uses (``_toolsets``), checked before anything runs.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stakeflow.config._catalogue import SERVER_NAME
from stakeflow.config._settings import CONFIG_FILENAME, Settings, default_home
from stakeflow.config._target import resolve_target
from stakeflow.config._toolsets import resolve
from stakeflow.core.errors import ConfigError, InputError


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML ({e}): fix the file or move it aside") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None


def _describe(err: ValidationError, path: Path) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"unknown setting '{where}' in {path} or the environment: remove it (see README, Configuration)"
    return f"bad setting '{where}' in {path} or the environment: {first['msg']}"


# Secrets that must never be written into stakeflow.toml (the file is shared, copied, committed).
ENV_ONLY = {
    "temporal_api_key": "STAKEFLOW_TEMPORAL_API_KEY (or TEMPORAL_API_KEY)",
    "codec_keys": "STAKEFLOW_CODEC_KEYS, or a key file named by codec_keys_file",
    "codec_auth_tokens": "STAKEFLOW_CODEC_AUTH_TOKENS",
}


def load_settings() -> Settings:
    """Read settings from the environment and the TOML file in STAKEFLOW_HOME, then resolve the Temporal
    target from them, Temporal's own variables and Temporal's config file (``_target``)."""
    home = Path(os.environ.get("STAKEFLOW_HOME") or default_home()).expanduser()
    path = home / CONFIG_FILENAME
    data = _read_toml(path)
    data.pop("home", None)
    for key, where in ENV_ONLY.items():
        if key in data:
            raise ConfigError(f"'{key}' is a secret and may not be in {path}: remove it and set {where} instead")
    try:
        settings = Settings(home=home, **data)
    except ValidationError as e:
        raise ConfigError(_describe(e, path)) from None
    _check_tools(settings)
    target = resolve_target(settings.temporal_fields(), environ=os.environ)
    # The rest of stakeflow reads the address and namespace from these two fields.
    resolved = settings.model_copy(
        update={
            "temporal_address": None if target.local else target.address,
            "temporal_namespace": target.namespace,
        }
    )
    resolved._target = target
    return resolved


def _check_tools(settings: Settings) -> None:
    """Every tool name or glob the file uses names something that exists (or can, once described)."""

    for name in settings.mcp:
        if not SERVER_NAME.match(name):
            raise ConfigError(
                f"[mcp.{name}] in {settings.config_path}: a server name is lower-case letters, digits, - and _ "
                "(it prefixes its tools: <server>.<tool>)"
            )
    uses = [("[tools] enabled", settings.tools.enabled), ("[policy] private_tools", settings.policy.private_tools)]
    uses += [(f"[hooks.{name}] tools", hook.tools) for name, hook in settings.hooks.items()]
    uses += [(f"[agents.{name}] tools", agent.tools) for name, agent in settings.agents.items()]
    for where, patterns in uses:
        if patterns is None:
            continue
        try:
            resolve(
                settings.model_copy(update={"tools": settings.tools.model_copy(update={"enabled": None})}),
                list(patterns),
                where=where,
            )
        except InputError as e:
            raise ConfigError(str(e)) from None
