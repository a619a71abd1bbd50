"""Configuration: what stakeflow reads from its environment and ``stakeflow.toml``, typed and checked once.

The floor above the contracts: it imports only ``stakeflow.core``, ``stakeflow.agents`` (the types a table
names, the tool catalogue) and itself; everything that runs reads its settings from here. One job per module:

* ``_settings``: ``Settings``: every variable and table, and what derives from them;
* ``_load``: ``load_settings``: the environment over stakeflow.toml over the defaults, checked;
* ``_sections``: one model per ``[section]`` of stakeflow.toml (``[policy]``, ``[tools]``, ``[workers]``, ...);
* ``_catalogue``: what teams bring: ``[mcp.<name>]`` servers and ``[agents.<name>]``;
* ``_hooks``: ``[hooks.<name>]`` (the webhook server's hooks) and their goal templates;
* ``_target``: which Temporal server, namespace and credentials, resolved with Temporal's own configuration;
* ``_toolsets``: which tools a run may use, from names and globs.
"""

from stakeflow.config._catalogue import SERVER_NAME, AgentConfig, McpServerConfig, ToolOverride
from stakeflow.config._hooks import HookConfig, MissingField, TemplateError, render_goal, template_fields
from stakeflow.config._load import load_settings
from stakeflow.config._sections import (
    ApprovalsConfig,
    BudgetsConfig,
    DatasetConfig,
    EvalsConfig,
    HttpGetConfig,
    LearnConfig,
    PolicyConfig,
    PriceConfig,
    QueueLimits,
    ReadFileConfig,
    SqlQueryConfig,
    ToolsConfig,
    WorkersConfig,
    WriteFileConfig,
)
from stakeflow.config._settings import (
    CONFIG_FILENAME,
    DEFAULT_FRONTIER_MODEL,
    EMBEDDED_MODEL_ID,
    Settings,
    default_home,
)
from stakeflow.config._target import Pem, Target, TemporalFields, resolve_target
from stakeflow.config._toolsets import ResolvedTools
from stakeflow.config._toolsets import resolve as resolve_tools

__all__ = [
    "CONFIG_FILENAME",
    "DEFAULT_FRONTIER_MODEL",
    "EMBEDDED_MODEL_ID",
    "SERVER_NAME",
    "AgentConfig",
    "ApprovalsConfig",
    "BudgetsConfig",
    "DatasetConfig",
    "EvalsConfig",
    "HookConfig",
    "HttpGetConfig",
    "LearnConfig",
    "McpServerConfig",
    "MissingField",
    "Pem",
    "PolicyConfig",
    "PriceConfig",
    "QueueLimits",
    "ReadFileConfig",
    "ResolvedTools",
    "Settings",
    "SqlQueryConfig",
    "Target",
    "TemplateError",
    "TemporalFields",
    "ToolOverride",
    "ToolsConfig",
    "WorkersConfig",
    "WriteFileConfig",
    "default_home",
    "load_settings",
    "render_goal",
    "resolve_target",
    "resolve_tools",
    "template_fields",
]
