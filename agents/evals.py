"""Shadow evaluation: what is compared, how it is judged, and how agreement is measured and used for routing.

Pure functions and the models that cross boundaries; safe to import from workflow code.

- **Sampling** is deterministic: a hash of the workflow id, the step and the call's purpose, so a retry, a
  replay or a continue-as-new samples the same calls.
- **Comparing**: structured step actions compare exactly first (same tools with the same normalised
  arguments agree; a different tool disagrees); the same tool with different arguments, plans and answers
  are judged by the frontier model, pairwise, in both orders (LLM judges favour the first position), with
  the written rubric below.
- **Agreement** = verdicts in (agree, tie, open_better): the open path was at least as good. Reported with
  its Wilson 95% interval; routing looks at the interval's lower bound.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal

from pydantic import BaseModel, Field

from stakeflow.agents.types import (
    ApprovalRecord,
    EvalPolicy,
    JudgeVerdict,
    ModelCallRequest,
    ModelCallResult,
    ModelEndpoint,
    Purpose,
    StepAction,
)

Verdict = Literal["agree", "disagree", "open_better", "tie", "frontier_better"]
# stuck: not a comparison but an outcome — the open model ended a step's rounds failing, the frontier then did it.
Method = Literal["exact", "judge", "stuck"]
AGREEING: tuple[str, ...] = ("agree", "tie", "open_better")
AGREEMENT_DAYS = 7  # the window the agreement table (and the bill's figure) covers
JUDGE_PROMPT_VERSION = "judge-v1"


class ShadowRequest(BaseModel):
    """Input of ShadowEvalWorkflow: the open call as it was made, and what it answered."""

    eval_id: str = ""
    parent_workflow_id: str = ""
    step: int = 0
    kind: Purpose = "step"
    tool: str = ""
    agent: str = ""
    goal: str = ""  # what the judge is told the task was
    call: ModelCallRequest = Field(default_factory=ModelCallRequest)
    open_result: ModelCallResult = Field(default_factory=ModelCallResult)
    frontier: ModelEndpoint = Field(default_factory=lambda: ModelEndpoint(route="frontier", provider="anthropic"))
    frontier_queue: str = ""
    policy: EvalPolicy = Field(default_factory=EvalPolicy)
    heartbeat_timeout_s: float = 30.0  # the run's: a shadow whose worker died is retried this soon


class ShadowBatch(BaseModel):
    """Input of ShadowEvalWorkflow: the sampled calls of one run (or of one continue-as-new generation)."""

    parent_workflow_id: str = ""
    calls: list[ShadowRequest] = Field(default_factory=list)


class EvalRecord(BaseModel):
    """One comparison: a row of the trace store's ``evals`` table."""

    eval_id: str = ""
    recorded_at: str = ""
    run_id: str = ""  # the run whose call was shadowed
    shadow_run_id: str = ""
    step: int = 0
    kind: str = ""
    tool: str = ""
    agent: str = ""
    open_model: str = ""
    frontier_model: str = ""
    verdict: str = ""
    method: str = ""
    reason: str = ""
    open_cost_usd: float | None = None
    frontier_cost_usd: float | None = None
    judge_cost_usd: float | None = None
    open_latency_ms: float | None = None
    frontier_latency_ms: float | None = None
    judge_prompt_version: str = JUDGE_PROMPT_VERSION
    source: str = "shadow"
    prompt: str | None = None  # only with [evals] capture = true
    open_output: str | None = None
    frontier_output: str | None = None


class StepLabel(BaseModel):
    """Input of record_label: a person's decision on a captured step."""

    run_id: str = ""
    step: int = 0
    approval: ApprovalRecord = Field(default_factory=ApprovalRecord)


ReplayPart = Literal["test", "train"]  # of the dataset split


class ReplayFilters(BaseModel):
    """Which held-out examples a replay evaluation asks again (the dataset's filters)."""

    split: float = 0.8  # the dataset split whose test part is replayed
    part: ReplayPart = "test"
    since: str | None = None  # ISO time
    agent: str | None = None
    tool: str | None = None
    sources: list[str] = Field(default_factory=lambda: ["frontier", "shadow", "approved"])


