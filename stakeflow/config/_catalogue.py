"""Configuration of what teams bring: MCP servers (``[mcp.<name>]``), Python tools (``[tools] python``) and
named agents (``[agents.<name>]``).

Secrets never live in stakeflow.toml: an MCP server's environment variables and HTTP headers are given by
the *name* of a variable in the worker's environment, whose value is read where the server is started.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stakeflow.agents.budgets import OnExceeded
from stakeflow.agents.types import MAX_ROUNDS, Risk, Sensitivity, StakesOverride
from stakeflow.config._sections import usd_limit

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
SERVER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolOverride(_Section):
    """``[mcp.<server>.tools.<tool>]``: what the team knows better than the server's annotations."""

    risk: Risk | None = None
    open_world: bool | None = None
    idempotent: bool | None = None
    private: bool | None = None  # its output is private data: the rest of the run stays on the open model


class McpServerConfig(_Section):
    """``[mcp.<name>]``: one MCP server, over stdio (``command``) or Streamable HTTP (``url``)."""

    command: str | None = None
    args: list[str] = Field(default_factory=list)
    cwd: str | None = None
    env: list[str] = Field(default_factory=list)  # NAMES of variables passed from the worker's environment
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)  # header -> NAME of the variable holding its value
    task_queue: str | None = None  # default: the tools queue; a server on one host gets that host's queue
    timeout_s: float = Field(default=60.0, gt=0)
    # At plan time, a server that does not answer fails the run, or the run goes on without its tools.
    on_unavailable: Literal["fail", "skip"] = "fail"
    private: bool = False  # every tool of this server reads private data
    # The MCP spec calls a server's annotations untrusted hints: false treats every tool of this server as the
    # riskiest kind (irreversible, open-world, not idempotent); [mcp.<name>.tools.<tool>] overrides still win.
    trust_annotations: bool = True
    tools: dict[str, ToolOverride] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of command (a stdio server) or url (a Streamable HTTP server)")
        for name in [*self.env, *self.headers.values()]:
            if not re.match(_ENV_NAME, name):
                raise ValueError(
                    f"'{name}' is not an environment variable name: env and header values name a variable "
                    "in the worker's environment, never the secret itself"
                )
        return self

    @property
    def transport(self) -> Literal["stdio", "http"]:
        return "stdio" if self.command is not None else "http"


class AgentConfig(_Section):
    """``[agents.<name>]``: a named agent: its role, its tools, its defaults, optionally its own open model."""

    instructions: str = ""  # the role part of the system prompts
    tools: list[str] | None = None  # names and globs ("read_file", "git.*"); None = every enabled tool
    stakes: StakesOverride = "auto"
    sensitivity: Sensitivity = "public"
    max_steps: int | None = Field(default=None, ge=1, le=200)
    max_rounds: int | None = Field(default=None, ge=1, le=MAX_ROUNDS)  # rounds per step ([policy] max_rounds)
    budget_tokens: int | None = Field(default=None, ge=1)
    open_model: str | None = None  # e.g. a fine-tuned LoRA adapter's served name on vLLM
    # false: this agent's runs believe no MCP server's annotations (every MCP tool is of the riskiest kind).
    trust_annotations: bool = True
    description: str = ""  # one line for `stakeflow agents`
    usd_per_day: float | None = None  # this agent's runs' frontier spend per UTC day (agents/budgets.py)
    on_exceeded: OnExceeded | None = None  # what its usd_per_day does when spent; default: [budgets] on_exceeded

    @field_validator("usd_per_day", mode="before")
    @classmethod
    def _limit(cls, value: object) -> object:
        return usd_limit(value, "[agents.<name>] usd_per_day")
