"""Which coroutine runs each tool, by the tool's name: the one place a tool is registered.

What a tool *is* (name, description, argument model, risk) is in the catalogue,
``agents/tools.py``, which workflow code reads. How it runs is a module in this package with an
``execute(args, ctx)`` coroutine (see ``activities/tools/context.py``). A new tool is a spec there,
a module here, and one line below; the dispatcher needs no edit.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from stakeflow.activities.tools import calculator, http_get, read_file, sql_query, write_file
from stakeflow.activities.tools.context import ToolExecutor

EXECUTORS: Mapping[str, ToolExecutor] = MappingProxyType(
    {
        "calculator": calculator.execute,
        "http_get": http_get.execute,
        "read_file": read_file.execute,
        "sql_query": sql_query.execute,
        "write_file": write_file.execute,
    }
)
