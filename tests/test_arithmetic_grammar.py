"""The calculator's expression held to the figures a run has seen (agents/arithmetic_grammar.py): the pattern, its
agreement with the answer check, the step call that carries it, and the real embedded model decoding under it."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stakeflow.activities.tools.calculator import calculate
from stakeflow.agents.arithmetic_grammar import MAX_OPERANDS, operand_pattern, operands_constrained
from stakeflow.agents.claims import Observation, check_answer, figures, operands
from stakeflow.agents.tools import CATALOGUE
from stakeflow.config import PolicyConfig, Settings
from stakeflow.services.runs import build_request
from tests.agent_script import agent, plan
from tests.agent_script import call as tool_call
from tests.fakes import prompt_text
from tests.support import EXAMPLE_WORKSPACE, make_settings
from tests.test_embedded_model_calls import embedded_server  # noqa: F401
from tests.test_model_activity import call, request
from tests.workflow_support import frontier_fake, open_fake, run_task, settings_for, workspace  # noqa: F401


def pattern_for(goal: str, *outputs: str) -> str:
    found = operand_pattern(operands(goal, outputs))
    assert found is not None
    return found


@pytest.mark.parametrize(
    ("goal", "outputs", "expression"),
    [
        ("What is 1234 * 5678?", [], "1234 * 5678"),
        ("What is 15% of 2,460?", [], "15% * 2460"),
        ("Add 1,250.75 and 3,499.25, then divide the sum by 4.", [], "(1250.75 + 3499.25) / 4"),
        ("How many seconds are there in 3 days?", [], "3 * 24 * 60 * 60"),
        ("What is the West's share of the total?", ["region,revenue\nWest,4188\ntotal,16330.0"], "4188/16330*100"),
        ("Subtract the target from the revenue.", ["target 5023", "revenue 4188"], "-(4188 - 5023)"),
    ],
)
def test_an_expression_over_the_runs_figures_fits(goal, outputs, expression):
    assert re.fullmatch(pattern_for(goal, *outputs), expression)
    calculate(expression)  # and the calculator takes it


@pytest.mark.parametrize(
    "expression",
    [
        "1234 * 5678 - 90",  # a worked example's operand
        "12345 * 5678",  # two figures run together
        "1234 * 5678.5",
        "1234 * 5678 = 7006652",
        "",
        "1234 * x",
    ],
)
def test_a_figure_the_run_has_not_seen_does_not(expression):
    assert not re.fullmatch(pattern_for("What is 1234 * 5678?"), expression)


GOAL = "What is 1,250.75 plus 15% of 2,460, per 3 days?"
OUTPUTS = ["units\n14\n-9\n0.125"]
FITTING = st.from_regex(pattern_for(GOAL, *OUTPUTS), fullmatch=True)
# Resolved now, at collection: from_regex imports its module lazily, and pytest compiles it (assertion rewriting)
# with ast.parse; inside the test, under the recursion limit Hypothesis raises, CPython 3.11.7 failed that compile
# with "SystemError: AST constructor recursion depth mismatch" in a CI run from a fresh clone.
FITTING.validate()


@settings(max_examples=200, deadline=None)
@given(FITTING)
def test_whatever_fits_computes_a_value_the_answer_check_accepts(expression):
    """Any expression the pattern allows is one whose result ``check_answer`` takes as observed."""
    goal, outputs = GOAL, OUTPUTS
    try:
        value = calculate(expression)
    except Exception:  # division by zero, too large: the tool's own error
        return
    computed = Observation(tool="calculator", text=f"{expression} = {value}")
    seen = [Observation(tool="sql_query", text=o) for o in outputs] + [computed]
    check = check_answer(f"It comes to {value}.", goal=goal, observations=seen)
    assert check.supported, (expression, value, check.unsupported_claims)


def test_too_many_figures_leave_the_expression_free():
    assert operand_pattern([Decimal(n) for n in range(MAX_OPERANDS + 1)]) is None
    view = CATALOGUE["calculator"].view()
    many = " ".join(str(n) for n in range(1000, 1000 + MAX_OPERANDS))
    assert operands_constrained(view, "Sum them.", [many]) == view
    # Other tools are left as they are.
    assert operands_constrained(CATALOGUE["read_file"].view(), "What is 2+2?", []) == CATALOGUE["read_file"].view()


def test_the_constrained_view_changes_only_the_expressions_pattern():
    view = CATALOGUE["calculator"].view()
    held = operands_constrained(view, "What is 1234 * 5678?", [])
    pattern = held.args_schema["properties"]["expression"]["pattern"]
    assert "1234" in pattern and "90" not in re.findall(r"\d+", pattern)
    assert {k: v for k, v in held.model_dump().items() if k != "args_schema"} == {
        k: v for k, v in view.model_dump().items() if k != "args_schema"
    }
    assert figures("1234 * 5678")  # the pattern's numbers are the figures the check reads


@pytest.mark.embedded
async def test_the_embedded_model_computes_with_the_goals_figures(tmp_path: Path, embedded_server: int) -> None:
    """llama.cpp compiles the pattern, and SmolLM2, shown a worked example's operands in the step title (as its
    plans copy them), can only compute with the goal's."""
    settings = Settings(home=tmp_path, embedded_port=embedded_server)
    goal = "What is 4821 multiplied by 37?"
    req = request(
        "step",
        system="You carry out one step of a plan. Call the tool with exact arguments. Answer with JSON only.",
        prompt=f"Goal: {goal}\nNow step 1/2: Compute 1234 * 5678 - 90 [calculator]",
        tools=[operands_constrained(CATALOGUE["calculator"].view(), goal, [])],
        require_tool_call=True,
        max_output_tokens=120,
    )
    result = await call(settings, req)
    [made] = result.action.tool_calls
    expression = made.args["expression"]
    assert re.fullmatch(pattern_for(goal), expression), expression
    assert {abs(v) for f in figures(expression) for v, _ in f.values} <= set(operands(goal, []))


