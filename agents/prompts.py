"""Prompts for the three model calls of a run: plan, step, answer.

Plain string building, deterministic, safe to call from workflow code. Tool outputs are
clipped so a prompt stays within a small model's context.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import get_args

from stakeflow.agents.types import (
    ExampleTurn,
    Plan,
    PlannedStep,
    RoundTurn,
    StepRecord,
    StepStatus,
    ToolResult,
    ToolSpecView,
)

# Per tool output, per prompt. The embedded model has an 8k context; vLLM models have more,
# but earlier steps are context, not the thing being worked on.
MAX_CONTEXT_CHARS = 3000

PLAN_SYSTEM = (
    "You are the planner of an agent. Break the user's goal into a short list of steps. "
    "Each step uses at most one tool from the list, or none when it only needs thinking. "
    "Mark a step's stakes high when a mistake would be costly or hard to undo, else low. "
    "Use as few steps as the goal needs. Answer with JSON only."
)

STEP_SYSTEM = (
    "You carry out one step of a plan. If the step has a tool, call it with exact arguments "
    "taken from the goal and earlier results. Put a one-sentence note of what you did in "
    "'result'. Answer with JSON only."
)

ANSWER_SYSTEM = (
    "You write the final answer to the user's goal from the results of the steps below. "
    "Be direct and specific; use the facts from the tool outputs; do not invent facts. "
    "If the results do not contain what the goal asks, say that you could not find it."
)

REPLAN_SYSTEM = (
    "You are the planner of an agent. A step of your plan did not get what it needed. "
    "Given what the steps so far returned, write the steps that remain to reach the goal: "
    "each uses at most one tool from the list, or none. Write no steps if nothing more can help. "
    "Answer with JSON only."
)


def with_role(instructions: str, system: str) -> str:
    """A named agent's instructions (its role) before the system prompt of a call."""
    return f"{instructions.strip()}\n\n{system}" if instructions.strip() else system


def _tool_lines(tools: list[ToolSpecView]) -> str:
    if not tools:
        return "(no tools)"
    return "\n".join(f"- {t.name}: {t.description}" for t in tools)


# Worked examples, shown to the model as earlier exchanges (a user turn laid out like the real prompt,
# then the plan as the assistant's answer). Small open models need them: SmolLM2-135M picks tools at random
# without examples, copies inline examples' titles and file names, and as turns it copies the form of the
# *last* example it saw. So the examples most like the goal are chosen (word overlap, deterministic), the
# closest shown last. Large models are not misled by them. Files are named sample-* so that a copied name is
# never mistaken for a real workspace file.
_PLAN_EXAMPLES: tuple[tuple[str, tuple[str, ...], Plan], ...] = (
    (
        "Summarise the file sample-minutes.md",
        ("sample-minutes.md (1200 bytes)", "sample-budget.csv (300 bytes)"),
        Plan(
            steps=[
                PlannedStep(title="Read the file sample-minutes.md", tool="read_file", stakes="low"),
                PlannedStep(title="Summarise what it says", tool=None, stakes="low"),
            ]
        ),
    ),
    (
        "What are the total units by region in sample-orders.csv? Save the totals to sample-totals.md",
        ("sample-orders.csv (900 bytes)",),
        Plan(
            steps=[
                PlannedStep(title="Sum the units of sample-orders.csv by region", tool="sql_query", stakes="low"),
                PlannedStep(title="Save the totals to sample-totals.md", tool="write_file", stakes="high"),
            ]
        ),
    ),
    (
        "What is 1234 * 5678 minus 90?",
        (),
        Plan(
            steps=[
                PlannedStep(title="Compute 1234 * 5678 - 90", tool="calculator", stakes="low"),
                PlannedStep(title="Give the result", tool=None, stakes="low"),
            ]
        ),
    ),
    (
        "Fetch https://sample.example/status.json and say whether the service is up",
        (),
        Plan(
            steps=[
                PlannedStep(title="Fetch https://sample.example/status.json", tool="http_get", stakes="low"),
                PlannedStep(title="Say whether the service is up", tool=None, stakes="low"),
            ]
        ),
    ),
)
PLAN_EXAMPLES_SHOWN = 2
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "be",
        "by",
        "do",
        "does",
        "for",
        "from",
        "how",
        "in",
        "is",
        "it",
        "of",
        "on",
        "or",
        "say",
        "the",
        "to",
        "what",
        "which",
        "with",
    ]
)


