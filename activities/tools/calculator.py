"""The calculator tool: exact arithmetic without ``eval``.

Models are poor at arithmetic and ``eval`` is a shell, so the expression's syntax tree is walked
here, numbers as exact fractions, with every size bounded before it is computed: one request must
not eat the worker's memory or CPU.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

from stakeflow.activities.tools.context import ToolContext
from stakeflow.agents.tools import CalculatorArgs
from stakeflow.agents.types import ToolResult
from stakeflow.core.errors import ToolError

MAX_EXPRESSION_CHARS = 2_000
MAX_EXPONENT = 10_000
# Numerators and denominators stay under ~3,600 digits, below Python's 4,300-digit
# int-to-str limit, so every result can be printed exactly.
MAX_RESULT_BITS = 12_000
MAX_DECIMAL_PLACES = 60

Number = Fraction | float


async def execute(args: CalculatorArgs, ctx: ToolContext) -> ToolResult:
    """Run ``calculator`` (pure CPU and bounded, so on the event loop).

    The output shows the expression with its value (``1234 * 5678 = 7006652``): the model sees what it
    computed, and the answer check (agents/claims.py) sees where the value came from — a value computed from
    figures the run never observed supports nothing.
    """
    return ToolResult(output=f"{' '.join(args.expression.split())} = {calculate(args.expression)}")


def calculate(expression: str) -> str:
    """Evaluate arithmetic exactly by walking its syntax tree; nothing is ever eval'd."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters: split it into steps")
    try:
        value = _evaluate(_parse(_percentages(expression.strip())), expression.strip())
    except SyntaxError as e:
        raise ToolError(f"'{expression}' is not an arithmetic expression ({e.msg}): e.g. (3+4)*2") from None
    except ZeroDivisionError:
        raise ToolError(f"division by zero in '{expression}'") from None
    except OverflowError:
        raise ToolError(f"the result of '{expression}' is too large") from None
    except (RecursionError, MemoryError):
        raise ToolError("the expression is nested too deeply: split it into steps") from None
    return _format_number(value)


# "17.5%" written as people write a percentage: a number, a percent sign, and then no operand. "7 % 3" and "7%3"
# (an operand follows) stay the remainder.
_PERCENT = re.compile(r"(\d+(?:\.\d+)?|\.\d+)%(?!\s*[\d.(])")


def _percentages(expression: str) -> str:
    """``17.5%*2480`` as ``(17.5/100)*2480``: a percentage where nothing follows the sign, remainder otherwise."""
    return _PERCENT.sub(r"(\1/100)", expression)


def _parse(source: str, attempts: int = 3) -> ast.expr:
    """The expression's syntax tree.

    CPython 3.11's AST constructor keeps its recursion depth in interpreter-wide state, so ``ast.parse`` can
    raise ``SystemError: AST constructor recursion depth mismatch`` while another thread compiles code (a
    workflow activation in the sandbox does): seen in this project's CI. The input is fine then, so try again.
    """
    for _ in range(attempts - 1):
        try:
            return ast.parse(source, mode="eval").body
        except SystemError:
            pass
    return ast.parse(source, mode="eval").body


def _power(base: Number, exponent: Number) -> Number:
    if exponent > MAX_EXPONENT or exponent < -MAX_EXPONENT:  # abs() of a Fraction | float types as object
        raise ToolError(f"the exponent {_format_number(exponent)} is over the limit of {MAX_EXPONENT}")
    if isinstance(base, Fraction) and isinstance(exponent, Fraction) and exponent.denominator == 1:
        # Estimate the size before computing it, so 10**10000**... never eats the worker's memory.
        if abs(exponent.numerator) * math.log2(max(abs(base.numerator), base.denominator)) > MAX_RESULT_BITS:
            raise ToolError("the power is too large to compute exactly: rescale the numbers")
        return base**exponent.numerator
    result = float(base) ** float(exponent)
    if isinstance(result, complex):
        raise ToolError("a negative number to a fractional power has no real value")
    return result


_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Number]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _evaluate(node: ast.expr, source: str) -> Number:
    # bool is an int but not a number here; ast.parse makes no other subclass of int or float.
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        # A float literal is taken as the decimal it was written as: 0.1 is exactly 1/10.
        return _checked(Fraction(repr(node.value)) if isinstance(node.value, float) else Fraction(node.value))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_evaluate(node.operand, source)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _checked(_BINARY[type(node.op)](_evaluate(node.left, source), _evaluate(node.right, source)))
    text = ast.get_source_segment(source, node) or ast.unparse(node)
    raise ToolError(f"'{text[:80]}' is not allowed: the calculator takes numbers, + - * / // % ** and parentheses only")


def _checked(value: Number) -> Number:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ToolError("the result is too large for a floating-point number")
        return value
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > MAX_RESULT_BITS:
        raise ToolError("a number in the expression grows too large to compute exactly: rescale the numbers")
    return value


def _format_number(value: Number) -> str:
    """Integers as integers, terminating fractions as exact decimals, others as p/q with an approximation."""
    if isinstance(value, float):
        return repr(value)
    if value.denominator == 1:
        return str(value.numerator)
    exact = _exact_decimal(value)
    if exact is not None:
        return exact
    with localcontext() as ctx:
        ctx.prec = 17
        approx = Decimal(value.numerator) / Decimal(value.denominator)
    return f"{value.numerator}/{value.denominator} (≈ {approx})"


def _exact_decimal(value: Fraction) -> str | None:
    rest, twos, fives = value.denominator, 0, 0
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    places = max(twos, fives)
    if rest != 1 or places > MAX_DECIMAL_PLACES:
        return None
    digits = str(abs(value.numerator) * 10**places // value.denominator).rjust(places + 1, "0")
    sign = "-" if value < 0 else ""
    return f"{sign}{digits[:-places]}.{digits[-places:]}"
