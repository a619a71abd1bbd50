"""What each activity holder needs from a worker's settings, and nothing else: one frozen dataclass per holder.

An activity that holds the whole ``Settings`` can read anything (every key, every table), and a reader cannot
tell what it depends on. These say it: a worker builds each from its settings once (``from_settings``), at
start; a test or a team's own worker builds one by hand. Secrets stay ``SecretStr`` and stay on the worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from stakeflow.agents.types import Dialect
from stakeflow.config import Settings
from stakeflow.local import processes
from stakeflow.local.services import EMBEDDED, crash_fix
from stakeflow.prices import PriceTable
from stakeflow.stores.promotions import learn_dir


@dataclass(frozen=True)
class OpenEndpoint:
    """The open route as this worker reaches it (vLLM, or the embedded llama.cpp server)."""

    url: str
    """Its OpenAI-compatible base URL (``.../v1``)."""
    model: str
    """The model id asked for when a request names none."""
    api_key: SecretStr | None
    """Its key, if the server wants one."""
    dialect: Dialect
    """How it takes structured output (llama.cpp's json_object + schema, vLLM's json_schema, OpenAI's)."""
    timeout_s: float
    """One call's HTTP timeout."""
    embedded: bool
    """True when it is the embedded model stakeflow runs itself (its crashes are reported as such)."""


@dataclass(frozen=True)
class FrontierEndpoint:
    """The frontier route (Anthropic) as this worker reaches it."""

    model: str
    """The model id asked for when a request names none."""
    api_key: SecretStr | None
    """The key; None where this worker may not call the frontier (its calls then fail, naming the key)."""
    base_url: str | None
    """Another Messages API server than Anthropic's (``ANTHROPIC_BASE_URL``)."""
    timeout_s: float
    """One call's HTTP timeout."""


@dataclass(frozen=True)
class ModelParameters:
    """What ``ModelActivities`` (``call_model``) needs."""

    open: OpenEndpoint
    frontier: FrontierEndpoint
    prices: PriceTable
    """The price table every call is priced by."""
    traces_path: Path
    """The trace store whose spool the dataset captures go to."""
    trace_content: bool = False
    """Record prompts and completions in spans (``STAKEFLOW_TRACE_CONTENT``)."""
    trace_private_content: bool = False
    """Private calls' prompts and completions in spans too (``STAKEFLOW_TRACE_PRIVATE_CONTENT``): never by default."""
    local_calls: bool = False
    """Open calls also run as local activities on the workflows queue (``[workers] local_model_calls``)."""
    embedded_crash: Callable[[], str | None] | None = None
    """How the embedded model ended, if it crashed (its supervisor's record); None when it is not stakeflow's."""
    queue_prefix: str = "stakeflow"
    """The task queues' prefix: frontier budgets' workflows are named and scheduled under it."""

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelParameters:
        key = settings.anthropic_api_key if settings.frontier_configured else None
        return cls(
            open=OpenEndpoint(
                url=settings.open_url,
                model=settings.open_model_id,
                api_key=settings.open_api_key,
                dialect=settings.dialect,
                timeout_s=settings.open_timeout_s,
                embedded=settings.embedded,
            ),
            frontier=FrontierEndpoint(
                model=settings.frontier_model,
                api_key=key,
                base_url=settings.anthropic_base_url,
                timeout_s=settings.frontier_timeout_s,
            ),
            prices=PriceTable.from_settings(settings),
            traces_path=settings.traces_path,
            trace_content=settings.trace_content,
            trace_private_content=settings.trace_private_content,
            local_calls=settings.workers.local_model_calls,
            embedded_crash=(lambda: embedded_crash(settings)) if settings.embedded else None,
            queue_prefix=settings.queue_prefix,
        )


def embedded_crash(settings: Settings) -> str | None:
    """How the embedded model stakeflow started ended, if it crashed (read from its supervisor's record)."""
    state = processes.state(settings, EMBEDDED)
    if state.state != "crashed":
        return None
    tail = state.log_tail[-1] if state.log_tail else "(none)"
    return f"{state.describe()}; last log line: {tail}; fix: {crash_fix(state)}"


@dataclass(frozen=True)
class EvalParameters:
    """What ``EvalActivities`` (the shadow budget, evals and labels rows, replay examples, agreement) needs."""

    queue_prefix: str
    """The task queues' prefix: the day's budget workflow is named and scheduled under it."""
    traces_path: Path
    """The trace store: evals and labels are written to its spool, captures and agreement read from it."""

    @classmethod
    def from_settings(cls, settings: Settings) -> EvalParameters:
        return cls(queue_prefix=settings.queue_prefix, traces_path=settings.traces_path)


@dataclass(frozen=True)
class LearnParameters:
    """What ``LearnActivities`` (export, train, load and unload an adapter, promote it) needs."""

    traces_path: Path
    """The trace store whose captures become the dataset."""
    trainer: tuple[str, ...]
    """``[learn] trainer``: the command a train worker runs, placeholders unfilled."""
    open_url: str
    """The open endpoint (vLLM) adapters are loaded into and unloaded from."""
    open_api_key: SecretStr | None
    """Its key, if it wants one."""
    learn_dir: Path
    """The learn folder, where ``promotions.json`` is kept."""

    @classmethod
    def from_settings(cls, settings: Settings) -> LearnParameters:
        return cls(
            traces_path=settings.traces_path,
            trainer=tuple(settings.learn.trainer),
            open_url=settings.open_url,
            open_api_key=settings.open_api_key,
            learn_dir=learn_dir(settings),
        )
