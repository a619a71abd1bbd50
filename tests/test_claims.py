"""The answer check (agents/claims.py): every figure and quotation an answer gives, against what the run observed."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stakeflow.agents.claims import (
    Observation,
    answer_figures,
    asks_quantity,
    asks_question,
    check_answer,
    declines,
    missing_files,
)

SALES = "region,revenue\nNordic,9356\nSouth,2786\nWest,4188\ntotal,16330.0\n"


@pytest.mark.parametrize(
    "answer",
    [
        "Total revenue was 16,330.",
        "Total revenue was 16330.",
        "Total revenue was $16,330.00.",
        "The Nordic region brought in 9,356 and the West 4188.",
        "Revenue: 16.33k",  # written to the ten: 16330 rounds to it
        "1. Nordic\n2. South\n3. West",  # list markers are not figures
        "The SmolLM2 model and Q3 are names, not figures; the total was 16,330.",
    ],
)
def test_figures_the_outputs_hold_are_supported(answer):
    check = check_answer(answer, goal="What was the revenue in sales.csv?", observations=[SALES])
    assert check.supported, check.unsupported_claims


@pytest.mark.parametrize(
    ("answer", "claims"),
    [
        ("Total revenue was 105,283.64.", ["105,283.64"]),  # the issue's: a figure from a worked example
        ("Nordic 9356, South 2,800.", ["2,800"]),
        ("Revenue grew 12% to 18,000.", ["12%", "18,000"]),
        ("The total is -16330.", ["-16330"]),
    ],
)
def test_figures_nothing_observed_holds_are_named(answer, claims):
    check = check_answer(answer, goal="What was the revenue?", observations=[SALES])
    assert not check.supported
    assert check.unsupported_claims == claims


def test_the_goal_is_an_observation_and_errors_are_not():
    goal = "What is 1234 * 5678?"
    assert check_answer("1234 * 5678 = 7006652", goal=goal, observations=["7006652"]).supported
    # The calculator failed: its error text is no source for the product the model made up.
    failed = check_answer("1234 * 5678 = 7006653", goal=goal, observations=[])
    assert failed.unsupported_claims == ["7006653"]


def test_percentages_match_their_fraction_and_their_figure():
    assert check_answer("Growth was 12%.", goal="g", observations=["growth 0.12"]).supported
    assert check_answer("Growth was 12%.", goal="g", observations=["growth_pct 12"]).supported
    assert check_answer("Growth was 12.3%.", goal="g", observations=["growth 0.1234"]).supported
    assert not check_answer("Growth was 13%.", goal="g", observations=["growth 0.12"]).supported


def test_dates_and_ranges_are_their_numbers():
    observed = ["2026-07-03,Nordic,12\n2026-09-29,West,20"]
    assert check_answer(
        "On 2026-07-03 the Nordic region sold 12; by 2026-09-29 West sold 20.", goal="g", observations=observed
    ).supported
    assert check_answer("Between 12-20 units per order.", goal="g", observations=observed).supported
    assert not check_answer("On 2026-07-04 it sold 12.", goal="g", observations=observed).supported


def test_quotations_must_be_in_an_output():
    notes = "Decisions:\n- Hire two more account managers for the Nordic region before January."
    ok = 'The notes say "hire two more account managers for the Nordic region".'
    assert check_answer(ok, goal="g", observations=[notes]).supported
    made_up = 'The notes say "fire the whole South region team at once".'
    assert check_answer(made_up, goal="g", observations=[notes]).unsupported_claims == [
        '"fire the whole South region team at once"'
    ]
    # Said twice, named once (SmolLM2 repeats its own sentences; the warning listed each one twice).
    twice = f"{made_up} Again: {made_up}"
    assert check_answer(twice, goal="g", observations=[notes]).unsupported_claims == [
        '"fire the whole South region team at once"'
    ]


def test_an_answer_without_figures_is_supported_and_says_so():
    check = check_answer("I could not find the revenue: the query failed.", goal="g", observations=[])
    assert check.supported and check.checked_numbers == 0


@given(
    st.decimals(min_value=Decimal("-1e9"), max_value=Decimal("1e9"), places=2, allow_nan=False, allow_infinity=False)
)
def test_any_observed_value_written_any_usual_way_is_supported(value):
    observed = [f"result\n{value}"]
    for written in (f"{value}", f"{value:,}", f"{value:,.2f}", f"{value:.2f}"):
        assert check_answer(f"It is {written}.", goal="g", observations=observed).supported, written


@given(st.integers(min_value=1000, max_value=10**9), st.integers(min_value=1, max_value=999))
def test_an_integer_off_by_any_amount_is_not_supported(value, delta):
    check = check_answer(f"It is {value + delta:,}.", goal="g", observations=[f"total {value}"])
    assert not check.supported


def test_answer_figures_keep_the_written_text():
    assert [f.text for f in answer_figures("Sold $1,200.50 (12%) in Q3 2026.")] == ["$1,200.50", "12%", "2026"]


def test_a_calculator_value_is_backed_only_by_observed_operands():
    goal = "What is 1234 * 5678?"
    right = Observation(tool="calculator", text="1234 * 5678 = 7006652")
    copied = Observation(tool="calculator", text="1234 * 5678 - 90 = 7006562")  # 90: from a worked example
    assert check_answer("It is 7,006,652.", goal=goal, observations=[right]).supported
    assert check_answer("It is 7006562.", goal=goal, observations=[copied]).unsupported_claims == ["7006562"]
    # A value computed from another tool's output, then from that value, is backed.
    chain = [
        Observation(tool="sql_query", text="revenue\n16330.0\n(1 row)"),
        Observation(tool="calculator", text="16330 * 0.12 = 1959.6"),
        Observation(tool="calculator", text="1959.6 / 2 = 979.8"),
    ]
    assert check_answer(
        "Half the 12% share is 979.8.", goal="What is half of 12% of the revenue?", observations=chain
    ).supported


# Beyond figures and quotations: files, names, findings, quantities. The answers below are what SmolLM2-135M
# wrote in bench/tasks.py runs that the figure check alone passed (wrong and unflagged).

CUSTOMERS = "customer_id,name,city\nC01,Blue Door Cafe,Leeds\nC02,Harbour Bakery,Hull\n"
ROASTERY = ["customers.csv", "orders.csv", "products.csv", "policies.txt", "notes/q3-review.md"]


def test_an_answer_about_a_file_the_workspace_lacks_must_decline():
    goal = "List the three largest invoices in invoices.csv."
    rows = "The three largest invoices in invoices.csv are:\nC01,Blue Door Cafe,Leeds\nC02,Harbour Bakery,Hull"
    check = check_answer(rows, goal=goal, observations=[CUSTOMERS], workspace_paths=ROASTERY)
    assert check.unsupported_claims == ["invoices.csv: no such file in the workspace"]
    for declined in ("invoices.csv does not exist in the workspace.", "I could not find invoices.csv."):
        assert check_answer(declined, goal=goal, observations=[CUSTOMERS], workspace_paths=ROASTERY).supported
    # A file the workspace has, one another tool reached (an MCP server's), or a workspace not listed in full.
    assert check_answer(rows, goal=goal.replace("invoices", "customers"), observations=[CUSTOMERS],
                        workspace_paths=ROASTERY).supported  # fmt: skip
    reached = ["/srv/finance/invoices.csv"]
    assert check_answer(rows, goal=goal, observations=[CUSTOMERS], workspace_paths=ROASTERY, reached=reached).supported
    assert check_answer(rows, goal=goal, observations=[CUSTOMERS], workspace_paths=[]).supported


def test_missing_files_are_file_names_not_domains_or_paths_of_urls():
    paths = ["sales.csv"]
    assert missing_files("Compare sales.csv with targets.csv and budget.XLSX.", paths, "") == [
        "targets.csv",
        "budget.XLSX",
    ]
    assert missing_files("Fetch https://example.com/data.json and check example.com", paths, "") == []
    assert missing_files("Read notes/sales.csv.", ["notes/sales.csv"], "") == []


def test_a_name_nothing_observed_holds_is_unsupported():
    goal = "Who becomes head roaster, according to the Q3 review notes?"
    notes = "From October, Sam Demir becomes head roaster; Priya Natarajan moves to sourcing."
    assert check_answer("The head roaster will be Sam Demir.", goal=goal, observations=[notes]).supported
    check = check_answer(
        "You can parse it with a tool like Scrapy or a Python library.", goal=goal, observations=[notes]
    )
    assert check.unsupported_claims == ["Scrapy (named in no output)", "Python (named in no output)"]
    # Names match as words in any case; a month stands for the dates observed in it.
    sales = "date,region,units\n2026-09-29,West,20\n2026-07-03,Nordic,12"
    assert check_answer(
        "Most units went to the west region, in September.", goal="Which month?", observations=[sales]
    ).supported
    assert not check_answer("Most units sold in the West in March.", goal="When?", observations=[sales]).supported


def test_an_answer_that_copies_the_prompt_reports_nothing():
    """SmolLM2's answer to a question the notes cannot answer (bench/tasks.py, ex-unanswerable-customers) was the
    answer prompt's own text: a tool's output heading and the notes' first line, a figure the notes hold (47)."""
    goal = "How many customers does the Nordic region have?"
    notes = Observation(tool="read_file", text="Team notes — week 47\nThe Nordic team hired two people.")
    echoed = "The answer is: {\n  read_file output:\nTeam notes — week 47\n```"
    check = check_answer(echoed, goal=goal, observations=[notes])
    assert check.unsupported_claims == ['"read_file output:" (the prompt, copied)']
    for copied, shown in [
        ("Step 1: Read notes.txt [ok]\n  note: read it. 47", "Step 1: Read notes.txt [ok]"),
        ("It is 47.\n\nStep 4: Divide what it says [ok]", "Step 4: Divide what it says [ok]"),
        ("Results of the steps:\nStep 2 got no data: sql_query failed.", "Results of the steps:"),
        ("It is 47.\n\nYour previous answer was: 47", "Your previous answer was:"),
        ("It is 47 (sql_query error: bad column).", "sql_query error:"),
    ]:
        assert (
            f'"{shown}" (the prompt, copied)'
            in check_answer(copied, goal=goal, observations=[notes]).unsupported_claims
        )
    # The same words in an answer's own sentences are no copy.
    for own in [
        "Week 47's notes say the Nordic team hired two people; they do not give a customer count. 47",
        "The output: 47 (the step's results show week 47 only).",
    ]:
        assert check_answer(own, goal=goal, observations=[notes]).supported, own


