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

Besides figures and quotations, an answer that does not decline (its first sentence says it could not find
what was asked) must:
- not answer from a file that is not there: a goal naming a file (``invoices.csv``) the workspace lacks, and
  which no tool output mentions, gets a decline or is unsupported (SmolLM2 answered such goals from another
  file);
- name nothing the run never saw: a capitalised word inside a sentence (a name: "Leesburg", "Scrapy") must
  appear in the goal or an output, as any word, in any case; month names stand for the dates observed;
- report something the tools returned: to a question ("which region ...?", "list ..."), a figure, quotation
  or word of the tools' outputs that the goal does not already hold (an answer that restates the goal has
  nothing); after tool calls that all failed, anything at all but a decline;
- give a figure when the goal asks for a quantity ("how many", "what percentage", ``1234 * 5678``);
- not copy its prompt: a heading the answer prompt frames results with (``read_file output:``, ``Step 2: Read
  notes.txt [ok]``, "Results of the steps:") in an answer is the model echoing what it was shown (SmolLM2 did,
  with a figure of the notes in it that then passed as observed).

Pure and deterministic; the workflow runs it as an activity (``check_answer``) so a later release can refine
it without changing how recorded runs replay.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from decimal import Decimal

from pydantic import BaseModel, Field

from stakeflow.agents.prompts import SCAFFOLDING

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
    # Every workspace file's path when the edge listed them all (else empty: no file is judged missing).
    workspace_paths: list[str] = Field(default_factory=list)
    failed_calls: int = 0  # tool calls of the run that failed: tools ran even when nothing was observed
    # The text arguments of tool calls that succeeded: a file an MCP or Python tool read outside the workspace.
    reached: list[str] = Field(default_factory=list)


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


def _unsigned(figure: Figure) -> Figure:
    """An operand without its sign: in ``-5 * 2`` or ``(3)-5`` the minus is the expression's, not the figure's."""
    return Figure(text=figure.text, values=[(abs(v), d) for v, d in figure.values])


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


CALCULATOR = "calculator"
# Operands an expression may use without having observed them: halves to twelfths, percent and per-mille, and the
# units of time (hours in a day, minutes in an hour, days in a year).
_CONSTANTS: set[Decimal] = {Decimal(n) for n in (*range(13), 24, 60, 100, 365, 1000)}


def operands(goal: str, outputs: Iterable[str]) -> list[Decimal]:
    """The values a calculator expression may use for ``check_answer`` to take its result as observed: the goal's
    figures, the tools' outputs' (unsigned: a sign is the expression's) and the constants; sorted."""
    found = {abs(value) for text in (goal, *outputs) for figure in figures(text) for value, _ in figure.values}
    return sorted(found | _CONSTANTS)


