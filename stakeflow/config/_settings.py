"""Typed settings, read once at the edge and passed in.

Sources, strongest first: environment variables, then ``$STAKEFLOW_HOME/stakeflow.toml``,
then the defaults here. Secrets (API keys) come from the environment only. Reading them is ``_load``'s job.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from stakeflow.agents.types import Dialect
from stakeflow.config._catalogue import AgentConfig, McpServerConfig
from stakeflow.config._hooks import HookConfig
from stakeflow.config._sections import (
    ApprovalsConfig,
    BudgetsConfig,
    DatasetConfig,
    EvalsConfig,
    LearnConfig,
    PolicyConfig,
    PriceConfig,
    ToolsConfig,
    WorkersConfig,
)
from stakeflow.config._target import Target, TemporalFields, resolve_target

CONFIG_FILENAME = "stakeflow.toml"
EMBEDDED_MODEL_ID = "smollm2-135m-instruct"
DEFAULT_FRONTIER_MODEL = "claude-sonnet-4-6"


def default_home() -> Path:
    """A per-user data directory: ``$XDG_DATA_HOME/stakeflow`` or ``~/.local/share/stakeflow``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "stakeflow"


class Settings(BaseSettings):
    """Everything stakeflow reads from its environment and config file."""

    model_config = SettingsConfigDict(
        env_prefix="STAKEFLOW_", extra="forbid", populate_by_name=True, env_ignore_empty=True
    )

    home: Path = Field(default_factory=default_home)
    # Temporal: stakeflow's own layer of the connection. `load_settings` merges it with Temporal's standard
    # configuration (TEMPORAL_* variables, a profile of Temporal's config file) into ``target``; see
    # stakeflow/config/_target.py for the precedence.
    temporal_address: str | None = None  # set (here or by Temporal's config) = use that server, never start one
    temporal_namespace: str = "default"
    temporal_profile: str | None = None  # a profile of Temporal's config file (TEMPORAL_PROFILE wins)
    temporal_api_key: SecretStr | None = None  # environment only (STAKEFLOW_TEMPORAL_API_KEY)
    temporal_tls: bool | None = None  # None: TLS when a certificate, a CA or an API key says so
    temporal_tls_ca_file: Path | None = None  # the server's CA (PEM)
    temporal_tls_cert_file: Path | None = None  # client certificate for mutual TLS (PEM)
    temporal_tls_key_file: Path | None = None  # its private key (PEM); the file, never its contents, is configured
    temporal_tls_server_name: str | None = None  # SNI and the name the server certificate must carry
    temporal_port: int = 7233  # the dev server `stakeflow up` starts
    ui_port: int = 8233
    ui_base_url: str | None = None  # the Web UI of a server stakeflow did not start, e.g. https://cloud.temporal.io
    # The dev server `stakeflow up` starts tells its Web UI to decode payloads here (`stakeflow codec-server`).
    ui_codec_endpoint: str | None = None
    # Payload encryption (stakeflow/codec.py): the keys come from a file or the environment, never from
    # stakeflow.toml. Unset = payloads are stored as they are.
    codec_keys_file: Path | None = None  # one "<key id> <base64 of 32 bytes>" per line; the last one encrypts
    codec_keys: SecretStr | None = None  # environment only: "<id>:<base64>,<id>:<base64>" (the last one encrypts)
    # `stakeflow codec-server`: who may call it (environment only: comma-separated bearer tokens) and which
    # Web UI origins may call it from a browser (default: the local dev server's UI).
    codec_auth_tokens: SecretStr | None = None
    codec_cors_origins: list[str] | None = None
    # Workers serve Prometheus metrics (the Temporal SDK's and stakeflow's own) here; unset = no endpoint.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    queue_prefix: str = "stakeflow"
    # Workers refuse a namespace whose search attributes are missing or mistyped (runs would hang);
    # false skips the check where the worker may not list them (register them another way first).
    check_search_attributes: bool = True

    open_base_url: str | None = None  # unset = the embedded llama.cpp server
    open_model: str | None = None
    open_api_key: SecretStr | None = None
    open_dialect: Dialect | None = None  # default: vllm for a configured URL, llamacpp for the embedded one
    open_timeout_s: float = 300.0
    embedded_port: int = 8765
    embedded_ctx: int = 8192
    embedded_threads: int | None = Field(default=None, ge=1)  # llama.cpp threads; default: half the cores
    # The command that serves the embedded model, if not stakeflow's own llama.cpp launcher, e.g. llama.cpp's
    # native server: ["llama-server", "-m", "{model}", "--host", "{host}", "--port", "{port}", "-c", "{ctx}",
    # "--alias", "{alias}"]. It must answer the OpenAI API at http://{host}:{port}/v1.
    embedded_command: list[str] | None = None

    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "anthropic_api_key")
    )
    anthropic_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "anthropic_base_url")
    )
    frontier_model: str = DEFAULT_FRONTIER_MODEL
    frontier_timeout_s: float = 120.0
    # May runs started here route to the frontier? Unset: when this process holds ANTHROPIC_API_KEY. In a
    # cluster the processes that start runs (webhook server, CLI) do not hold the key, the frontier worker
    # does: set true there (false: every high-stakes step is downgraded to the open model, and recorded).
    frontier_available: bool | None = None

    debug: bool = False

    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    prices: dict[str, PriceConfig] = Field(default_factory=dict)
    hooks: dict[str, HookConfig] = Field(default_factory=dict)  # [hooks.<name>]: see stakeflow/webhooks/__init__.py
    approvals: ApprovalsConfig = Field(default_factory=ApprovalsConfig)
    mcp: dict[str, McpServerConfig] = Field(default_factory=dict)  # [mcp.<name>]
    evals: EvalsConfig = Field(default_factory=EvalsConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    learn: LearnConfig = Field(default_factory=LearnConfig)
    agents: dict[str, AgentConfig] = Field(default_factory=dict)  # [agents.<name>]
    workers: WorkersConfig = Field(default_factory=WorkersConfig)  # [workers], [workers.<role>]
    budgets: BudgetsConfig = Field(default_factory=BudgetsConfig)  # [budgets]: frontier spend (agents/budgets.py)

    traces: Path | None = None  # the DuckDB trace file; default $STAKEFLOW_HOME/traces.duckdb
    trace_content: bool = False  # record prompts and completions in spans (STAKEFLOW_TRACE_CONTENT=1)
    # ... of private runs too (STAKEFLOW_TRACE_PRIVATE_CONTENT=1, with trace_content): spans go to OTLP backends.
    trace_private_content: bool = False

    _target: Target | None = PrivateAttr(default=None)  # the resolved Temporal target (see ``target``)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment overrides the file; the file arrives as init kwargs.
        return (env_settings, init_settings)

    # --- derived -----------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.home / CONFIG_FILENAME

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def default_workspace(self) -> Path:
        return self.home / "workspace"

    @property
    def traces_path(self) -> Path:
        return self.traces or self.home / "traces.duckdb"

    @property
    def ledger_dir(self) -> Path:
        """Where the previous release's tools recorded their side effects, on each host.

        Read only, for calls of runs in flight across the upgrade: the ledger now lives in each
        workspace (``.stakeflow/ledger``), where every host that writes the files sees it.
        """
        return self.home / "ledger"

    @property
    def embedded(self) -> bool:
        """True when the open model is the embedded llama.cpp server stakeflow runs itself."""
        return not self.open_base_url

    @property
    def open_url(self) -> str:
        return self.open_base_url or f"http://127.0.0.1:{self.embedded_port}/v1"

    @property
    def open_model_id(self) -> str:
        return self.open_model or (EMBEDDED_MODEL_ID if self.embedded else "default")

    @property
    def dialect(self) -> Dialect:
        return self.open_dialect or ("llamacpp" if self.embedded else "vllm")

    @property
    def has_frontier_key(self) -> bool:
        return self.anthropic_api_key is not None and bool(self.anthropic_api_key.get_secret_value())

    @property
    def frontier_configured(self) -> bool:
        """True when runs started here may route to the frontier: this process holds the key, or
        STAKEFLOW_FRONTIER_AVAILABLE says a frontier worker elsewhere does."""
        return self.has_frontier_key if self.frontier_available is None else self.frontier_available

    @property
    def address(self) -> str:
        return self.temporal_address or f"127.0.0.1:{self.temporal_port}"

    @property
    def manages_temporal(self) -> bool:
        """True when stakeflow starts its own dev server (no address from stakeflow's or Temporal's config)."""
        return self.temporal_address is None

    @property
    def target(self) -> Target:
        """The Temporal server, namespace and credentials to connect with, and where each came from.

        ``load_settings`` resolves it from every source; settings built in code (tests, benchmarks)
        resolve it from their own fields only, so no variable or file of the machine leaks in.
        """
        if self._target is None:
            self._target = resolve_target(self.temporal_fields(), environ={}, config_file=None)
        return self._target

    def temporal_fields(self) -> TemporalFields:
        """Stakeflow's own layer of the Temporal connection, as ``resolve_target`` reads it."""
        names = [n for n in type(self).model_fields if n.startswith("temporal_")]
        return TemporalFields(
            values={n: getattr(self, n) for n in names if n in self.model_fields_set},
            config_path=self.config_path,
            port=self.temporal_port,
            profile=self.temporal_profile,
        )

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Settings:
        """A copy; one whose Temporal fields changed resolves its target again (from its own fields)."""
        copy = super().model_copy(update=update, deep=deep)
        if update and any(k.startswith("temporal_") for k in update):
            copy._target = None
        return copy

    @property
    def codec_on(self) -> bool:
        return self.codec_keys_file is not None or self.codec_keys is not None

    def ui_url(self, workflow_id: str | None = None) -> str:
        if self.ui_base_url:
            root = self.ui_base_url.rstrip("/")
        else:
            host = "127.0.0.1"
            if self.temporal_address:
                host = self.temporal_address.rsplit(":", 1)[0]
            root = f"http://{host}:{self.ui_port}"
        base = f"{root}/namespaces/{self.temporal_namespace}/workflows"
        return f"{base}/{workflow_id}" if workflow_id else base
