"""The tables of stakeflow.toml: one model per ``[section]``, each refusing keys it does not know.

``stakeflow.config.Settings`` holds one of each; see it for where values come from.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from stakeflow.agents.budgets import OnExceeded
from stakeflow.agents.types import MAX_ROUNDS, Risk, acting_risks


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PolicyConfig(_Section):
    """``[policy]``: how steps are routed."""

    escalate_on_invalid: bool = True
    fallback_on_unavailable: bool = True
    open_attempts: int = Field(default=2, ge=1, le=5)
    model_max_attempts: int = Field(default=6, ge=1, le=50)
    model_retry_initial_s: float = Field(default=2.0, gt=0)
    high_risk: list[Risk] = Field(default_factory=acting_risks)
    private_tools: list[str] = Field(default_factory=list)
    max_steps: int = Field(default=6, ge=1, le=200)
    # What a high-stakes step does when ANTHROPIC_API_KEY is unset: run on the open model
    # (recorded and printed), or fail the run before it starts.
    on_frontier_missing: Literal["downgrade", "fail"] = "downgrade"
    # A private run calling an open-world tool (http_get, most MCP tools) could carry private data out in
    # its arguments: wait for a person's approval showing what would be sent, refuse it, or allow it.
    private_egress: Literal["approve", "deny", "allow"] = "approve"
    # When the goal names a workspace file, make the plan start by reading it (a JSON-schema constraint):
    # "auto" does so for the embedded model, which cannot plan without it; large models plan well unaided.
    first_step_reads: Literal["auto", "always", "never"] = "auto"
    # Hold an open-route step's SQL to the workspace's files and columns and SQL's shape, by a pattern in the
    # argument's schema that grammar-constrained decoding enforces (agents/sql_grammar.py): "auto" for the
    # embedded model, which otherwise writes JSON or a worked example's names into its queries; the pattern
    # leaves out CTEs, CASE and window functions, which larger models use well.
    sql_grammar: Literal["auto", "always", "never"] = "auto"
    # Hold an open-route step's calculator expression to the figures of the goal and the tools' outputs (and
    # small constants), by a pattern the same decoding enforces (agents/arithmetic_grammar.py): "auto" for the
    # embedded model, which otherwise copies a worked example's operands; those are the operands the answer
    # check accepts anyway.
    calculator_grammar: Literal["auto", "always", "never"] = "auto"
    # Routing that follows measured agreement (shadow evaluation): a step kind whose agreement's lower
    # bound is below min_agreement, measured on at least min_samples comparisons, goes to the frontier.
    min_agreement: float | None = Field(default=None, gt=0, le=1)
    min_samples: int = Field(default=30, ge=1)
    # The agent loop: rounds per step (model call, tool calls, the model sees their results, ...); a step stuck
    # on the open model re-run on the frontier; the remaining steps revised after a step that failed; the
    # answer's figures checked against what the run observed (README, "How a step runs").
    max_rounds: int = Field(default=4, ge=1, le=MAX_ROUNDS)
    escalate_when_stuck: bool = True
    replan: bool = True
    check_answer: bool = True


class HttpGetConfig(_Section):
    """``[tools.http_get]``."""

    allow_hosts: list[str] = Field(default_factory=list)  # exact hosts or "*.example.com"; empty = any public host
    max_bytes: int = Field(default=1_000_000, ge=1)
    timeout_s: float = Field(default=10.0, gt=0)


class ReadFileConfig(_Section):
    """``[tools.read_file]``."""

    max_bytes: int = Field(default=200_000, ge=1)


class WriteFileConfig(_Section):
    """``[tools.write_file]``."""

    max_bytes: int = Field(default=1_000_000, ge=1)


# A DuckDB size ("512MB", "1.5GiB"); checked here, so a typo fails at start, not in every query.
_DUCKDB_SIZE = re.compile(r"\d+(\.\d+)?\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)", re.IGNORECASE)


class SqlQueryConfig(_Section):
    """``[tools.sql_query]``: each query's limits (its own in-memory DuckDB)."""

    max_rows: int = Field(default=200, ge=1)
    timeout_s: float = Field(default=20.0, gt=0)
    memory_limit: str = "512MB"
    threads: int = Field(default=1, ge=1, le=256)
    # Where a query may spill what does not fit in memory_limit (an absolute path, e.g. a folder under
    # the worker's STAKEFLOW_HOME); each query gets its own subfolder, removed after it. Unset: nothing
    # spills, and a query that needs more than memory_limit fails.
    temp_directory: Path | None = None
    max_temp_size: str = "1GB"  # what one query may spill to temp_directory

    @field_validator("memory_limit", "max_temp_size")
    @classmethod
    def _size(cls, value: str) -> str:
        if not _DUCKDB_SIZE.fullmatch(value.strip()):
            raise ValueError(f"'{value}' is not a size: write it like 512MB or 2GB")
        return value.strip()

    @field_validator("temp_directory")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_absolute():
            raise ValueError(
                f"temp_directory '{value}' is relative: give an absolute path, e.g. ~/.local/share/stakeflow/sql-spill"
            )
        return value.expanduser() if value is not None else None


