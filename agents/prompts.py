"""Prompts for the three model calls of a run: plan, step, answer.

Plain string building, deterministic, safe to call from workflow code. Tool outputs are
clipped so a prompt stays within a small model's context.
"""

from __future__ import annotations

from agents.types import StepRecord, ToolSpecView

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
    "Be direct and specific; use the facts from the tool outputs; do not invent facts."
)


def _tool_lines(tools: list[ToolSpecView]) -> str:
    if not tools:
        return "(no tools)"
    return "\n".join(f"- {t.name}: {t.description}" for t in tools)


# One worked example: small open models plan far better with one (SmolLM2-135M picks
# random tools without it); large ones are not misled by it.
PLAN_EXAMPLE = (
    'Example 1. Goal: "Count the rows of orders.csv and save the count to count.txt"\n'
    '{"steps": [{"title": "Count the rows of orders.csv", "tool": "sql_query", "stakes": "low"}, '
    '{"title": "Save the count to count.txt", "tool": "write_file", "stakes": "high"}]}\n'
    'Example 2. Goal: "Summarise the file report.txt"\n'
    '{"steps": [{"title": "Read the file report.txt", "tool": "read_file", "stakes": "low"}, '
    '{"title": "Summarise what it says", "tool": null, "stakes": "low"}]}'
)


def _files(files: list[str]) -> str:
    return f"Files in the workspace: {', '.join(files)}\n\n" if files else ""


def plan_prompt(goal: str, tools: list[ToolSpecView], max_steps: int, files: list[str] = ()) -> str:
    return (
        f"Tools:\n{_tool_lines(tools)}\n\n"
        f"{_files(list(files))}"
        f"{PLAN_EXAMPLE}\n\n"
        f"Now plan 1 to {max_steps} steps for this goal, using only the tools listed.\n"
        f"Goal: \"{goal}\""
    )


def _clip(text: str, limit: int = MAX_CONTEXT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters not shown]"


# A step sees the last few steps in full and the rest as one line each, so a long plan's prompts
# (and workflow payloads) do not grow with the square of its length.
RECENT_STEPS = 5
MAX_OLDER_LINES = 40
# The answer sees every step, clipped so the whole stays near this many characters.
ANSWER_BUDGET_CHARS = 24_000


def _one_line(s: StepRecord) -> str:
    return f"Step {s.index}: {s.title} [{s.status}]"


def _history(steps: list[StepRecord], clip: int = MAX_CONTEXT_CHARS) -> str:
    lines: list[str] = []
    for s in steps:
        lines.append(f"Step {s.index}: {s.title} [{s.status}]")
        if s.result:
            lines.append(f"  note: {_clip(s.result, 500)}")
        for r in s.tool_results:
            body = r.output if r.ok else f"error: {r.error}"
            lines.append(f"  {r.tool} output:\n{_clip(body, clip)}")
    return "\n".join(lines)


def _windowed(steps: list[StepRecord]) -> str:
    older, recent = steps[:-RECENT_STEPS] if len(steps) > RECENT_STEPS else [], steps[-RECENT_STEPS:]
    lines = [_one_line(s) for s in older[-MAX_OLDER_LINES:]]
    if len(older) > MAX_OLDER_LINES:
        lines.insert(0, f"({len(older) - MAX_OLDER_LINES} earlier steps not shown)")
    full = _history(recent)
    return "\n".join([*lines, full] if lines else [full])


def step_prompt(
    goal: str, index: int, total: int, title: str, tool: ToolSpecView | None, done: list[StepRecord],
    files: list[str] = (),
) -> str:
    use = (
        f"Use the tool {tool.name}: {tool.description} Example arguments: {tool.example}. "
        "Paths are relative to the workspace." if tool
        else "No tool: think, and write the result."
    )
    earlier = _windowed(done) or "(none)"
    return (
        f"Goal: {goal}\n\n"
        f"{_files(list(files))}"
        f"Earlier steps:\n{earlier}\n\n"
        f"Now step {index} of {total}: {title}\n{use}"
    )


def answer_prompt(goal: str, steps: list[StepRecord]) -> str:
    clip = max(200, min(MAX_CONTEXT_CHARS, ANSWER_BUDGET_CHARS // max(1, len(steps))))
    return f"Goal: {goal}\n\nResults of the steps:\n{_history(steps, clip) or '(no steps)'}\n\nWrite the answer."