def test_an_answer_that_reports_nothing_the_tools_returned_is_unsupported():
    goal = "Which region sold the most units of the Team product?"
    sales = "region,units\nWest,14\nNordic,9"
    restated = "The goal is to find the region with the most units of the Team product sold."
    assert check_answer(restated, goal=goal, observations=[sales]).unsupported_claims == [
        "no finding: the answer reports nothing the tools returned"
    ]
    assert check_answer("The West region sold the most.", goal=goal, observations=[sales]).supported
    # Every tool call failed: an answer that does not say so has nothing to report.
    assert not check_answer(restated, goal=goal, observations=[], failed_calls=3).supported
    assert check_answer(
        "I could not find it: every query failed.", goal=goal, observations=[], failed_calls=3
    ).supported
    # No tool ran (a goal that needs none): nothing to report from them.
    assert check_answer("Leaves fall; the year turns.", goal="Write a haiku about autumn.", observations=[]).supported


def test_a_goal_asking_for_a_quantity_needs_a_figure_or_a_decline():
    goal = "According to notes.txt, by what percentage did revenue grow in Q3 compared with Q2?"
    notes = "Revenue grew 12% over Q2."
    vague = "The notes describe revenue growth in Q3 compared to Q2 over the quarter."
    assert check_answer(vague, goal=goal, observations=[notes]).unsupported_claims == [
        "no figure: the goal asks for a quantity"
    ]
    assert check_answer("Revenue grew 12%.", goal=goal, observations=[notes]).supported
    # A row with a date in it is no quantity (SmolLM2 answered "how many kilograms ..." with a customer's row).
    row = "The answer is: C01,Blue Door Cafe,Leeds,cafe,2024-03-11"
    customers = "customer_id,name,city,segment,since\nC01,Blue Door Cafe,Leeds,cafe,2024-03-11"
    assert check_answer(row, goal="How many kilograms will it add?", observations=[customers]).unsupported_claims == [
        "no figure: the goal asks for a quantity"
    ]
    assert check_answer("I could not find the growth figure.", goal=goal, observations=[notes]).supported
    for asks in ("How many orders?", "What is 1234 * 5678?", "What was the total revenue?", "Divide 7,200 by 16."):
        assert asks_quantity(asks), asks
    for names in ("Which region sold most on 2026-07-03?", "Who is the head roaster?", "Summarise notes.txt."):
        assert not asks_quantity(names), names


def test_a_decline_is_the_first_sentence_saying_so():
    assert declines("I could not find the revenue: the query failed.")
    assert declines("invoices.csv does not exist in this workspace. Here are other files.")
    assert declines("There is no such file.")
    assert not declines("Revenue was 16,330. I could not find the margin.")
    assert not declines("The customer is C04.\nNo data found in this step; say that you could not find it.")


def test_a_goal_that_only_asks_for_something_done_may_be_answered_done():
    assert check_answer(
        "Done.", goal="Commit the fix with the message 'typo'", observations=["[main 1a2b3c] typo"]
    ).supported
    assert not check_answer("Done.", goal="Which files changed in the last commit?", observations=["a.py"]).supported
    assert asks_question("List the customers in Leeds.") and not asks_question("Summarise notes.txt into out.md")
