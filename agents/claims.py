"""Is an answer supported by what the run observed? The figures and quotations an answer gives, checked against
the goal and the tools' outputs.

A confident wrong answer is the worst outcome an agent has: a small model reads a CSV and writes a total
it never computed, and nothing tells the reader. So before a run reports its answer, every **number** in it
must appear in something the run observed — a tool's output (the calculator's and SQL's results are tool
outputs) or the goal itself — and every **quotation** must appear in a tool's output. Model-written notes
and error messages are not observations.

Numbers are compared as values, not strings: ``16,330`` = ``16330`` = ``16330.0`` = ``$16,330.00``; an answer
may round an observed value to the precision it writes (``0.1234`` supports ``0.12`` and ``12.34%``), and a
percentage may stand for its fraction (``12%`` and ``0.12``). What is not checked: words for numbers
("two"), numbers inside names (``Q3``, ``SmolLM2``), list markers (``1.`` at the start of a line), and the
meaning of a sentence — a figure copied from the wrong row passes. It is a floor, not a proof.

Pure and deterministic; the workflow runs it as an activity (``check_answer``) so a later release can refine
it without changing how recorded runs replay.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal

from pydantic import BaseModel, Field

# A number as people write it: optional sign, digits with thousands separators or plain, optional decimals,
# optional scale word or suffix; not glued to letters on either side (Q3, 3D, v2, SmolLM2 are names).
_NUMBER = re.compile(
    r"""
    (?<![\w.])                                  # not inside a word or after a dot (version strings, 1.2.3)
    (?P<sign>[-−])?
    (?P<currency>[$€£])?
    (?P<int>\d{1,3}(?:,\d{3})+|\d+)
    (?P<frac>\.\d+)?
    (?!\.\d)                                    # 1.2.3: not a number
    (?P<scale>\s?(?:%|percent\b|k\b|K\b|thousand\b|M\b|million\b|bn\b|billion\b))?
    (?![\w])
    """,
    re.VERBOSE,
)
_LIST_MARKER = re.compile(r"^\s*\d+[.)]\s", re.M)
_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?\b")
_QUOTE = re.compile(r"\"([^\"\n]{12,300})\"|“([^”\n]{12,300})”")
_SCALES = {
    "%": Decimal("0.01"),
    "percent": Decimal("0.01"),
    "k": Decimal(1000),
    "thousand": Decimal(1000),
    "million": Decimal(1_000_000),
    "bn": Decimal(1_000_000_000),
    "billion": Decimal(1_000_000_000),
}


class Observation(BaseModel):
    """Something the run observed: a tool's successful output (as the run kept it), or a workspace file's name
    (``tool`` empty)."""

    tool: str = ""
    text: str = ""


class AnswerCheckRequest(BaseModel):
    """Input of the ``check_answer`` activity: the answer, the goal, and what the run observed, in order."""

    answer: str = ""
    goal: str = ""
    observations: list[Observation] = Field(default_factory=list)


class AnswerCheck(BaseModel):
    """The verdict on one answer: supported, or the claims nothing the run observed supports."""

    supported: bool = True
    unsupported_claims: list[str] = Field(default_factory=list)
    checked_numbers: int = 0  # how many figures the answer gives (0: nothing to check)


class Figure(BaseModel):
    """One number as written: its text, and each value it may stand for with the precision it is written to
    (decimal places; negative for "16.3k", written to the hundred). A percentage stands for itself and for its
    fraction: outputs write 12 in a column of percentages, or 0.12."""

    text: str
    values: list[tuple[Decimal, int]]


def figures(text: str) -> list[Figure]:
    """The numbers in ``text``, as values (see the module docstring for what counts)."""
    text = _DATE.sub(lambda m: " ".join(re.split(r"[-T :]", m.group(0))), text)
    found: list[Figure] = []
    for m in _NUMBER.finditer(text):
        frac = m.group("frac") or ""
        value = Decimal(m.group("int").replace(",", "") + frac)
        if m.group("sign"):
            value = -value
        decimals = max(0, len(frac) - 1)
        values = [(value, decimals)]
        scale = (m.group("scale") or "").strip()
        if scale:
            factor = _SCALES.get(scale.lower()) or _SCALES[scale]
            scaled = (value * factor, decimals - factor.adjusted())
            values = [values[0], scaled] if factor < 1 else [scaled]
        found.append(Figure(text=m.group(0).strip(), values=values))
    return found


def answer_figures(answer: str) -> list[Figure]:
    """The numbers an answer gives, without its list markers ("1. ", "2) ")."""
    return figures(_LIST_MARKER.sub(lambda m: " " * len(m.group(0)), answer))


def _supports(observed: set[Decimal], figure: Figure) -> bool:
    for value, decimals in figure.values:
        if value in observed:
            return True
        if decimals > 12:
            continue
        # The answer may round what it saw to the precision it writes: 16329.6 supports 16,330.
        quantum = Decimal(1).scaleb(-decimals)
        if any(abs(seen) < Decimal("1e15") and seen.quantize(quantum) == value for seen in observed):
            return True
    return False


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


CALCULATOR = "calculator"
# Operands an expression may use without having observed them: halves to twelfths, percent and per-mille.
_CONSTANTS: set[Decimal] = {Decimal(n) for n in (*range(13), 100, 1000)}


def check_answer(answer: str, *, goal: str, observations: Iterable[Observation | str]) -> AnswerCheck:
    """Whether every figure and quotation in ``answer`` is backed by the goal or by one of ``observations``.

    A calculator's output (``expression = value``) backs its value only when every figure of its expression
    is itself backed — by the goal, another tool's output, an earlier such value, or a small constant (0 to
    12, 100, 1000: halves, months, percentages): a product of a figure a worked example put in the plan, not
    the user, supports nothing.
    """
    seen = [o if isinstance(o, Observation) else Observation(text=o) for o in observations]
    observed: set[Decimal] = {value for figure in figures(goal) for value, _ in figure.values}
    computed = [o for o in seen if o.tool == CALCULATOR and " = " in o.text]
    for o in seen:
        if o not in computed:
            observed.update(value for figure in figures(o.text) for value, _ in figure.values)
    for o in computed:
        expression, _, value = o.text.rpartition(" = ")
        if all(_supports(observed | _CONSTANTS, operand) for operand in figures(expression)):
            observed.update(v for figure in figures(value) for v, _ in figure.values)
    unsupported: list[str] = []
    given = answer_figures(answer)
    for figure in given:
        if not _supports(observed, figure) and figure.text not in unsupported:
            unsupported.append(figure.text)
    corpus = _normalise("\n".join(o.text for o in seen))
    for m in _QUOTE.finditer(answer):
        quoted = m.group(1) or m.group(2)
        if _normalise(quoted) not in corpus and _normalise(quoted) not in _normalise(goal):
            unsupported.append(f'"{quoted}"')
    return AnswerCheck(supported=not unsupported, unsupported_claims=unsupported, checked_numbers=len(given))
