"""The floors of the house and what each may import (README, "Layout"), checked on every module of the package.

Every ``import`` and ``from ... import`` counts, wherever it stands: at the top, inside a function, under
``TYPE_CHECKING`` or ``workflow.unsafe.imports_passed_through()``. An import hidden in a function is still a
dependency; hiding one to dodge a cycle is what these rules exist to stop.

Imports are read with ``tokenize``, not ``ast.parse``: CPython 3.11.7's AST constructor is not safe while other
threads run Python code (DESIGN.md), and workers from earlier tests may. Tokens also keep strings apart, so an
import written in a docstring's example is not one.

The rules are checked against a list of edges that break them (the ones issue 23 found in the code), so a rule
that stopped matching anything would fail here too, not pass silently.
"""

from __future__ import annotations

import io
import os
import tokenize
from collections.abc import Iterable
from pathlib import Path

from tests.support import REPO

PACKAGE = REPO / "stakeflow"
MAX_LINES = 450

# Floor -> the modules on it (a module is on the floor of the longest prefix that names it or a package above it).
FLOORS: dict[str, tuple[str, ...]] = {
    "contracts": ("stakeflow.core",),
    "agents": ("stakeflow.agents", "stakeflow.tool"),
    "workflows": ("stakeflow.workflows", "stakeflow.workflow"),
    "config": ("stakeflow.config",),
    "libraries": (
        "stakeflow.temporal",
        "stakeflow.traces",
        "stakeflow.prices",
        "stakeflow.stores",
        "stakeflow.endpoints",
        "stakeflow.local",
    ),
    "activities": ("stakeflow.activities",),
    "workers": ("stakeflow.workers",),
    "services": ("stakeflow.services",),
    "client": ("stakeflow.client",),
    "entry points": ("stakeflow.cli", "stakeflow.webhooks", "stakeflow.codec_server", "stakeflow.__main__"),
}
_BELOW_ACTIVITIES = {"contracts", "agents", "config", "libraries"}
MAY_IMPORT: dict[str, set[str]] = {
    "contracts": {"contracts"},
    "agents": {"contracts", "agents"},
    "workflows": {"contracts", "agents", "workflows"},
    "config": {"contracts", "agents", "config"},
    "libraries": {"contracts", "agents", "config", "libraries"},
    "activities": _BELOW_ACTIVITIES | {"activities"},
    "workers": _BELOW_ACTIVITIES | {"activities", "workflows", "workers"},
    "services": _BELOW_ACTIVITIES | {"services"},
    "client": _BELOW_ACTIVITIES | {"services", "client"},
    "entry points": set(FLOORS) | {"front door"},
    # The package itself: its version, and the client, loaded when `from stakeflow import Client` asks for it.
    "front door": {"contracts", "client"},
}

# --- reading imports ------------------------------------------------------------------------------------------


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name, through the links to agents/, activities/, workflows/, workers/."""
    found: dict[str, Path] = {}
    for root, dirs, files in os.walk(PACKAGE, followlinks=True):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if not name.endswith(".py"):
                continue
            parts = Path(root, name).relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = Path(root, name)
    return found


def imported_names(source: str, package: str) -> list[tuple[str, list[str]]]:
    """(module, names) per import statement in ``source``: ``import a.b`` is ("a.b", []), ``from a import b, c``
    is ("a", ["b", "c"]). ``package`` resolves relative imports."""
    found: list[tuple[str, list[str]]] = []
    line: list[tokenize.TokenInfo] = []
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in skip:
            continue
        if tok.type not in (tokenize.NEWLINE, tokenize.ENDMARKER):
            line.append(tok)
            continue
        # A statement starts the logical line, or follows ":" (`if TYPE_CHECKING: import x`) or ";".
        for i, t in enumerate(line):
            starts = i == 0 or (line[i - 1].type == tokenize.OP and line[i - 1].string in (":", ";"))
            if starts and t.type == tokenize.NAME and t.string in ("import", "from"):
                found += _statement(line[i:], package)
        line = []
    return found


def _statement(tokens: list[tokenize.TokenInfo], package: str) -> list[tuple[str, list[str]]]:
    """One ``import``/``from`` statement's tokens (up to a ``;``) as (module, names)."""
    words = []
    for t in tokens:
        if t.type == tokenize.OP and t.string == ";":
            break
        if not (t.type == tokenize.OP and t.string in "()"):
            words.append(t.string)
    at = words.index("import")
    parts: list[list[str]] = [[]]
    for w in words[at + 1 :]:
        parts.append([]) if w == "," else parts[-1].append(w)
    # Each part is `a . b as c`: the dotted name is what comes before `as`.
    dotted = ["".join(p[: p.index("as")] if "as" in p else p) for p in parts if p]
    if words[0] == "import":
        return [(name, []) for name in dotted]
    head = "".join(words[1:at])
    if head.startswith("."):  # relative: resolved against the importing module's package
        dots = len(head) - len(head.lstrip("."))
        base = package.rsplit(".", dots - 1)[0] if dots > 1 else package
        head = ".".join(p for p in (base, head.lstrip(".")) if p)
    return [(head, dotted)]