class EvalsConfig(_Section):
    """``[evals]``: shadow evaluation of the open path against the frontier (see agents/evals.py)."""

    shadow_rate: float = Field(default=0.0, ge=0, le=1)  # 0 = off
    max_usd_per_day: float | None = Field(default=None, ge=0)  # shadow spend per UTC day, then no sampling
    judge_model: str | None = None  # default: the frontier model
    capture: bool = False  # keep prompts and outputs in the local evals table (never in spans, never private)


def usd_limit(value: object, where: str) -> object:
    """A dollar limit as stakeflow.toml gives it: a finite number >= 0 (TOML's 5 or 5.0), never text or a bool."""
    if value is None:
        return value
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value != value
        or value in (float("inf"), -float("inf"))
    ):
        raise ValueError(f"{where} must be a number of US dollars, e.g. {where.split()[-1]} = 5.0 (not {value!r})")
    if value < 0:
        raise ValueError(
            f"{where} is {value}: a budget is 0 or more US dollars, e.g. 5.0 (0 keeps every call off the frontier)"
        )
    return float(value)


class BudgetsConfig(_Section):
    """``[budgets]``: what the frontier may cost (agents/budgets.py). Each limit is optional; per agent and per hook,
    ``usd_per_day`` in ``[agents.<name>]`` and ``[hooks.<name>]``; shadow evaluation keeps ``[evals] max_usd_per_day``."""

    frontier_usd_per_day: float | None = None  # all runs together, per UTC day
    run_usd: float | None = None  # one run (`run --budget-usd` sets it for one run)
    on_exceeded: OnExceeded = "downgrade"  # what every budget does when spent, unless it says otherwise
    frontier_on_exceeded: OnExceeded | None = None  # frontier_usd_per_day's own rule
    run_on_exceeded: OnExceeded | None = None  # run_usd's own rule

    @field_validator("frontier_usd_per_day", "run_usd", mode="before")
    @classmethod
    def _limit(cls, value: object, info: ValidationInfo) -> object:
        return usd_limit(value, f"[budgets] {info.field_name}")


class DatasetConfig(_Section):
    """``[dataset]``: keep model calls as training data (stakeflow dataset export)."""

    capture: bool = False  # every model call's request and response in the local captures table
    include_private: bool = False  # private runs too (they never leave the premises; flagged on every row)


class LearnConfig(_Section):
    """``[learn]``: the learn loop (stakeflow learn): train an adapter, judge it, promote it if it is better."""

    # The trainer, as the `stakeflow worker --queues train` (where the GPU is) runs it, from that worker's own
    # config: {train}, {test}, {output}, {base_model}, {agent}, {python} (the worker's interpreter) and {recipe}
    # (deploy/finetune/train.py, a TRL SFT + LoRA recipe) are filled in.
    trainer: list[str] = Field(
        default_factory=lambda: [
            "{python}",
            "{recipe}",
            "--train",
            "{train}",
            "--test",
            "{test}",
            "--out",
            "{output}",
            "--base",
            "{base_model}",
        ],
        min_length=1,
    )
    base_model: str | None = None  # what the adapter is trained on; default: the open model
    margin: float = Field(default=0.02, ge=0, le=1)  # the candidate must agree this much more often to be promoted
    timeout_s: float = Field(default=6 * 3600, gt=0)
    heartbeat_s: float = Field(default=120.0, gt=0)  # a train worker silent this long is dead; train elsewhere
    min_examples: int = Field(default=20, ge=1)
    split: float = Field(default=0.8, gt=0, lt=1)  # share of examples trained on; the rest judges the adapter
    replay_limit: int = Field(default=200, ge=1)  # held-out examples the adapter and the current model answer
    # Where each learn run's dataset and adapter go: a folder the workflows worker, the train worker and the
    # vLLM server all see at the same path (a shared volume in a cluster). Default: $STAKEFLOW_HOME/learn.
    workdir: Path | None = None


