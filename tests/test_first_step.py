"""Which tools a plan must start with when the goal names workspace files or writes out an expression
(agents/tools.py, first_step_tools)."""

from __future__ import annotations

from stakeflow.agents.tools import CATALOGUE, first_step_tools, named_files

VIEWS = [CATALOGUE[name].view() for name in ("read_file", "sql_query", "calculator", "write_file")]
PATHS = ["notes.txt", "sales.csv", "data/regions.csv"]


def test_a_table_starts_with_the_tool_made_for_it():
    # read_file would hand a small model the CSV as text, and leave the sums to it.
    assert first_step_tools("How many units were sold in sales.csv?", PATHS, VIEWS) == ["sql_query"]


def test_a_text_file_starts_with_the_tool_that_reads_anything():
    assert first_step_tools("Summarise notes.txt", PATHS, VIEWS) == ["read_file"]


def test_a_written_out_expression_starts_with_the_tool_that_computes():
    # SmolLM2 planned "What is 17 * 23?" as reading notes.txt, then summarising it.
    for goal in (
        "What is 17 * 23?",
        "Compute 15% of 2,460",
        "What is 7,200 divided by 16?",
        "Divide 7,200 by 16.",
        "What is 100 - 90?",
    ):
        assert first_step_tools(goal, PATHS, VIEWS) == ["calculator"], goal
    # A file the goal names comes first: its figures must be read before anything is computed with them.
    assert first_step_tools("What is 10% of the units in sales.csv?", PATHS, VIEWS) == ["sql_query"]


def test_no_named_file_and_no_expression_no_constraint():
    for goal in ("How many seconds are in 3 days?", "Which orders were placed on 2024-03-11?", "Compare Q3-Q2"):
        assert first_step_tools(goal, PATHS, VIEWS) == [], goal
    assert first_step_tools("What is 2 + 2?", PATHS, [CATALOGUE["read_file"].view()]) == []  # no tool computes
    assert first_step_tools("Summarise notes.txt", PATHS, [CATALOGUE["calculator"].view()]) == []


def test_files_are_named_by_path_or_by_name():
    assert named_files("Compare regions.csv with notes.txt", PATHS) == ["notes.txt", "data/regions.csv"]
    assert named_files("Is there a notes.txt.bak?", PATHS) == []
