"""The tools: the ``run_tool`` activity and the tools it runs, one module each.

- ``dispatcher``: ``ToolActivities.run_tool``, what every call shares (validation against the
  catalogue, the ``execute_tool`` span, timing, the output cap);
- ``registry``: tool name -> executor, where a new tool is registered;
- ``context``: what an executor is given (``ToolContext``) and its shape (``ToolExecutor``);
- one module per tool: ``calculator``, ``http_get``, ``read_file``, ``sql_query``, ``write_file``;
- what several tools share: ``workspace`` (confinement to the run's folder), ``ledger`` (the
  idempotency ledger, kept in the workspace; atomic writes) and ``file_lock`` (one writer at a time
  per workspace file, across processes and hosts).
"""

from stakeflow.activities.tools.calculator import calculate
from stakeflow.activities.tools.context import ToolContext, ToolExecutor
from stakeflow.activities.tools.dispatcher import MAX_OUTPUT_CHARS, ToolActivities
from stakeflow.activities.tools.registry import EXECUTORS

__all__ = ["EXECUTORS", "MAX_OUTPUT_CHARS", "ToolActivities", "ToolContext", "ToolExecutor", "calculate"]
