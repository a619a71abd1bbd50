"""Which tools a plan must start with when the goal names workspace files (agents/tools.py, first_step_tools)."""

from __future__ import annotations

from stakeflow.agents.tools import CATALOGUE, first_step_tools, named_files

VIEWS = [CATALOGUE[name].view() for name in ("read_file", "sql_query", "calculator", "write_file")]
PATHS = ["notes.txt", "sales.csv", "data/regions.csv"]


def test_a_table_starts_with_the_tool_made_for_it():
    # read_file would hand a small model the CSV as text, and leave the sums to it.
    assert first_step_tools("How many units were sold in sales.csv?", PATHS, VIEWS) == ["sql_query"]


def test_a_text_file_starts_with_the_tool_that_reads_anything():
    assert first_step_tools("Summarise notes.txt", PATHS, VIEWS) == ["read_file"]


def test_no_named_file_no_constraint():
    assert first_step_tools("What is 2 + 2?", PATHS, VIEWS) == []
    assert first_step_tools("Summarise notes.txt", PATHS, [CATALOGUE["calculator"].view()]) == []


def test_files_are_named_by_path_or_by_name():
    assert named_files("Compare regions.csv with notes.txt", PATHS) == ["notes.txt", "data/regions.csv"]
    assert named_files("Is there a notes.txt.bak?", PATHS) == []