class ApprovalsConfig(_Section):
    """``[approvals]``: which high-stakes steps wait for a person, and for how long."""

    risks: list[Risk] = Field(default_factory=acting_risks)
    timeout_s: float = Field(default=3600.0, gt=0)


class ToolsConfig(_Section):
    """``[tools]``: which tools exist for runs, and their limits."""

    enabled: list[str] | None = None  # None = every built-in tool, MCP server tool and Python tool
    # A team's own functions as tools: "package.module:function" (decorated with stakeflow.tool.tool).
    python: list[str] = Field(default_factory=list)
    # At most this many Python tool calls run at once, each in its own thread (a call past its timeout_s keeps its
    # thread until it ends): apart from the threads the built-in tools use (activities/python_tool_threads.py).
    python_threads: int = Field(default=8, ge=1, le=256)
    http_get: HttpGetConfig = Field(default_factory=HttpGetConfig)
    read_file: ReadFileConfig = Field(default_factory=ReadFileConfig)
    write_file: WriteFileConfig = Field(default_factory=WriteFileConfig)
    sql_query: SqlQueryConfig = Field(default_factory=SqlQueryConfig)


class PriceConfig(_Section):
    """``[prices."<model id>"]``: adds to or overrides the built-in price table (USD).

    Either per-million-token prices, or ``gpu_hour_usd`` for a self-hosted model: a call then costs
    gpu_hour_usd x measured call seconds / 3600 / concurrency (how many calls share the GPU).
    """

    input_per_mtok: float | None = Field(default=None, ge=0)
    output_per_mtok: float | None = Field(default=None, ge=0)
    cache_read_per_mtok: float | None = Field(default=None, ge=0)
    cache_write_per_mtok: float | None = Field(default=None, ge=0)
    gpu_hour_usd: float | None = Field(default=None, ge=0)
    concurrency: float = Field(default=1.0, gt=0)
    effective: str | None = None  # ISO date the price applies from
    version: str | None = None


class QueueLimits(_Section):
    """``[workers.<role>]``: what one worker process takes from that role's queue at once. Unset: Temporal's default.

    Size the open queue like the GPU: ``max_concurrent_activities`` near vLLM's ``--max-num-seqs`` (each
    slot is one model call in flight; Temporal's default is 100, so a bigger batch needs a bigger number
    here), times the processes a host runs. Pollers are the requests each worker keeps open to the server
    for new tasks (Temporal's default: 5 of each).
    """

    max_concurrent_activities: int | None = Field(default=None, ge=1)
    max_concurrent_workflow_tasks: int | None = Field(default=None, ge=2)
    max_concurrent_local_activities: int | None = Field(default=None, ge=1)  # workflows: tools (and local model calls)
    max_cached_workflows: int | None = Field(default=None, ge=0)
    workflow_pollers: int | None = Field(default=None, ge=2)  # Temporal needs 2 (sticky + normal queue)
    activity_pollers: int | None = Field(default=None, ge=1)


class WorkersConfig(_Section):
    """``[workers]``: the worker processes of a host and what each takes from its queues."""

    # `stakeflow worker` runs this many worker processes (one Python interpreter each, so one core each);
    # `--processes` overrides it.
    processes: int = Field(default=1, ge=1, le=64)
    # Open-model calls as local activities, on the worker that runs the workflow: a round trip through the
    # server less per call. Only where every worker polling the workflows queue has this set and reaches the
    # open endpoint (one host: the embedded model, a vLLM beside the workers). A run records it when it starts.
    local_model_calls: bool = False
    # Run workflow code in Temporal's sandbox (the default). false runs it unsandboxed: 3-9% less worker CPU per
    # model call under load (bench/README.md, concurrency.py, fifth session of 12-07), at the price of the sandbox's
    # run-time checks, which the test suite still makes (it replays every history under the strict sandbox).
    # For workers that run stakeflow's own workflows only, as they do.
    workflow_sandbox: bool = True
    workflows: QueueLimits = Field(default_factory=QueueLimits)
    open: QueueLimits = Field(default_factory=QueueLimits)
    frontier: QueueLimits = Field(default_factory=QueueLimits)
    tools: QueueLimits = Field(default_factory=QueueLimits)
    train: QueueLimits = Field(default_factory=QueueLimits)
