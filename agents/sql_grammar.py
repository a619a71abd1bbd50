"""SQL over the workspace's real tables and columns, as a pattern a grammar-constrained decoder enforces.

A small open model (SmolLM2-135M) given ``sql_query`` writes JSON inside its SQL (``syntax error at or near
"{"``), copies a worked example's file and columns (``sample-orders.csv``, ``target_usd`` of another table) or
sends nothing at all. The same model constrained by a grammar can only write a query the workspace can answer
in form: ``SELECT`` items over the workspace's columns, aggregates and arithmetic, ``FROM`` one of its files
(``JOIN``s with ``ON`` or ``USING``), ``WHERE`` conditions (comparisons, ``LIKE``, ``IN`` a list or a one-level
subquery), ``GROUP BY``, ``HAVING``, ``ORDER BY``, ``LIMIT``. The pattern goes into the argument's JSON
schema (``pattern``), which llama.cpp's and vLLM's structured output compile into the grammar they sample
under; a provider that does not enforce it just reads a longer schema.

What the pattern cannot hold — CTEs, ``CASE``, window functions, functions outside a common set, subqueries
beyond ``IN (SELECT col FROM file)`` — is why it is for small models only ([policy] sql_grammar: "auto"
applies it to the embedded model). It does not count parentheses (a regular language cannot): DuckDB's parse
error goes to the next round. It repeats with ``*``, ``+`` and ``?`` only: llama.cpp refuses a grammar whose
bounded repetitions (``{0,60}``) multiply, and its server dies of it (tests/test_sql_grammar.py runs the real
one). Deterministic: built from the run's input in workflow code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from stakeflow.agents.tools import with_arg_keyword
from stakeflow.agents.types import ToolSpecView

# Past this many characters a pattern is not worth compiling into every step's grammar: no constraint then.
MAX_PATTERN_CHARS = 24_000
# A number's digits and decimals, at most: written as optional atoms one after another (never a bounded repetition,
# see the module docstring), so a model cannot write a number without end: SmolLM2 wrote digits until its output
# limit cut the JSON, twice, and the run failed (bench/tasks.py). A string literal is not bounded: its characters
# written so would be repeated wherever a term is, and the pattern would pass MAX_PATTERN_CHARS.
MAX_DIGITS = 15
MAX_DECIMALS = 6
_INTEGER = "[0-9]" + "[0-9]?" * (MAX_DIGITS - 1)

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FUNCTIONS = [
    "sum",
    "avg",
    "count",
    "min",
    "max",
    "round",
    "abs",
    "any_value",
    "coalesce",
    "lower",
    "upper",
    "length",
    "trim",
    "year",
    "month",
    "day",
    "monthname",
]


def _alternatives(words: list[str]) -> str:
    return "(" + "|".join(words) + ")"


def _literal(path: str) -> str:
    """``path`` as a pattern that matches it alone: the characters a pattern gives a meaning to, as a class."""
    return "".join(f"[{c}]" if c in ".()+" else c for c in path)


def sql_pattern(tables: Mapping[str, list[str]]) -> str | None:
    """A regular expression (``^...$``, the JSON-schema subset llama.cpp converts) for a query over ``tables``:
    file path -> column names. None when there is nothing to constrain to, a name cannot be written plainly
    (a column that needs quoting, a path with a quote), or the pattern would be too long."""
    files = [path for path in tables if tables[path] and re.fullmatch(r"[\w ./()+-]+", path)]
    columns = sorted({c for path in files for c in tables[path]})
    if not files or not columns or not all(_IDENT.fullmatch(c) for c in columns):
        return None
    column = "([a-z][a-z]?[.])?" + _alternatives(columns)  # an optional table alias: o.kg
    table = "'" + _alternatives([_literal(p) for p in files]) + "'"
    alias = "( (AS )?[a-z][a-z]?)?"
    number = f"-?{_INTEGER}([.][0-9]{'[0-9]?' * (MAX_DECIMALS - 1)})?"
    text = "'[^'\\\\\\n]*'"
    # A term: up to two functions around a column, number or string (round(sum(units), 2)). The pattern does not
    # count parentheses (a regular language cannot): it keeps a small model to real names and SQL's shape, and
    # DuckDB's parser, whose error the next round sees, does the rest.
    term = f"({_alternatives(_FUNCTIONS)}[(])*(DISTINCT )?({column}|{number}|{text}|[*])([)]|, ?{_INTEGER}[)])*"
    expr = f"{term}( ?[-+*/] ?{term})*"
    item = f"{expr}( AS [a-z_]+)?"
    subquery = f"[(]SELECT {column} FROM {table}[)]"
    condition = (
        f"(NOT )?{expr}( ?(=|<>|!=|<=|>=|<|>) ?{expr}| (NOT )?(LIKE|ILIKE) {text}| IS (NOT )?NULL"
        f"| (NOT )?IN ([(]{text}(, ?{text})*[)]|{subquery}))"
    )
    conditions = f"{condition}( (AND|OR) {condition})*"
    join = f" ((INNER|LEFT) )?JOIN {table}{alias}( ON {column} ?= ?{column}| USING [(]{column}[)])"
    order = f"{expr}( (ASC|DESC))?"
    pattern = (
        f"^SELECT (DISTINCT )?([*]|{item}(, ?{item})*) FROM {table}{alias}({join})*"
        f"( WHERE {conditions})?( GROUP BY {expr}(, ?{expr})*)?( HAVING {conditions})?"
        f"( ORDER BY {order}(, ?{order})*)?( LIMIT {_INTEGER})?$"
    )
    return pattern if len(pattern) <= MAX_PATTERN_CHARS else None


def sql_constrained(view: ToolSpecView, tables: Mapping[str, list[str]]) -> ToolSpecView:
    """``view`` with each of its ``sql_args`` held to :func:`sql_pattern` (unchanged when there is none)."""
    pattern = sql_pattern(tables) if view.sql_args else None
    return view if pattern is None else with_arg_keyword(view, view.sql_args, "pattern", pattern)
