"""Arithmetic over what the run has seen, as a pattern a grammar-constrained decoder enforces.

The answer check (agents/claims.py) takes a calculator's result as observed only when every operand of its
expression is: a figure of the goal, of a tool's output, or a constant (halves to twelfths, percent, units of
time). A small open model does not know that: SmolLM2-135M copies a worked example's operands into its
expression (``1234 * 5678 - 90`` for "What is 1234 * 5678?") and the result then backs nothing. Held by this
pattern, the model can only write an expression over those values, ``+ - * / // % **``, parentheses and
percent signs: every result it computes is one the check accepts, and the right one is within reach.

Like agents/sql_grammar.py, for small models ([policy] calculator_grammar: "auto" = the embedded model), and
with ``*``, ``+`` and ``?`` repetitions only (llama.cpp's server dies of a grammar whose bounded repetitions
multiply). Deterministic: built from the run's goal and its steps' outputs in workflow code.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from stakeflow.agents.claims import operands
from stakeflow.agents.tools import with_arg_keyword
from stakeflow.agents.types import ToolSpecView

# More values than this (a step read a long file of numbers) would make every step's grammar large; the
# expression is left free then, and the answer check still judges its result.
MAX_OPERANDS = 300


def _written(value: Decimal) -> str:
    """``value`` as an expression writes it: plain digits, no exponent, no trailing zeros after the point."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def operand_pattern(values: Iterable[Decimal]) -> str | None:
    """A regular expression (``^...$``) for an arithmetic expression whose numbers are ``values`` only. None when
    there are more than ``MAX_OPERANDS`` of them."""
    written = sorted({_written(v) for v in values}, key=lambda t: (-len(t), t))
    if not written or len(written) > MAX_OPERANDS:
        return None
    number = "(" + "|".join(t.replace(".", "[.]") for t in written) + ")"
    term = f"[-(]*{number}%?[)]*"
    return f"^{term}( ?([*][*]|//|[-+*/%]) ?{term})*$"


def operands_constrained(view: ToolSpecView, goal: str, outputs: Iterable[str]) -> ToolSpecView:
    """``view`` with each of its ``arithmetic_args`` held to :func:`operand_pattern` of what ``goal`` and
    ``outputs`` hold (unchanged when there is no pattern)."""
    pattern = operand_pattern(operands(goal, outputs)) if view.arithmetic_args else None
    return view if pattern is None else with_arg_keyword(view, view.arithmetic_args, "pattern", pattern)