def edges(known: dict[str, Path]) -> set[tuple[str, str]]:
    """(importer, imported) for every import of one project module by another."""
    found: set[tuple[str, str]] = set()
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for module, names in imported_names(path.read_text(), package):
            targets = [f"{module}.{n}" if f"{module}.{n}" in known else module for n in names] or [module]
            found |= {(name, t) for t in targets if t in known and t != name}
    return found


# --- the rules --------------------------------------------------------------------------------------------------


def floor_of(module: str) -> str | None:
    if module == "stakeflow":
        return "front door"  # the package itself: its version, and the client (lazily)
    best = ("", None)
    for floor, prefixes in FLOORS.items():
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > len(best[0]):
                best = (p, floor)
    return best[1]


def broken_rules(pairs: Iterable[tuple[str, str]]) -> list[str]:
    """What each import breaks: a floor it may not import, or a private module outside its package."""
    broken = []
    for importer, imported in sorted(pairs):
        mine, theirs = floor_of(importer), floor_of(imported)
        if mine is None or theirs is None:
            broken.append(f"{importer} -> {imported}: a module on no floor (add it to FLOORS and the README)")
        elif theirs not in MAY_IMPORT[mine]:
            allowed = ", ".join(sorted(MAY_IMPORT[mine]))
            broken.append(f"{importer} ({mine}) -> {imported} ({theirs}): {mine} may import only {allowed}")
        parts = imported.split(".")
        for i, part in enumerate(parts):
            owner = ".".join(parts[:i])
            inside = importer == owner or importer.startswith(owner + ".")
            if part.startswith("_") and not part.startswith("__") and not inside:
                broken.append(f"{importer} -> {imported}: {part} is private to {owner}: import from {owner}")
                break
    return broken