@pytest.mark.parametrize("rule", ["calculator_grammar", "sql_grammar"])
def test_auto_means_the_embedded_model(tmp_path, rule):
    embedded = build_request(make_settings(tmp_path), "What is 2 + 2?", workspace=EXAMPLE_WORKSPACE)
    assert getattr(embedded.routing, rule) is True
    vllm = make_settings(tmp_path, open_base_url="http://gpu:8000/v1", open_model="qwen", open_dialect="vllm")
    assert getattr(build_request(vllm, "What is 2 + 2?", workspace=EXAMPLE_WORKSPACE).routing, rule) is False
    always = vllm.model_copy(update={"policy": PolicyConfig(**{rule: "always"})})
    assert getattr(build_request(always, "What is 2 + 2?", workspace=EXAMPLE_WORKSPACE).routing, rule) is True


async def test_a_later_step_may_compute_with_an_earlier_steps_output_and_the_frontier_is_free(
    client, tmp_path, open_fake, frontier_fake, workspace
):
    script = agent(
        plan(("Sum the units", "sql_query"), ("Double it", "calculator"), ("Double it again", "calculator", "high")),
        {
            1: tool_call("sql_query", query="SELECT sum(units) FROM 'sales.csv'"),
            2: tool_call("calculator", expression="77 * 2"),
            3: tool_call("calculator", expression="154 * 2"),
        },
        answer="Twice the units is 154; four times, 308.",
    )
    open_fake.script(script)
    frontier_fake.script(script)
    policy = PolicyConfig(calculator_grammar="always")
    settings = settings_for(tmp_path, open_fake, frontier_fake, policy=policy)
    result = await run_task(client, settings, "How many units were sold in sales.csv, doubled?", workspace=workspace)

    assert [s.route for s in result.steps] == ["open", "open", "frontier"] and result.answer_supported
    [step_2] = [c.body for c in open_fake.calls if "Now step 2" in prompt_text(c.body)]
    schema = json.dumps(step_2["response_format"])
    assert json.dumps(pattern_for("How many units were sold in sales.csv, doubled?", "77")) in schema
    [step_3] = [c.body for c in frontier_fake.calls if "Now step 3" in prompt_text(c.body)]
    assert '"pattern": "^[-+( ]*[0-9]' in json.dumps(step_3)  # the calculator's own, general pattern
