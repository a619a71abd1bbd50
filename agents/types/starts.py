"""What a run is started with from a team's own code: the options of `stakeflow run`, as one model (``RunOptions``),
and what the request-building activity gives a workflow that starts the run as its child (``PreparedRun``).

The Python client (``stakeflow.Client``) and ``stakeflow.workflow.run_agent`` take these options by the CLI's names
and check them here first (``RunOptions.checked``): a value a click option would refuse (``--max-steps 500``) is an
InputError naming the bound. In a workflow that matters twice over: a pydantic ValidationError raised there is not
a failure of the workflow but of its task, which Temporal retries for ever, so the run would hang instead of
failing. What needs the configuration (stakes, sensitivity, tools, agent, workspace) is checked by
``stakeflow.services.runs.build_request``, as for every run.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from stakeflow.agents.types.runs import MAX_ROUNDS, TaskRequest
from stakeflow.core.errors import InputError

MAX_STEPS = 200  # `stakeflow run --max-steps` takes 1 to this (tests/test_client.py holds them equal)
# A goal a team's workflow passes travels through its history three times (the request-building activity's input
# and result, the child's start) before the run's own history: a bound well below Temporal's 2 MB per payload,
# and far above any prompt a model reads whole. Text bigger than this belongs in a workspace file.
MAX_GOAL_BYTES = 256 * 1024
_HINTS = {
    "tools": ": give a list of tool names or globs, e.g. tools=['read_file', 'git.*']",
    "goal": ": give the goal as text",
}


class RunOptions(BaseModel):
    """A run's goal and the options of `stakeflow run`, by the CLI's names (``--max-steps`` is ``max_steps``)."""

    goal: str = ""
    agent: str | None = None
    stakes: str | None = None  # auto | low | high (build_request names them when another is given)
    sensitivity: str | None = None  # public | private
    tools: list[str] | None = None  # names or globs; None: the agent's, else every enabled tool
    workspace: str | None = None
    max_steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)
    max_rounds: int | None = Field(default=None, ge=1, le=MAX_ROUNDS)
    budget_tokens: int | None = Field(default=None, ge=1)
    budget_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)  # the run's frontier spend limit
    auto_approve: bool = False
    source: str = ""  # what started the run (StakeflowSource): "python", "workflow:<the team's workflow type>"

    @classmethod
    def checked(cls, goal: Any, **options: Any) -> RunOptions:
        """The options, or InputError naming what is wrong and the bound it broke (never a ValidationError)."""
        if isinstance(options.get("workspace"), PurePath):
            options["workspace"] = str(options["workspace"])
        try:
            made = cls(goal=goal, **options)
        except ValidationError as e:
            first = e.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "options"
            given = repr(first.get("input"))
            given = given if len(given) <= 80 else given[:77] + "..."
            flag = (
                f" (as `stakeflow run --{field.replace('_', '-')}`)"
                if field in ("max_steps", "budget_tokens", "budget_usd")
                else ""
            )
            raise InputError(f"{field}={given} is refused: {first['msg']}{flag}{_HINTS.get(field, '')}") from None
        size = len(made.goal.encode())
        if size > MAX_GOAL_BYTES:
            raise InputError(
                f"the goal is {size:,} bytes, over the limit of {MAX_GOAL_BYTES:,}: put the text in a file in the "
                "run's workspace and name the file in the goal"
            )
        return made

    def request_args(self) -> dict[str, Any]:
        """``build_request``'s keyword arguments: the options given, and no others (a newer option such as
        ``max_rounds`` is passed only when it is set)."""
        return self.model_dump(exclude={"goal", "source"}, exclude_none=True)


class PreparedRun(BaseModel):
    """What a team's workflow starts its agent run with: the checked request, and the run's queue, summary and
    details as ``stakeflow.services.runs.start_run`` would give them (output of the ``stakeflow.prepare_run``
    activity)."""

    request: TaskRequest = Field(default_factory=TaskRequest)
    task_queue: str = ""
    summary: str = ""
    details: str = ""
