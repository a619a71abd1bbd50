"""The tool catalogue: what each tool is, what it takes, how risky it is.

Pure data, importable from workflow code. Execution lives in ``activities/tools.py``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stakeflow.agents.claims import writes_expression
from stakeflow.agents.types import Risk, ToolSpecView


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HttpGetArgs(_Args):
    url: str = Field(description="An http(s) URL to fetch.")


class SqlQueryArgs(_Args):
    query: str = Field(
        description="One read-only DuckDB SELECT. Workspace files are tables by file name, "
        "e.g. SELECT * FROM 'sales.csv'."
    )


class ReadFileArgs(_Args):
    path: str = Field(description="A path relative to the workspace folder, e.g. notes.txt.")


class WriteFileArgs(_Args):
    path: str = Field(description="A path relative to the workspace folder.")
    content: str = Field(description="The full text to write.")
    append: bool = Field(default=False, description="Append instead of replacing the file.")


# Grammar-constrained decoders (llama.cpp, vLLM) enforce a JSON schema's pattern: a small model can then only
# write arithmetic here, never an empty string or a sentence. Only in the schema models see: the calculator
# itself refuses anything else with its own message.
ARITHMETIC = r"^[-+( ]*[0-9]([0-9.+*/%() _-]*[0-9)%])?$"


class CalculatorArgs(_Args):
    expression: str = Field(
        description="Arithmetic only: numbers, + - * / // % **, parentheses, e.g. (3+4)*2.",
        json_schema_extra={"pattern": ARITHMETIC, "minLength": 1},
    )


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its name, what it does, its argument model and risk.

    ``local`` tools are fast, side-effect free and touch only this machine, so the workflow
    may run them as local activities.
    """

    name: str
    description: str
    args_model: type[BaseModel]
    risk: Risk
    local: bool = False
    example: str = ""  # one example call's arguments, as JSON: models copy the form
    # Arguments that must name an existing workspace file: offered to the model as an enum of them.
    file_args: tuple[str, ...] = ()
    # Arguments that are a query over the workspace's files: held to its tables and columns for a small model.
    sql_args: tuple[str, ...] = ()
    # Arguments that are an arithmetic expression: held to the run's observed figures for a small model.
    arithmetic_args: tuple[str, ...] = ()
    # The workspace files this tool reads, by suffix ("*" = any file): a goal that names such a file
    # may start with this tool (see agents/prompts.py, first_step_tools).
    reads: tuple[str, ...] = ()
    open_world: bool = False  # reaches outside controlled infrastructure (private data must not go there)

    def view(self) -> ToolSpecView:
        """The tool as a run records it (see ToolSpecView)."""
        return ToolSpecView(
            name=self.name,
            description=self.description,
            example=self.example,
            risk=self.risk,
            args_schema=self.args_model.model_json_schema(),
            local=self.local,
            file_args=list(self.file_args),
            sql_args=list(self.sql_args),
            arithmetic_args=list(self.arithmetic_args),
            reads=list(self.reads),
            open_world=self.open_world,
            risk_from="built-in",
        )


CATALOGUE: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in [
        ToolSpec(
            "http_get",
            "Fetch a web page or API response over HTTP(S) and return its text.",
            HttpGetArgs,
            "read_only",
            example='{"url": "https://example.com/status.json"}',
            open_world=True,
        ),
        ToolSpec(
            "sql_query",
            "Run a read-only SQL query over the CSV and Parquet files in the workspace.",
            SqlQueryArgs,
            "read_only",
            local=True,
            example='{"query": "SELECT region, sum(units) AS units FROM \'sample-orders.csv\' GROUP BY region"}',
            sql_args=("query",),
            reads=(".csv", ".tsv", ".parquet", ".json", ".jsonl", ".ndjson"),
        ),
        ToolSpec(
            "read_file",
            "Read a text file from the workspace.",
            ReadFileArgs,
            "read_only",
            local=True,
            example='{"path": "<one of the workspace files>"}',
            file_args=("path",),
            reads=("*",),
        ),
        ToolSpec(
            "write_file",
            "Write (or append to) a text file in the workspace.",
            WriteFileArgs,
            "side_effect",
            example='{"path": "sample-summary.md", "content": "# Summary\\n..."}',
        ),
        ToolSpec(
            "calculator",
            "Evaluate an arithmetic expression exactly.",
            CalculatorArgs,
            "read_only",
            local=True,
            example='{"expression": "(1200 * 3 + 49) / 2"}',
            arithmetic_args=("expression",),
        ),
    ]
}


def constrained(view: ToolSpecView, workspace_paths: Sequence[str]) -> ToolSpecView:
    """``view`` with each of its ``file_args`` limited to an enum of ``workspace_paths`` (when known).

    The enum is what a grammar-constrained decoder (llama.cpp, vLLM structured output) enforces: a small model
    then cannot ask for a file that does not exist (SmolLM2 asked for "/report.txt" without it).
    """
    if not workspace_paths:
        return view
    return with_arg_keyword(view, view.file_args, "enum", list(workspace_paths))


def with_arg_keyword(view: ToolSpecView, args: Sequence[str], keyword: str, value: Any) -> ToolSpecView:
    """``view`` with the JSON-schema ``keyword`` set to ``value`` on each of ``args`` its schema has (a copy;
    ``view`` itself when there is none to set)."""
    if not args:
        return view
    schema = copy.deepcopy(view.args_schema)
    for arg in args:
        prop = schema.get("properties", {}).get(arg)
        if prop is not None:
            prop[keyword] = copy.deepcopy(value)
    return view.model_copy(update={"args_schema": schema})


def named_files(goal: str, workspace_paths: Sequence[str]) -> list[str]:
    """The workspace files the goal names, by path or (for files in folders) by file name."""
    found: list[str] = []
    for path in workspace_paths:
        for name in {path, path.rsplit("/", 1)[-1]}:
            # Not inside a longer name: "notes.txt." ends a sentence, "notes.txt.bak" is another file.
            if re.search(rf"(?<![\w./-]){re.escape(name)}(?![\w/-]|\.\w)", goal, flags=re.IGNORECASE):
                found.append(path)
                break
    return found


def first_step_tools(goal: str, workspace_paths: Sequence[str], tools: Sequence[ToolSpecView]) -> list[str]:
    """The tools a plan must start with: those (of ``tools``) that read a workspace file the goal names; for a goal
    that names no file but writes out an expression ("What is 17 * 23?"), the tools that compute one.

    A goal that names an existing file is about that file, so its plan starts by reading it. This is a
    constraint of the plan's JSON schema, which grammar-constrained decoding enforces: a small open model
    (SmolLM2-135M) otherwise plans a summary of notes.txt without ever reading it, or reads notes.txt to answer
    "What is 17 * 23?". The tools made for the named files' kind come first and alone; a tool that reads any
    file only when none is. Empty when the goal names no file and writes out no expression, or no tool does
    what it asks: then the plan is unconstrained.
    """
    files = named_files(goal, workspace_paths)
    if not files:
        return [t.name for t in tools if t.arithmetic_args] if writes_expression(goal) else []
    # A tool made for a file's kind (sql_query for a CSV) beats one that reads anything as text (read_file): a
    # table read as text leaves the sums and counts to the model, which a small one gets wrong.
    specific = [t.name for t in tools if any(f.lower().endswith(tuple(s for s in t.reads if s != "*")) for f in files)]
    return specific or [t.name for t in tools if "*" in t.reads]
