"""The calculator tool through run_tool: exact results, and refusals for anything but arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tool_cases import refused, run


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("(3+4)*2", "14"),
        ("0.1 + 0.2", "0.3"),
        ("7/2", "3.5"),
        ("-7/4", "-1.75"),
        ("1/3", "1/3 (≈ 0.33333333333333333)"),
        ("2**100", str(2**100)),
        ("-2**2", "-4"),
        ("+5 - -3", "8"),
        ("7 // 2", "3"),
        ("-7 % 3", "2"),
        ("2 ** -2", "0.25"),
        ("2 ** 0.5", "1.4142135623730951"),
        ("1_000 * 3", "3000"),
        ("2**10000", str(2**10000)),
        ("17.5%*2480", "434"),  # a percentage: nothing follows the sign
        ("50% * 30", "15"),
        ("7%3", "1"),  # an operand follows: the remainder
    ],
)
async def test_calculator_is_exact(expression: str, expected: str) -> None:
    result = await run("calculator", {"expression": expression})
    # The expression with its value: the model sees what it computed, the answer check where it came from.
    assert (result.ok, result.output, result.error) == (True, f"{expression} = {expected}", None)


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        (
            "__import__('os').system('touch /tmp/pwned')",
            (
                "'__import__('os').system('touch /tmp/pwned')' is not allowed: "
                "the calculator takes numbers, + - * / // % ** and parentheses only"
            ),
        ),
        ("x + 1", "'x' is not allowed: the calculator takes numbers, + - * / // % ** and parentheses only"),
        (
            "(1).__class__",
            "'(1).__class__' is not allowed: the calculator takes numbers, + - * / // % ** and parentheses only",
        ),
        ("1/0", "division by zero in '1/0'"),
        ("5 % 0", "division by zero in '5 % 0'"),
        ("2**100000", "the exponent 100000 is over the limit of 10000"),
        ("9**9**9", "the exponent 387420489 is over the limit of 10000"),
        ("(2**9999)**9999", "the power is too large to compute exactly: rescale the numbers"),
        ("(-8)**(1/3)", "a negative number to a fractional power has no real value"),
        ("1 +", "'1 +' is not an arithmetic expression (invalid syntax): e.g. (3+4)*2"),
    ],
)
async def test_calculator_refuses(expression: str, error: str) -> None:
    assert refused(await run("calculator", {"expression": expression})) == error


async def test_calculator_never_evaluates_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    result = await run("calculator", {"expression": f"open({str(marker)!r}, 'w')"})
    assert result.ok is False
    assert not marker.exists()


def test_a_transient_ast_systemerror_is_retried(monkeypatch):
    # CPython 3.11's AST constructor can raise this while another thread compiles code (seen in CI).
    from stakeflow.activities.tools import calculator

    real = calculator.ast.parse
    failures = iter([SystemError("AST constructor recursion depth mismatch (before=1, after=2)")])

    def flaky(*args, **kwargs):
        for e in failures:
            raise e
        return real(*args, **kwargs)

    monkeypatch.setattr(calculator.ast, "parse", flaky)
    assert calculator.calculate("6*7") == "42"
