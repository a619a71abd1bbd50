"""The task suite of bench/tasks.py as data (bench/tasks.toml), and its grader.

Grading is deterministic, from the answer's text plus what the run itself reported (its status, and
``answer_supported`` when the run has that field), so the same answers always get the same marks and a
model is never the judge. Four outcomes:

- ``right``: the answer is correct and the run did not flag it;
- ``flagged``: the run told the user not to rely on it: ``answer_supported`` is false, or the answer
  itself declines ("I could not find ...") instead of giving a figure. A correct answer that the run
  flagged counts here too (noted ``right but flagged``): a warning that makes a user discard a right
  answer is not a right answer delivered;
- ``wrong``: wrong and unflagged, a confident wrong answer: the outcome that matters most;
- ``failed``: no answer (the run failed, timed out, or the anchor's loop ended without one).

How an answer is read:

- figures: ``16,330`` = ``16330`` = ``16330.0``, ``$``/``£``/``%`` dropped, number words (``two``) count;
  ISO dates are removed first, digits glued to letters (``Q3``) are not figures, and a year (1900-2099) is
  not a figure unless the expected figure is one. A numeric answer is right when its **first or last**
  figure, leaving out those the goal itself contains, is the expected one (within the tolerance; the sign
  is ignored, "-835" and "short by 835" alike): "The total is 16,330" and "588 + ... = 16,330" are right,
  an answer that dumps the file's rows is not, even when the figure is somewhere in it;
- a choice ("which region ...") is right when the answer names the expected candidate and no other
  candidate before it;
- keywords: every one must appear (case-insensitive), ``|`` separating alternatives;
- declining: a phrase such as "could not find", "does not exist", "no information", "failed" in the
  answer's **first sentence** (an answer that lists invented invoices and mentions an error further down
  has not declined). For a question the data cannot answer it is the right answer; for any other question
  it counts as flagged only when the answer also gives no figure (or no candidate) of its own.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTCOMES = ("right", "flagged", "wrong", "failed")

_NUMBER_WORDS = {
    w: n
    for n, w in enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
        + ["eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
        + ["twenty"]
    )
}
_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?\b")
# A figure: 16,330 / 16330.0 / .5, not glued to a letter or a dot before it (Q3, v1.2, file2.csv).
_FIGURE = re.compile(
    r"(?<![\w.])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?![\w])"
    r"|\b(" + "|".join(_NUMBER_WORDS) + r")\b",
    re.IGNORECASE,
)
_DECLINES = re.compile(
    r"could ?n[o']t|can ?n[o']t|cannot|unable to|not (?:able|possible) to|"
    r"(?:does|do|did) ?n[o']t (?:exist|contain|include|have|mention|say|know|show|give|provide)|"
    r"no (?:such|file|data|information|record|mention|column|details?)|"
    r"not (?:found|available|mentioned|provided|included|in the|listed|present|specified|known)|"
    r"is ?n[o']t (?:in|there|available|listed)|"
    r"there (?:is|are) no|missing|unknown|failed|error",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Task:
    """One question with a known answer (see bench/tasks.toml for the fields)."""

    name: str
    kind: str
    workspace: str  # the folder, relative to the repository
    tools: tuple[str, ...]
    goal: str
    number: float | None = None
    tolerance: float = 0.01
    percent: bool = False
    choice: str | None = None
    among: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    declines: bool = False
    check_sql: str | None = None
    check_text: tuple[str, str] | None = None
    check_expr: str | None = None
    check_absent: str | None = None

    def expected(self) -> str:
        """The expectation in a few words, for tables."""
        if self.number is not None:
            return f"{fmt(self.number)}{'%' if self.percent else ''}"
        if self.choice is not None:
            return self.choice
        if self.keywords:
            return " + ".join(self.keywords)
        return "declines"


@dataclass
class Grade:
    outcome: str  # one of OUTCOMES
    note: str = ""  # why, in a few words


@dataclass
class Suite:
    tasks: list[Task] = field(default_factory=list)
    workspaces: dict[str, str] = field(default_factory=dict)


def load_suite(path: Path) -> Suite:
    """The tasks of a TOML file like bench/tasks.toml; ValueError naming a malformed task."""
    data = tomllib.loads(path.read_text())
    workspaces = dict(data.get("workspaces", {}))
    tasks: list[Task] = []
    for raw in data.get("task", []):
        raw = dict(raw)
        name = raw.get("name", "?")
        if raw.get("workspace") not in workspaces:
            raise ValueError(f"task {name}: workspace {raw.get('workspace')!r} is not in [workspaces]")
        raw["workspace"] = workspaces[raw["workspace"]]
        for key in ("tools", "among", "keywords", "check_text"):
            if key in raw:
                raw[key] = tuple(raw[key])
        kinds = (
            sum(raw.get(k) is not None for k in ("number", "choice"))
            + bool(raw.get("keywords"))
            + bool(raw.get("declines"))
        )
        if kinds != 1:
            raise ValueError(f"task {name}: give exactly one of number, choice, keywords, declines")
        try:
            tasks.append(Task(**raw))
        except TypeError as e:
            raise ValueError(f"task {name}: {e}") from None
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError("task names must be unique")
    return Suite(tasks=tasks, workspaces=workspaces)


# --- reading an answer -----------------------------------------------------------------------------------


def figures(text: str, years: bool = False) -> list[float]:
    """The figures of ``text`` in order (see the module docstring); years dropped unless ``years``."""
    out: list[float] = []
    for m in _FIGURE.finditer(_DATE.sub(" ", text)):
        digits, word = m.group(1), m.group(2)
        if word:
            out.append(float(_NUMBER_WORDS[word.lower()]))
            continue
        value = float(digits.replace(",", ""))
        if not years and re.fullmatch(r"(19|20)\d\d", digits):
            continue
        out.append(value)
    return out


def fmt(x: float) -> str:
    """A figure as an answer would write it: 16330, 93.1, 1234567890 (never 1.23457e+09)."""
    return f"{x:.6f}".rstrip("0").rstrip(".")


def says_cannot(text: str) -> bool:
    """True when the answer's first sentence (at most 300 characters) says it cannot answer."""
    end = re.search(r"[.!?](?=\s|$)|\n", text)
    lead = text[: end.end() if end else len(text)][:300]
    return bool(_DECLINES.search(lead))