class ReplayExample(BaseModel):
    example_id: str = ""
    goal: str = ""
    call: ModelCallRequest = Field(default_factory=ModelCallRequest)
    reference: ModelCallResult = Field(default_factory=ModelCallResult)


class ReplayPageRequest(BaseModel):
    filters: ReplayFilters = Field(default_factory=ReplayFilters)
    offset: int = 0
    limit: int = 20


class ReplayPage(BaseModel):
    examples: list[ReplayExample] = Field(default_factory=list)
    more: bool = False


class ReplayRequest(BaseModel):
    """Input of ReplayEvalWorkflow."""

    filters: ReplayFilters = Field(default_factory=ReplayFilters)
    models: list[ModelEndpoint] = Field(default_factory=list)  # the candidate first, then the current open model
    judge: ModelEndpoint = Field(default_factory=lambda: ModelEndpoint(route="frontier", provider="anthropic"))
    limit: int = 200
    concurrency: int = 4
    open_queue: str = ""
    frontier_queue: str = ""
    workflows_queue: str = ""


class ReplayModelReport(BaseModel):
    model: str = ""
    base_url: str = ""
    n: int = 0
    agreeing: int = 0
    errors: int = 0
    last_error: str = ""
    cost_usd: float = 0.0
    judge_cost_usd: float = 0.0
    latencies_ms: list[float] = Field(default_factory=list)

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.agreeing, self.n)


class ReplayProgress(BaseModel):
    done: int = 0
    total: int = 0
    finished: bool = False
    models: list[ReplayModelReport] = Field(default_factory=list)


class LearnRequest(BaseModel):
    """Input of LearnWorkflow (paths are on shared storage: the train worker reads what the export wrote)."""

    agent: str = ""
    adapter_name: str = ""
    base_model: str = ""
    current_model: str = ""  # what the agent's runs use now (a previous promotion, or the configured model)
    configured_model: str = ""  # the configured open model ([agents.<name>] open_model, else the open model)
    judge_model: str = ""
    workdir: str = ""  # where the dataset and the adapter go
    margin: float = 0.02
    min_examples: int = 20
    split: float = 0.8
    timeout_s: float = 6 * 3600
    heartbeat_s: float = 120.0  # a train worker silent this long is dead: the trainer runs again elsewhere
    replay_limit: int = 200
    concurrency: int = 4
    queue_prefix: str = "stakeflow"


class DatasetFiles(BaseModel):
    train: str = ""
    test: str = ""
    manifest: str = ""
    train_examples: int = 0
    test_examples: int = 0


class TrainRequest(BaseModel):
    learn: LearnRequest = Field(default_factory=LearnRequest)
    files: DatasetFiles = Field(default_factory=DatasetFiles)


class AdapterRequest(BaseModel):
    name: str = ""
    path: str = ""


class Promotion(BaseModel):
    """A promotion record: the agent's open model from now on, and why."""

    agent: str = ""
    open_model: str = ""
    previous: str = ""  # the model it beat
    configured: str = ""  # the configured open model it stands in for (the config wins once that changes)
    evidence: str = ""
    at: str = ""


class LearnResult(BaseModel):
    adapter: str = ""
    adapter_path: str = ""
    promoted: bool = False
    reason: str = ""
    train_examples: int = 0
    test_examples: int = 0
    candidate: ReplayModelReport = Field(default_factory=ReplayModelReport)
    current: ReplayModelReport = Field(default_factory=ReplayModelReport)


class AgreementRow(BaseModel):
    agent: str = ""
    kind: str = ""
    tool: str = ""
    n: int = 0
    agreeing: int = 0

    @property
    def rate(self) -> float:
        return self.agreeing / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.agreeing, self.n)


class AgreementTable(BaseModel):
    """Measured agreement per (agent, kind, tool) over the last ``since_days``, as a run read it."""

    since_days: int = 7
    rows: list[AgreementRow] = Field(default_factory=list)
    overall: AgreementRow | None = None

    def lookup(self, agent: str, kind: str, tool: str) -> AgreementRow | None:
        for row in self.rows:
            if (row.agent, row.kind, row.tool) == (agent, kind, tool):
                return row
        return None