def check_answer(
    answer: str,
    *,
    goal: str,
    observations: Iterable[Observation | str],
    workspace_paths: Sequence[str] = (),
    failed_calls: int = 0,
    reached: Sequence[str] = (),
) -> AnswerCheck:
    """Whether every figure, quotation and name in ``answer`` is backed by the goal or by one of ``observations``,
    and whether it reports what the tools returned (see the module docstring).

    A calculator's output (``expression = value``) backs its value only when every figure of its expression
    is itself backed — by the goal, another tool's output, an earlier such value, or a constant (0 to 12, 24,
    60, 100, 365, 1000: halves, months, percentages, units of time): a product of a figure a worked example put in
    the plan, not the user, supports nothing.
    """
    seen = [o if isinstance(o, Observation) else Observation(text=o) for o in observations]
    from_goal: set[Decimal] = {value for figure in figures(goal) for value, _ in figure.values}
    from_tools: set[Decimal] = set()
    computed = [o for o in seen if o.tool == CALCULATOR and " = " in o.text]
    for o in seen:
        if o not in computed:
            from_tools.update(value for figure in figures(o.text) for value, _ in figure.values)
    for o in computed:
        expression, _, value = o.text.rpartition(" = ")
        if all(_supports(from_goal | from_tools | _CONSTANTS, _unsigned(operand)) for operand in figures(expression)):
            from_tools.update(v for figure in figures(value) for v, _ in figure.values)
    names = {value for path in workspace_paths for figure in figures(path) for value, _ in figure.values}
    observed = from_goal | from_tools | names
    unsupported: list[str] = []
    given = answer_figures(answer)
    for figure in given:
        if not _supports(observed, figure) and figure.text not in unsupported:
            unsupported.append(figure.text)
    outputs = "\n".join(o.text for o in seen)
    corpus = _normalise(outputs)
    quotes = [m.group(1) or m.group(2) for m in _QUOTE.finditer(answer)]
    for quoted in quotes:
        if _normalise(quoted) not in corpus and _normalise(quoted) not in _normalise(goal):
            unsupported.append(f'"{quoted}"')
    if not declines(answer):
        output_words = _words(outputs) | _month_names(outputs)
        goal_words = _words(goal)
        known = output_words | goal_words | _words("\n".join([*workspace_paths, *reached]))
        copied = SCAFFOLDING.search(answer)
        if copied:
            unsupported.append(f'"{copied.group(0).strip().lstrip("{([").strip()}" (the prompt, copied)')
        unsupported += [
            f"{name} (named in no output)" for name in _names(_QUOTE.sub(" ", answer)) if name.lower() not in known
        ]
        unsupported += [
            f"{name}: no such file in the workspace"
            for name in missing_files(goal, workspace_paths, "\n".join([outputs, *reached]))
        ]
        if asks_quantity(goal) and not answer_figures(_DATE.sub(" ", answer)):  # a date is no quantity
            unsupported.append("no figure: the goal asks for a quantity")
        if (
            not unsupported
            and ((seen and asks_question(goal)) or (failed_calls and not seen))
            and not (
                any(_supports(from_tools, f) for f in given)
                or quotes
                or (_words(answer) & output_words) - goal_words - _PLAIN_WORDS
            )
        ):
            unsupported.append("no finding: the answer reports nothing the tools returned")
    unsupported = list(dict.fromkeys(unsupported))  # a claim said twice is named once
    return AnswerCheck(supported=not unsupported, unsupported_claims=unsupported, checked_numbers=len(given))