def _words(text: str) -> set[str]:
    cleaned = "".join(c.lower() if c.isalnum() else " " for c in text)
    return {w for w in cleaned.split() if w not in _STOPWORDS}


def _files(files: list[str]) -> str:
    return f"Files in the workspace: {', '.join(files)}\n\n" if files else ""


def plan_prompt(goal: str, tools: list[ToolSpecView], max_steps: int, files: Sequence[str] = ()) -> str:
    return (
        f"Tools:\n{_tool_lines(tools)}\n\n"
        f"{_files(list(files))}"
        f"Plan 1 to {max_steps} steps for this goal, using only the tools listed.\n"
        f'Goal: "{goal}"'
    )


def plan_examples(goal: str, tools: list[ToolSpecView], max_steps: int) -> list[ExampleTurn]:
    """The worked examples most like ``goal`` whose tools this run offers, the closest last."""
    offered = {t.name for t in tools}
    usable = [
        (n, example)
        for n, example in enumerate(_PLAN_EXAMPLES)
        if all(step.tool is None or step.tool in offered for step in example[2].steps)
    ]
    words = _words(goal)
    # Most overlap first; ties keep the library's order. Then reversed, so the closest comes last.
    ranked = sorted(usable, key=lambda item: (-len(words & _words(item[1][0])), item[0]))[:PLAN_EXAMPLES_SHOWN]
    # An example that shares no word with the goal only teaches the model a wrong plan to copy.
    ranked = ranked[:1] + [item for item in ranked[1:] if words & _words(item[1][0])]
    return [
        ExampleTurn(prompt=plan_prompt(example_goal, tools, max_steps, files), answer=plan.model_dump_json())
        for _, (example_goal, files, plan) in reversed(ranked)
    ]


def _clip(text: str, limit: int = MAX_CONTEXT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters not shown]"


# A step sees the last few steps in full and the rest as one line each, so a long plan's prompts
# (and workflow payloads) do not grow with the square of its length. On the frontier the window moves in jumps
# of RECENT_STEPS (between 5 and 9 steps in full), not one step at a time: a prompt then starts as the last one
# did for 5 steps running, and the prompt cache reads what the step before wrote. The open route keeps 5, for
# a small model's context.
RECENT_STEPS = 5
MAX_OLDER_LINES = 40
# The answer sees every step, clipped so the whole stays near this many characters.
ANSWER_BUDGET_CHARS = 24_000


def _one_line(s: StepRecord) -> str:
    return f"Step {s.index}: {s.title} [{s.status}]"


def _history(steps: list[StepRecord], clip: int = MAX_CONTEXT_CHARS, *, answering: bool = False) -> str:
    """The steps as a later prompt sees them: each one's note, its successful outputs, and the errors of its last
    round — earlier errors a later round fixed are not repeated. A step that got no data says so, and to the
    answer says what to do about it."""
    return "\n".join(_step_text(s, clip, answering=answering) for s in steps)


def _step_text(s: StepRecord, clip: int = MAX_CONTEXT_CHARS, *, answering: bool = False) -> str:
    """One step as ``_history`` shows it."""
    lines = [f"Step {s.index}: {s.title} [{s.status}]"]
    if s.result:
        lines.append(f"  note: {_clip(s.result, 500)}")
    last = max((r.round for r in s.tool_results), default=1)
    for r in s.tool_results:
        if r.ok:
            lines.append(f"  {r.tool} output:\n{_clip(r.output, clip)}")
        elif r.round == last:
            lines.append(f"  {r.tool} error: {_clip(r.error or '', clip)}")
    if s.tool_results and not any(r.ok for r in s.tool_results):
        failed = s.tool_results[-1]
        lines.append(
            f"  Step {s.index} got no data: {failed.tool} failed"
            + ("; say that you could not find what this step was to find." if answering else ".")
        )
    return "\n".join(lines)


def _windowed(steps: list[StepRecord]) -> str:
    return "\n".join(_windowed_blocks(steps))