# --- sampling and comparing ------------------------------------------------------------------------


def sampled(workflow_id: str, step: int, purpose: str, rate: float) -> bool:
    """Whether this call is shadowed: the same answer on every retry, replay and continue-as-new."""
    if rate <= 0:
        return False
    if rate >= 1:
        return True
    digest = hashlib.sha256(f"{workflow_id}/{step}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def _normalised(value: Any) -> Any:
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _normalised(v) for k, v in sorted(value.items()) if v is not None}
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    return value


def compare_actions(open_action: StepAction, frontier_action: StepAction) -> tuple[Verdict | None, str]:
    """An exact verdict for two step actions, or (None, why) when only a judge can tell."""
    open_tools = sorted(c.tool for c in open_action.tool_calls)
    frontier_tools = sorted(c.tool for c in frontier_action.tool_calls)
    if open_tools != frontier_tools:
        return "disagree", f"different tools: open {open_tools or 'none'}, frontier {frontier_tools or 'none'}"
    canon = lambda a: sorted(json.dumps([c.tool, _normalised(c.args)], sort_keys=True) for c in a.tool_calls)
    if canon(open_action) == canon(frontier_action):
        return "agree", "same tool calls with the same arguments" if open_tools else "neither called a tool"
    return None, "same tools, different arguments"


def combine(first: JudgeVerdict, second: JudgeVerdict) -> tuple[Verdict, str]:
    """The verdict of two judgements: first with A = open, second with A = frontier (position swapped)."""
    a_is_open: dict[str, Verdict] = {"A": "open_better", "B": "frontier_better", "tie": "tie"}
    a_is_frontier: dict[str, Verdict] = {"A": "frontier_better", "B": "open_better", "tie": "tie"}
    one, two = a_is_open[first.winner], a_is_frontier[second.winner]
    if one == two:
        return one, first.reason
    return "tie", f"the two orderings disagreed ({one} / {two}): {first.reason}"


JUDGE_SYSTEM = (
    "You are an impartial judge of two answers to the same request, A and B. Rubric, in order: "
    "1. Correctness: follows the request and states nothing false or invented. "
    "2. Completeness: does everything the request asks. "
    "3. For tool calls: the right tool with arguments that achieve the step. "
    "Ignore length, style and formatting. Say tie unless one is clearly better. Answer with JSON only."
)


def judge_prompt(goal: str, request: str, a: str, b: str) -> str:
    return f"Task of the agent: {goal}\n\nRequest:\n{request}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}\n\nWhich is better?"


def rendered(result: ModelCallResult) -> str:
    """A model call's output as the judge sees it."""
    if result.plan is not None:
        return result.plan.model_dump_json()
    if result.action is not None:
        return result.action.model_dump_json()
    return result.text or ""


# --- measuring -------------------------------------------------------------------------------------


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a proportion."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def agreement_text(row: AgreementRow | None, since_days: int) -> str:
    """`open path agreement 94% (89–97%, n=240, last 7d)`, or `agreement not measured`."""
    if row is None or row.n == 0:
        return "agreement not measured"
    return f"open path agreement {row.rate:.0%} ({_span(row)}, n={row.n}, last {since_days}d)"


def _span(row: AgreementRow) -> str:
    low, high = row.interval
    return f"{low * 100:.0f}–{high:.0%}"


def routing_by_agreement(
    table: AgreementTable | None,
    agent: str,
    kind: str,
    tool: str | None,
    min_agreement: float | None,
    min_samples: int,
) -> tuple[bool, str]:
    """(send to the frontier, why) for one step, by the measured agreement of its kind."""
    if table is None or min_agreement is None:
        return False, ""
    row = table.lookup(agent, kind, tool or "")
    if row is None or row.n < min_samples:
        return False, ""
    low, _ = row.interval
    what = f"{row.n} {tool or 'tool-less'} {kind}s"
    figure = f"open path agreed on {row.rate:.0%} of {what} ({_span(row)})"
    if low < min_agreement:
        return True, f"{figure} < {min_agreement:.0%}"
    return False, f"{figure} >= {min_agreement:.0%}"
