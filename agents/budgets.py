"""Frontier budgets in dollars: what a run carries, what a call asks a budget for, a call's worst case.

Pure models and functions; safe to import from workflow code.

- A **daily budget** (``frontier_usd_per_day``, ``agents.<name>.usd_per_day``, ``hooks.<name>.usd_per_day``,
  shadow evaluation's ``evals.max_usd_per_day``) is one ``BudgetWorkflow`` per budget and UTC day, reached by
  update-with-start: every worker, host and restart shares one exact count, with no database of our own.
- A **run budget** (``run_usd``) is the run's own frontier spend, which its workflow knows: its calls are
  sequential, so there is nothing to share.
- **Reserve before, settle after**: each frontier call attempt reserves its worst case (input tokens as
  counted + ``max_tokens``, at the price table in force) against every budget that applies, under a key of its
  own (``<workflow id>/<run id>/<activity id>/<attempt>``), so a retried reservation is the same reservation
  and every attempt that may be billed is covered. After the call it settles the cost the provider reported.
- A reservation that was never settled (its worker died mid-call) stays held at its worst case after its
  deadline, **in doubt**: the provider may have billed it, so the money is not given back; a late settle
  replaces it with the real figure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta
from typing import Literal

from pydantic import BaseModel, Field

OnExceeded = Literal["downgrade", "approve", "fail"]
ON_EXCEEDED_CHOICES: tuple[OnExceeded, ...] = ("downgrade", "approve", "fail")
BudgetScope = Literal["day", "run"]

GLOBAL_BUDGET = "frontier_usd_per_day"
RUN_BUDGET = "run_usd"
SHADOW_BUDGET = "evals.max_usd_per_day"
# Every daily budget closes this long after its UTC day ends: the settlements of calls that straddle
# midnight land in the day they reserved in.
CLOSING_GRACE = timedelta(hours=1)


def agent_budget(agent: str) -> str:
    return f"agents.{agent}.usd_per_day"


def hook_budget(hook: str) -> str:
    return f"hooks.{hook}.usd_per_day"


class BudgetRef(BaseModel):
    """One budget a run's frontier calls draw on, as the run carries it (snapshotted at its start)."""

    name: str = ""
    limit_usd: float = 0.0
    on_exceeded: OnExceeded = "downgrade"
    scope: BudgetScope = "day"


class BudgetAsk(BaseModel):
    """Input of a budget workflow's ``reserve`` and ``settle`` updates.

    Wire-compatible with the shadow budget of earlier releases (``day``, ``eval_id``, ``usd``, ``max_usd``),
    so a ``ShadowBudgetWorkflow`` still open on the day of an upgrade answers the new code's asks.
    """

    day: str = ""  # ISO date (UTC)
    eval_id: str = ""  # the reservation's key: an eval id (shadow), a call attempt's key (runs)
    usd: float = 0.0  # reserve: the worst case; settle: what it cost
    max_usd: float = 0.0  # the limit in force where the ask was made
    name: str = ""  # the budget
    ttl_s: float = 0.0  # after this long unsettled, the reservation is in doubt (0: never)
    force: bool = False  # approved over budget by a person: reserved whatever is left
    run_id: str = ""  # the run whose call it is (shown for reservations in doubt)


class BudgetGrant(BaseModel):
    """Answer of ``reserve`` and ``settle``: granted or not, and the budget's figures after it."""

    granted: bool = True
    spent_usd: float = 0.0  # settled + reserved
    left_usd: float = 0.0
    settled_usd: float = 0.0
    reserved_usd: float = 0.0
    limit_usd: float = 0.0
    name: str = ""