def _mentions(text: str, phrase: str) -> int:
    """Where ``phrase`` first appears as whole words in ``text`` (case-insensitive), or -1."""
    m = re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text, re.IGNORECASE)
    return m.start() if m else -1


def _close(a: float, b: float, tol: float) -> bool:
    return abs(abs(a) - abs(b)) <= tol + 1e-9


def judge(task: Task, answer: str) -> tuple[bool, bool, str]:
    """(correct, declined, note) for one answer, before any flag the run raised."""
    text = answer.strip()
    if not text:
        return False, False, "empty answer"
    cannot = says_cannot(text)
    if task.declines:
        return cannot, cannot, "declined" if cannot else "answered instead of declining"
    if task.number is not None:
        expected = task.number
        is_year = bool(re.fullmatch(r"(19|20)\d\d", fmt(expected)))
        goal = figures(task.goal, years=True)
        found = [f for f in figures(text, years=is_year) if not any(_close(f, g, 1e-9) for g in goal)]
        if not found:
            return False, cannot, "declined" if cannot else "no figure"
        targets = [expected, expected / 100] if task.percent else [expected]
        ends = {found[0], found[-1]}
        tol = task.tolerance
        ok = any(_close(f, t, tol if t == expected else tol / 100) for f in ends for t in targets)
        if ok:
            return True, False, ""
        elsewhere = any(_close(f, t, tol) for f in found for t in targets)
        return False, False, f"says {fmt(found[0])}" + (" (the right figure is buried in it)" if elsewhere else "")
    if task.choice is not None:
        where = {c: _mentions(text, c) for c in task.among}
        named = sorted((pos, c) for c, pos in where.items() if pos >= 0)
        if _mentions(text, task.choice) >= 0 and (not named or named[0][1].lower() == task.choice.lower()):
            return True, False, ""
        if not named:
            return False, cannot, "declined" if cannot else "names no candidate"
        return False, False, f"says {named[0][1]}"
    lowered = text.lower()
    missing = [k for k in task.keywords if not any(alt.lower() in lowered for alt in k.split("|"))]
    if not missing:
        return True, False, ""
    return False, cannot, "declined" if cannot else f"lacks {', '.join(missing)}"


def grade(task: Task, answer: str | None, completed: bool, supported: bool | None) -> Grade:
    """The outcome of one run: ``completed`` = it ended with an answer; ``supported`` = the run's own
    ``answer_supported`` (None when the run does not report one)."""
    if not completed or answer is None:
        return Grade("failed", "no answer")
    correct, declined, note = judge(task, answer)
    if supported is False:
        return Grade("flagged", "right but flagged" if correct else "flagged unsupported")
    if correct:
        return Grade("right", note)
    if declined:
        return Grade("flagged", note)
    return Grade("wrong", note)


# --- checking the expectations against the data ----------------------------------------------------------


def check(task: Task, repo: Path) -> str | None:
    """Recompute the task's expectation from its workspace; a sentence saying what is off, or None."""
    ws = repo / task.workspace
    if not ws.is_dir():
        return f"workspace {task.workspace} is missing"
    if task.check_absent is not None:
        return f"{task.check_absent} exists" if (ws / task.check_absent).exists() else None
    if task.check_text is not None:
        name, quote = task.check_text
        body = (ws / name).read_text()
        if quote not in body:
            return f"{name} does not contain {quote!r}"
        return _compare(task, quote, from_text=True)
    if task.check_expr is not None:
        from stakeflow.activities.tools import calculate

        return _compare(task, calculate(task.check_expr))
    if task.check_sql is not None:
        return _compare(task, _sql_value(ws, task.check_sql))
    return "no check: give check_sql, check_text, check_expr or check_absent"


def _sql_value(ws: Path, sql: str) -> Any:
    import os

    import duckdb

    here = os.getcwd()
    os.chdir(ws)  # the queries name files as the tools do, relative to the workspace
    try:
        rows = duckdb.connect(":memory:").sql(sql).fetchall()
    finally:
        os.chdir(here)
    if len(rows) != 1 or len(rows[0]) != 1:
        raise ValueError(f"check_sql must give one value, gave {rows!r}: {sql}")
    return rows[0][0]


def _compare(task: Task, value: Any, from_text: bool = False) -> str | None:
    text = str(value)
    if task.declines:
        return None if value == 0 else f"the data may answer it: the check gave {value!r}"
    if task.number is not None:
        got = figures(text, years=True) if from_text else [float(value) if not isinstance(value, str) else float(text)]
        if any(_close(g, task.number, 1e-6) for g in got):
            return None
        return f"expected {fmt(task.number)}, the data gives {text!r}"
    wanted = [task.choice] if task.choice is not None else [k.split("|")[0] for k in task.keywords]
    if from_text:  # keywords of a text fact are the writer's summary: the quote is the evidence
        return None
    missing = [w for w in wanted if w is not None and w.lower() not in text.lower()]
    return f"expected {', '.join(missing)}, the data gives {text!r}" if missing else None
