"""The tool catalogue: what each tool is, what it takes, how risky it is.

Pure data, importable from workflow code. Execution lives in ``activities/tools.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from agents.types import Risk, ToolSpecView


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


class CalculatorArgs(_Args):
    expression: str = Field(description="Arithmetic only: numbers, + - * / // % **, parentheses, e.g. (3+4)*2.")


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


    def view(self) -> ToolSpecView:
        return ToolSpecView(
            name=self.name,
            description=self.description,
            example=self.example,
            risk=self.risk,
            args_schema=self.args_model.model_json_schema(),
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
        ),
        ToolSpec(
            "sql_query",
            "Run a read-only SQL query over the CSV and Parquet files in the workspace.",
            SqlQueryArgs,
            "read_only",
            local=True,
            example="{\"query\": \"SELECT region, sum(units) AS units FROM 'orders.csv' GROUP BY region\"}",
        ),
        ToolSpec(
            "read_file",
            "Read a text file from the workspace.",
            ReadFileArgs,
            "read_only",
            local=True,
            example='{"path": "report.txt"}',
        ),
        ToolSpec(
            "write_file",
            "Write (or append to) a text file in the workspace.",
            WriteFileArgs,
            "side_effect",
            example='{"path": "summary.md", "content": "# Summary\\n..."}',
        ),
        ToolSpec(
            "calculator",
            "Evaluate an arithmetic expression exactly.",
            CalculatorArgs,
            "read_only",
            local=True,
            example='{"expression": "(1200 * 3 + 49) / 2"}',
        ),
    ]
}