class BudgetRefusal(BaseModel):
    """Why a frontier call was refused: carried in its ApplicationError's details under ``REFUSAL_KEY``."""

    name: str = ""
    limit_usd: float = 0.0
    settled_usd: float = 0.0
    reserved_usd: float = 0.0
    call_usd: float | None = 0.0  # the refused call's worst case; None: its model has no price
    on_exceeded: OnExceeded = "downgrade"

    @property
    def reason(self) -> str:
        """``frontier budget frontier_usd_per_day $5.00 spent ($4.98 + $0.07 reserved)``."""
        return (
            f"frontier budget {self.name} ${self.limit_usd:.2f} spent "
            f"(${self.settled_usd:.2f} + ${self.reserved_usd:.2f} reserved)"
        )

    def as_details(self) -> dict:
        return {REFUSAL_KEY: self.model_dump(mode="json")}

    @classmethod
    def from_details(cls, details: Sequence[object] | None) -> BudgetRefusal | None:
        """The refusal in an ApplicationError's ``details``, or None when it carries none."""
        for item in details or ():
            if isinstance(item, dict) and REFUSAL_KEY in item:
                return cls.model_validate(item[REFUSAL_KEY])
        return None


REFUSAL_KEY = "stakeflow.budget_refusal"


class Reservation(BaseModel):
    """A held worst case: until its call settles, or for good once in doubt (see the module docstring)."""

    usd: float = 0.0
    deadline: str = ""  # ISO time; "" = none
    run_id: str = ""


class BudgetState(BaseModel):
    """Input of ``BudgetWorkflow``: one budget's day, carried whole across continue-as-new."""

    name: str = ""
    day: str = ""
    limit_usd: float = 0.0
    settled_usd: float = 0.0
    calls: int = 0  # settled calls that cost something
    refused: int = 0
    reservations: dict[str, Reservation] = Field(default_factory=dict)
    generation: int = 1  # how many histories this day's budget has had
    # Continue as new past this many history events (or sooner, when Temporal suggests it).
    max_history_events: int = 10_000


class BudgetTotals(BaseModel):
    """Answer of the ``budget`` query: the figures `stakeflow budgets` prints."""

    name: str = ""
    day: str = ""
    limit_usd: float = 0.0
    settled_usd: float = 0.0
    reserved_usd: float = 0.0  # live reservations and those in doubt
    reservations: list[Reservation] = Field(default_factory=list)  # each held worst case, with its deadline
    calls: int = 0
    refused: int = 0
    generation: int = 1
    resets_at: str = ""

    @property
    def left_usd(self) -> float:
        return max(0.0, self.limit_usd - self.settled_usd - self.reserved_usd)

    def in_doubt(self, now: datetime) -> tuple[int, float]:
        """The reservations past their deadline at ``now`` (naive UTC), and their worst cases' sum.

        Worked out by the reader: a query sees the workflow's time of its last update, not the reader's clock."""
        late = [r for r in self.reservations if r.deadline and datetime.fromisoformat(r.deadline) < now]
        return len(late), sum(r.usd for r in late)


def resets_at(day: str) -> datetime:
    """When the budget of ``day`` (ISO date, UTC) gives way to the next day's: its midnight, naive UTC."""
    return datetime.combine(date.fromisoformat(day) + timedelta(days=1), time())


def budget_workflow_id(prefix: str, name: str, day: str) -> str:
    """The budget workflow of ``name`` on ``day``. The shadow budget keeps the id it had before budgets were
    general, so on the day of an upgrade the workflow already counting is the one that answers."""
    if name == SHADOW_BUDGET:
        return f"{prefix}-shadow-budget-{day}"
    return f"{prefix}-budget-{name}-{day}"


# --- the worst case of a frontier call ------------------------------------------------------------
# Input tokens are counted offline as the UTF-8 bytes of every text the request carries (system, messages,
# tool names, descriptions and schemas as JSON). Claude's tokenizer is a byte-level BPE: every token stands
# for at least one byte, so a text has at most as many tokens as bytes (typical English text has about one
# token per 4 bytes, so this over-reserves input about fourfold). To that come the tokens Anthropic adds
# that the request does not carry: its tool-use system prompt (346 tokens at most on current models, by
# Anthropic's pricing page) and the turn markers of each message.
TOOL_PROMPT_TOKENS = 400
TOKENS_PER_MESSAGE = 8


def worst_case_input_tokens(texts: Iterable[str], *, messages: int, tools: bool) -> int:
    """An upper bound of the input tokens of a request carrying ``texts`` (see above)."""
    carried = sum(len(t.encode("utf-8")) for t in texts)
    return carried + TOKENS_PER_MESSAGE * max(1, messages) + (TOOL_PROMPT_TOKENS if tools else 0)