def shown_as_lines(done: int) -> int:
    """How many of ``done`` earlier steps a step prompt shows as one line each (the oldest ones): none until
    2 x RECENT_STEPS are done, then in jumps of RECENT_STEPS, so RECENT_STEPS to 2 x RECENT_STEPS - 1 show in full."""
    return max(0, (done - RECENT_STEPS) // RECENT_STEPS * RECENT_STEPS)


def _windowed_blocks(steps: list[StepRecord], *, jumps: bool = False) -> list[str]:
    """The earlier steps as a step prompt shows them, one block per recent step (the older ones as one block of a
    line each): a step's block reads the same in every later prompt until it leaves the recent window, which
    slides a step at a time, or with ``jumps`` moves RECENT_STEPS at a time (``shown_as_lines``)."""
    cut = shown_as_lines(len(steps)) if jumps else max(0, len(steps) - RECENT_STEPS)
    older, recent = steps[:cut], steps[cut:]
    lines = [_one_line(s) for s in older[-MAX_OLDER_LINES:]]
    if len(older) > MAX_OLDER_LINES:
        lines.insert(0, f"({len(older) - MAX_OLDER_LINES} earlier steps not shown)")
    return (["\n".join(lines)] if lines else []) + [_step_text(s) for s in recent]


def step_prompt(
    goal: str,
    index: int,
    total: int,
    title: str,
    tool: ToolSpecView | None,
    done: list[StepRecord],
    files: Sequence[str] = (),
) -> str:
    return "".join(step_prompt_blocks(goal, index, total, title, tool, done, files))


def step_prompt_blocks(
    goal: str,
    index: int,
    total: int,
    title: str,
    tool: ToolSpecView | None,
    done: list[StepRecord],
    files: Sequence[str] = (),
    *,
    jumps: bool = False,
) -> list[str]:
    """The step prompt as blocks whose text, joined, is the prompt: the run's stable head (goal, files), each earlier
    step, then this step's own ask. The stable part comes first, so a provider's prompt cache (Anthropic's
    breakpoints, vLLM's automatic prefix caching) reuses what the step before sent; ``jumps``: the window of
    earlier steps shown in full moves in jumps (a frontier call's: see RECENT_STEPS)."""
    # No example arguments: a small model copies their values (a worked example's file, its numbers); the
    # arguments' schema, which structured output enforces, shows their form.
    use = (
        f"Use the tool {tool.name}: {tool.description} Take its arguments from the goal and the earlier results. "
        "Paths are relative to the workspace."
        if tool
        else "No tool: think, and write the result."
    )
    head = f"Goal: {goal}\n\n{_files(list(files))}Earlier steps:\n"
    ask = f"\n\nNow step {index} of {total}: {title}\n{use}"
    earlier = _windowed_blocks(done, jumps=jumps)
    if not earlier:
        return [head, "(none)" + ask]
    return [head, earlier[0], *("\n" + b for b in earlier[1:]), ask]


def block_ends(blocks: list[str]) -> list[int]:
    """Where each block but the last ends in the joined text (``ModelCallRequest.prompt_blocks``)."""
    ends, at = [], 0
    for block in blocks[:-1]:
        at += len(block)
        ends.append(at)
    return ends


# The headings the prompts above and below frame results with: an answer holding one copied its prompt instead of
# answering (agents/claims.py). A tool's heading is its name (lower case, as tools are named) before "output:" or
# "error:", at the start of a line, or anywhere when the name has an underscore (``sql_query error:``).
SCAFFOLDING = re.compile(
    rf"^[\s{{(\[]*Step \d+: [^\n]*\[(?:{'|'.join(get_args(StepStatus))})\]"
    r"|^[\s{(\[]*[a-z][a-z0-9]* (?:output|error):|\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+ (?:output|error):"
    r"|\bStep \d+ got no data\b|\bResults of (?:the steps|your tool calls):|\bYour previous answer was:"
    r"|\bNothing the tools returned supports this\b",
    re.MULTILINE,
)


def answer_clip(total_steps: int) -> int:
    """How much of each tool output the answer prompt shows: the answer's budget shared by all steps."""
    return max(200, min(MAX_CONTEXT_CHARS, ANSWER_BUDGET_CHARS // max(1, total_steps)))


def answer_prompt(goal: str, steps: list[StepRecord], missing: Sequence[str] = ()) -> str:
    """The answer call's prompt; ``missing``: files the goal names that the workspace does not have."""
    clip = answer_clip(len(steps))
    results = _history(steps, clip, answering=True) or "(no steps)"
    absent = "".join(
        f"\nThe goal names {name}: there is no such file in the workspace; say that {name} does not exist."
        for name in missing
    )
    return f"Goal: {goal}\n\nResults of the steps:\n{results}\n{absent}\nWrite the answer."


def reask_prompt(
    goal: str, steps: list[StepRecord], previous: str, claims: list[str], missing: Sequence[str] = ()
) -> str:
    """The answer asked again, naming what in the previous one nothing the run observed supports."""
    named = "; ".join(claims)
    return (
        f"{answer_prompt(goal, steps, missing)}\n\nYour previous answer was:\n{_clip(previous, 2000)}\n\n"
        f"Nothing the tools returned supports this in it: {named}. Write the answer again using only figures, "
        "names and words that appear in the results; where the results do not say what the goal asks, say that "
        "you could not find it."
    )


# A round's results as the model sees them in its next round: enough of each output and error to act on.
ROUND_RESULT_CHARS = 1500


def clipped_result(result: ToolResult) -> ToolResult:
    """A tool result as a later round of its step carries it (the round's conversation, in history)."""
    return result.model_copy(
        update={
            "output": _clip(result.output, ROUND_RESULT_CHARS),
            "error": _clip(result.error or "", ROUND_RESULT_CHARS) or None,
        }
    )


def round_results(turn: RoundTurn) -> str:
    """What the tools returned in an earlier round, and what to do about what failed."""
    lines = ["Results of your tool calls:"]
    for n, r in enumerate(turn.results, start=1):
        lines.append(f"{n}. {r.tool}: " + (f"ok\n{r.output}" if r.ok else f"error: {r.error}"))
    if any(not r.ok for r in turn.results):
        lines.append(
            "\nFix the failed call: call the tool again with corrected arguments (use the error's hint and the "
            "real names it lists), or make no tool calls if this step cannot be done."
        )
    return "\n".join(lines)


def replan_prompt(
    goal: str,
    tools: list[ToolSpecView],
    done: list[StepRecord],
    remaining: list[str],
    room: int,
    files: Sequence[str] = (),
) -> str:
    """The remaining steps asked for again after step ``done[-1]`` did not get what it needed."""
    left = "\n".join(f"- {title}" for title in remaining) or "(none)"
    return (
        f'Tools:\n{_tool_lines(tools)}\n\n{_files(list(files))}Goal: "{goal}"\n\n'
        f"Steps so far:\n{_windowed(done)}\n\nThe plan's remaining steps were:\n{left}\n\n"
        f"Step {done[-1].index} did not get what it needed. Plan 0 to {room} steps that remain to reach the goal, "
        "using only the tools listed."
    )


def compacted(step: StepRecord, total_steps: int) -> StepRecord:
    """A step that left the recent window, kept only as far as any later prompt will read it.

    Step prompts show older steps as one line, and the answer clips every output to ``answer_clip``: more
    than that is never read again, yet it would ride along in the progress query, every continue-as-new
    state and the result. So a 200-step plan's largest payload stays far below Temporal's 2 MB limit
    (tests/test_workflow.py measures it) and no prompt changes.
    """
    limit = answer_clip(total_steps)
    results = [
        r
        if len(r.output) <= limit
        else r.model_copy(
            update={
                "output": r.output[:limit] + f"\n[... {len(r.output) - limit} more characters not kept]",
                "truncated": True,
            }
        )
        for r in step.tool_results
    ]
    # A step that took one round says all of it in its own record; the rounds of one that took more stay (their
    # calls are the story of how it got there), with their notes cut.
    rounds = [r.model_copy(update={"note": r.note[:200]}) for r in step.rounds] if len(step.rounds) > 1 else []
    return step.model_copy(update={"tool_results": results, "result": step.result[:500], "rounds": rounds})