def cycles(pairs: Iterable[tuple[str, str]]) -> list[list[str]]:
    """The import cycles: each strongly connected group of more than one module (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for a, b in pairs:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


# --- the package ------------------------------------------------------------------------------------------------


def test_every_module_is_on_a_floor():
    lost = [m for m in modules() if floor_of(m) is None]
    assert not lost, "put each module on a floor (FLOORS here, README 'Layout'): " + ", ".join(lost)


def test_no_module_imports_above_its_floor_or_a_private_module_of_another_package():
    broken = broken_rules(edges(modules()))
    assert not broken, "README 'Layout' says what may import what:\n" + "\n".join(broken)


def test_no_import_cycles():
    found = cycles(edges(modules()))
    assert not found, "import cycles (move the shared code down a floor):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_every_module_is_under_450_lines():
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules (STYLE.md: at most {MAX_LINES} lines): {long}"


# --- the rules can fail -----------------------------------------------------------------------------------------

# The imports issue 23 found, as they would read on today's floors, and a private module and a cycle besides.
KNOWN_BAD = [
    ("stakeflow.core.billing", "stakeflow.agents.types"),  # the contracts importing a floor above them
    ("stakeflow.services.evals", "stakeflow.activities.evals"),  # a service importing an activity
    ("stakeflow.services.listing", "stakeflow.activities.mcp.toolbox"),
    ("stakeflow.workflows.agent_task", "stakeflow.temporal.codec"),  # a workflow importing a library
    ("stakeflow.activities.evals", "stakeflow.workflows.shadow"),  # an activity importing a workflow
    ("stakeflow.config._settings", "stakeflow.webhooks.app"),  # config importing an entry point
    ("stakeflow.config._settings", "stakeflow.services.runs"),  # config importing a service
    ("stakeflow.activities.learn", "stakeflow.services.learn"),  # an activity calling a service
    ("stakeflow.traces._store", "stakeflow.activities.capture"),  # a library importing an activity
    ("stakeflow.temporal.plugin", "stakeflow.workers.main"),  # a library importing a worker
    ("stakeflow.services.doctor", "stakeflow.workers.main"),  # a service importing a worker
    ("stakeflow.services.doctor", "stakeflow.cli.common"),  # a service importing an entry point
    ("stakeflow.agents.policy", "stakeflow.config._settings"),  # an agent reading settings
    ("stakeflow.activities.capture", "stakeflow.traces._records"),  # a private module from outside its package
    ("stakeflow.newthing", "stakeflow.core.errors"),  # a module on no floor
    ("stakeflow", "stakeflow.services.runs"),  # the front door past the client
    ("stakeflow", "stakeflow.cli"),
    ("stakeflow.client._client", "stakeflow.cli.common"),  # the client importing an entry point
    ("stakeflow.services.runs._start", "stakeflow.client"),  # a service importing the client
    ("stakeflow.workflow", "stakeflow.client._preparation"),  # workflow code importing the client's activity
    ("stakeflow.core.contracts", "stakeflow"),  # anything but an entry point importing the front door
]


def test_the_rules_catch_every_known_bad_import():
    missed = [edge for edge in KNOWN_BAD if not broken_rules([edge])]
    assert not missed, f"the rules no longer catch: {missed}"


def test_the_rules_allow_what_the_layout_allows():
    fine = [
        ("stakeflow.workflows.agent_task", "stakeflow.agents.policy"),
        ("stakeflow.activities.models", "stakeflow.prices"),
        ("stakeflow.services.runs._start", "stakeflow.stores.promotions"),
        ("stakeflow.cli.listing", "stakeflow.activities.mcp.toolbox"),
        ("stakeflow.traces._store", "stakeflow.traces._records"),
        ("stakeflow.config._settings", "stakeflow.config._hooks"),
        ("stakeflow", "stakeflow.client"),
        ("stakeflow.client._client", "stakeflow.services.runs"),
        ("stakeflow.client._preparation", "stakeflow.temporal.plugin"),
        ("stakeflow.cli.runs", "stakeflow.client"),
        ("stakeflow.workflow", "stakeflow.agents.types"),
    ]
    assert broken_rules(fine) == []


def test_cycles_are_found_through_any_number_of_modules():
    assert cycles([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]) == [["a", "b", "c"]]
    assert cycles([("a", "b"), ("b", "c")]) == []


def test_imports_are_read_wherever_they_stand_and_never_from_strings():
    source = '''"""Example: from stakeflow.tasks import start_run"""
import stakeflow.core.errors as errors, json
from stakeflow.agents.types import (
    Plan,  # a comment
    Usage as U,
)
if TYPE_CHECKING: from stakeflow.config import Settings

def f():
    from stakeflow.services import runs; import stakeflow.local
    text = "import stakeflow.cli"
    yield from g()
with workflow.unsafe.imports_passed_through():
    from . import sibling
    from ..core import contracts
'''
    assert imported_names(source, "stakeflow.workflows") == [
        ("stakeflow.core.errors", []),
        ("json", []),
        ("stakeflow.agents.types", ["Plan", "Usage"]),
        ("stakeflow.config", ["Settings"]),
        ("stakeflow.services", ["runs"]),
        ("stakeflow.local", []),
        ("stakeflow.workflows", ["sibling"]),
        ("stakeflow.core", ["contracts"]),
    ]


def test_each_literal_type_is_defined_once():
    """A set of values (``Risk``'s, say) typed out in two places drifts apart: one definition, imported."""
    seen: dict[frozenset[str], list[str]] = {}
    for name, path in modules().items():
        for line in path.read_text().splitlines():
            alias, sep, rest = line.partition(" = Literal[")
            if sep and alias.isidentifier() and rest.endswith("]"):
                values = frozenset(v.strip().strip("'\"") for v in rest[:-1].split(","))
                seen.setdefault(values, []).append(f"{name}.{alias}")
    twice = [places for places in seen.values() if len(places) > 1]
    assert not twice, f"define each once and import it: {twice}"
