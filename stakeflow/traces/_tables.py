"""Query results as every command prints them: an aligned text table, or CSV.

One CSV writer for every ``--csv`` (``costs``, ``sql``): LF line endings and ISO 8601 times, so the
output diffs cleanly and loads into any tool without a locale guessing at dates.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any


def format_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    null: str = "NULL",
    max_width: int = 60,
    align_left: set[int] | None = None,
) -> str:
    """A plain-text table: a header, a rule, one line per row; numbers right-aligned.

    Cells longer than ``max_width`` are cut with "…" (CSV and JSON output keep them whole).
    """
    cells = [[_cell(v, null, max_width) for v in row] for row in rows]
    widths = [len(str(c)) for c in columns]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    numeric = [
        all(
            isinstance(row[i], (int, float, Decimal)) and not isinstance(row[i], bool)
            for row in rows
            if row[i] is not None
        )
        and any(row[i] is not None for row in rows)
        for i in range(len(columns))
    ]
    if align_left is not None:
        numeric = [i not in align_left for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line([str(c) for c in columns]), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in cells)
    if not rows:
        out.append("(no rows)")
    return "\n".join(out)


def to_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """CSV text with a header line, LF line endings; None becomes an empty field, times ISO 8601."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[_csv_value(v) for v in row] for row in rows])
    return buf.getvalue()


def money(value: Decimal | float | None) -> float | None:
    """A DECIMAL sum as float USD for reports and JSON; None (unpriced) stays None, never 0."""
    return None if value is None else float(value)


def _cell(value: Any, null: str, max_width: int) -> str:
    if value is None:
        return null
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (float, Decimal)):
        text = f"{value:.6f}"
    elif isinstance(value, datetime):
        text = value.isoformat(sep=" ", timespec="milliseconds")
    else:
        text = str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= max_width else text[: max_width - 1] + "…"


def _csv_value(value: Any) -> Any:
    # date and time print as ISO 8601 already; a datetime's str() has a space instead of the "T".
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return value
