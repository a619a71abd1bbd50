"""The names other processes and people rely on, defined once: workflow, query, update, activities,
task queues, search attributes.

A worker, the CLI, the webhook server, the Web UI's queries and a cluster's operator all meet on these
names; renaming one in a single place breaks the others only at run time (a query nobody answers, an
activity no worker polls for). So code refers to the constants here, never to a string typed again.
Pure data: the workflow sandbox imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from temporalio.common import SearchAttributeKey

# --- workflow, query, update, activities -----------------------------------------------------

AGENT_WORKFLOW = "AgentTaskWorkflow"
PROGRESS_QUERY = "progress"
APPROVE_UPDATE = "approve_step"
CALL_MODEL = "call_model"
RUN_TOOL = "run_tool"
DESCRIBE_TOOLS = "describe_tools"  # an MCP server's or the Python tools' catalogue, when a run plans
CHECK_ANSWER = "check_answer"  # the answer's figures against what the run observed (agents/claims.py)
# Shadow evaluation (agents/evals.py): a run starts one ShadowEvalWorkflow per sampled open call.
SHADOW_WORKFLOW = "ShadowEvalWorkflow"
# Budgets (agents/budgets.py): one BudgetWorkflow per budget and UTC day, the shadow spend's among them.
BUDGET_WORKFLOW = "BudgetWorkflow"
SHADOW_BUDGET_WORKFLOW = "ShadowBudgetWorkflow"  # earlier releases' shadow budget: kept for the days in flight
BUDGET_QUERY = "budget"
# Webhook storms: one HookGateWorkflow per hook admits deliveries ([hooks.<name>] max_runs_per_minute, ...).
HOOK_GATE_WORKFLOW = "HookGateWorkflow"
ADMIT_UPDATE = "admit"
RESERVE_UPDATE = "reserve"
SETTLE_UPDATE = "settle"
RESERVE_SHADOW_BUDGET = "reserve_shadow_budget"
SETTLE_SHADOW_BUDGET = "settle_shadow_budget"
RECORD_EVAL = "record_eval"
READ_AGREEMENT = "read_agreement"
RECORD_LABEL = "record_label"  # a person's decision on a captured step, for datasets
REPLAY_WORKFLOW = "ReplayEvalWorkflow"  # held-out examples re-asked of a candidate model (stakeflow evals replay)
LOAD_REPLAY_EXAMPLES = "load_replay_examples"
LEARN_WORKFLOW = "LearnWorkflow"  # export -> train -> load -> judge -> promote (stakeflow learn)
EXPORT_DATASET = "export_dataset"
TRAIN_ADAPTER = "train_adapter"  # on the train queue, where the GPU is
LOAD_ADAPTER = "load_adapter"  # on the open queue, next to vLLM
UNLOAD_ADAPTER = "unload_adapter"
PROMOTE_ADAPTER = "promote_adapter"
# A team's own workflow starting a run (stakeflow.workflow.run_agent): the request is built and checked by this
# activity on the team's own queue, so its name is stakeflow's beside the team's activity names.
PREPARE_RUN = "stakeflow.prepare_run"

# --- public values -----------------------------------------------------------------------------
# With payload encryption on (stakeflow/temporal/codec.py) every payload is sealed, memo values too. A value
# wrapped in ``Public`` is marked with this metadata key by the payload converter and left in clear, for
# what the Web UI should show without keys and that is no secret: a run's cost line, a webhook seal's run id.
# Workflow code wraps its memo values here (no I/O: the sandbox imports this module), the codec honours it.

PUBLIC_KEY = "stakeflow-public"  # payload metadata: a Public value, left in clear


class Public(str):
    """A string the codec leaves readable: memo values that are no secret. Nothing a run reads or writes."""


# --- task queues ------------------------------------------------------------------------------
# Four queues, so the parts scale separately: open-model calls run near the GPU, frontier calls
# wherever the API key lives, tools next to the data, workflows anywhere. A prefix other than
# ``stakeflow`` gives an isolated set (tests, staging).

DEFAULT_PREFIX = "stakeflow"
QueueRole = Literal["workflows", "open", "frontier", "tools", "train"]
ROLES: tuple[QueueRole, ...] = ("workflows", "open", "frontier", "tools", "train")


def queue_name(role: QueueRole, prefix: str = DEFAULT_PREFIX) -> str:
    """The task queue for one role under a prefix: ``queue_name("open") == "stakeflow-open"``."""
    return f"{prefix}-{role}"


# --- search attributes ------------------------------------------------------------------------
# A workflow that upserts an unregistered attribute (or one registered with another type) fails its
# workflow task again and again, so the run hangs: workers check these before they poll
# (stakeflow/temporal/namespace.py), and `stakeflow up` registers them on the dev server it starts.


@dataclass(frozen=True)
class Attribute:
    key: str  # what the code calls it: KEYS["stakes"]
    name: str  # what Temporal calls it
    kind: str  # Temporal's type, as `temporal server start-dev --search-attribute Name=Type` spells it


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("stakes", "StakeflowStakes", "Keyword"),
    Attribute("sensitivity", "StakeflowSensitivity", "Keyword"),
    Attribute("source", "StakeflowSource", "Keyword"),
    Attribute("open_steps", "StakeflowOpenSteps", "Int"),
    Attribute("frontier_steps", "StakeflowFrontierSteps", "Int"),
    Attribute("escalations", "StakeflowEscalations", "Int"),
    Attribute("cost_usd", "StakeflowCostUsd", "Double"),
    Attribute("awaiting_approval", "StakeflowAwaitingApproval", "Bool"),
    Attribute("agent", "StakeflowAgent", "Keyword"),
    Attribute("answer_supported", "StakeflowAnswerSupported", "Bool"),
)
SEARCH_ATTRIBUTES: dict[str, str] = {a.name: a.kind for a in ATTRIBUTES}  # name -> type
_KEY_FACTORIES = {
    "Keyword": SearchAttributeKey.for_keyword,
    "Int": SearchAttributeKey.for_int,
    "Double": SearchAttributeKey.for_float,
    "Bool": SearchAttributeKey.for_bool,
}
KEYS: dict[str, Any] = {a.key: _KEY_FACTORIES[a.kind](a.name) for a in ATTRIBUTES}