# How an answer says it has no answer, in its first sentence.
_DECLINE = re.compile(
    r"\b(?:could ?n[o']t|can ?n[o']t|cannot|unable to|was ?n[o']t able to|did ?n[o']t|do ?n[o']t|does ?n[o']t) "
    r"(?:find|locate|determine|answer|compute|calculate|read|open|access|get|see|exist|contain|have|include)\b"
    r"|\bnot (?:found|available|present|in the workspace|exist)\b|\bno such\b|\bno (?:data|results?|information)\b"
    r"|\b(?:is|are) missing\b|\bthere (?:is|are) no (?:file|data|such|information|record)",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n")


def declines(answer: str) -> bool:
    """Whether the answer's first sentence says it could not find (or compute) what was asked."""
    first = _SENTENCE_END.split(answer.strip(), maxsplit=1)[0]
    return bool(_DECLINE.search(first))


# The kinds of file a goal names: data, text and documents (not domains: "example.com").
_FILE_KINDS = "csv|tsv|txt|md|json|jsonl|ndjson|yaml|yml|toml|xml|html|htm|log|pdf|xlsx|xls|parquet|sql|ini|cfg|docx"
_FILE_NAME = re.compile(rf"(?<![\w./:\\-])([\w][\w.-]*\.(?:{_FILE_KINDS}))(?![\w/\\-]|\.\w)", re.IGNORECASE)


def missing_files(goal: str, workspace_paths: Sequence[str], reached: str) -> list[str]:
    """The files ``goal`` names that are not in the workspace (when all its paths are known) and that nothing
    the run reached mentions (a tool's output or a successful call's argument: a file another tool read)."""
    if not workspace_paths:
        return []
    present = {p.lower() for path in workspace_paths for p in (path, path.rsplit("/", 1)[-1])}
    reached = reached.lower()
    return [
        name
        for name in dict.fromkeys(m.group(1) for m in _FILE_NAME.finditer(goal))
        if name.lower() not in present and name.lower() not in reached
    ]


# Goals that ask for a computed figure in the imperative.
_COMPUTE = "compute|calculate|divide|multiply|subtract|add up|sum up|convert"
# A goal that asks for a quantity: the answer must give a figure (or decline).
_QUANTITY = re.compile(
    r"\bhow (?:many|much|long|far|often|old)\b"
    r"|\bwhat (?:is|was|were|are)? ?(?:the )?(?:percentage|percent|share|proportion|fraction|number|amount|total|sum|"
    r"average|mean|median|count|price|cost|value|rate|ratio)\b"
    r"|\bby what\b|\bhow (?:big|large|small)\b"
    rf"|^\s*(?:{_COMPUTE})\b",
    re.IGNORECASE,
)
# Two figures joined by an arithmetic operator, written out ("1234 * 5678", "7,200 / 16", "12 times 7", "100 - 90": a
# minus between spaces, never a date's "2024-03-11"), a percentage of a figure ("15% of 2,460"), or the verb's
# form ("Divide 7,200 by 16", "add 3 and 4").
_FIGURE = r"\d[\d,]*(?:\.\d+)?"
_OPERATOR = r"\s*(?:[*/×÷+^]|\bx\b|\btimes\b|\bplus\b|\bminus\b|\bdivided by\b|\bmultiplied by\b)\s*|\s+[-−]\s+"
_EXPRESSION = re.compile(
    rf"(?<![\w.]){_FIGURE}(?:{_OPERATOR}){_FIGURE}|{_FIGURE}\s*%\s*of\s+{_FIGURE}"
    rf"|\b(?:divide|multiply)\s+{_FIGURE}\s+by\s+{_FIGURE}|\b(?:add|subtract)\s+{_FIGURE}\s+(?:and|to|from)\s+{_FIGURE}",
    re.IGNORECASE,
)
# A goal that asks for something to be found out, by its first word.
_QUESTION = re.compile(
    rf"\s*(?:what|which|who|whom|whose|how|when|where|why|is|are|was|were|does|do|did|list|name|find|count|tell"
    rf"|{_COMPUTE})\b",
    re.IGNORECASE,
)


def asks_question(goal: str) -> bool:
    """Whether ``goal`` asks for something to be found out (a question, "list ...", "find ..."), not only done:
    "Commit the fix" may be answered "Done."; "Which region sold most?" may not."""
    return "?" in goal or bool(_QUESTION.match(goal))


def asks_quantity(goal: str) -> bool:
    """Whether ``goal`` asks for a number: "how many", "what percentage", "what is the total", ``1234 * 5678``."""
    return bool(_QUANTITY.search(goal)) or writes_expression(goal)


def writes_expression(goal: str) -> bool:
    """Whether ``goal`` writes out an arithmetic expression over figures: what the calculator is for."""
    return _EXPRESSION.search(_DATE.sub(" ", goal)) is not None


# A capitalised word inside a sentence, after a word and a space: a name ("Blue Door", "Leesburg"). Words at a
# sentence's or line's start, after a colon or a bracket, are not taken: they are capitalised anyway.
_NAME = re.compile(r"(?<=[\w,;] )[A-Z][a-z]{2,}\b")
_MONTHS = (
    re.findall(r"\w+", "january february march april may june july august september october november december"),
    re.findall(r"\w+", "jan feb mar apr may jun jul aug sep oct nov dec"),
)
# Words any answer may use that are no finding of a tool's: function words and the prompts' own vocabulary.
_PLAIN_WORDS = frozenset(
    re.findall(
        r"\w+",
        """the and for are was were with that this from into onto than then there these those which what when where
    who whom whose why how has have had not but all any each per its our your their they them you his her she
    him one two three ten can could would should will may might must does did done use used using based
    according about above below after before over under more most less least also only just very much many
    some such other same both between within without again further here out off own too yes now
    goal goals step steps result results tool tools plan plans answer answers file files query queries find
    found finding data output outputs value values number numbers total run task asked ask user question
    figure figures row rows column columns table tables""",
    )
)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]{3,}", text.lower()))


def _month_names(text: str) -> set[str]:
    months = {int(m.group(1)) for m in re.finditer(r"\b\d{4}-(\d{2})-\d{2}\b", text) if 1 <= int(m.group(1)) <= 12}
    return {names[m - 1] for m in months for names in _MONTHS}


def _names(answer: str) -> list[str]:
    return list(dict.fromkeys(_NAME.findall(answer)))
