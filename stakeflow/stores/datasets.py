"""`stakeflow dataset export`: captured model calls as fine-tuning data for the open model.

Each example is the open model's prompt (system, worked examples, user turn) with a reference answer as the
assistant turn: a frontier model's structured answer (``frontier``: calls the policy sent to the frontier;
``shadow``: the frontier's reference in a shadow evaluation) or a step a person approved (``approved``; with the
approver's arguments when they changed them). Steps that failed, and steps a person rejected (or nobody
approved in time), are left out; so are private runs unless asked for (they never leave the premises).

Two formats, both chat JSON lines: ``openai`` (``{"messages": [...]}`` ending with the assistant turn: OpenAI's
chat fine-tuning format, and TRL's conversational format too) and ``trl`` (``{"prompt": [...], "completion":
[...]}``, TRL's conversational prompt-completion form, so only the answer is trained on). Examples are
deduplicated by a hash of their content, and split train/test by that hash: an example's side never changes
as data grows, so the test split stays held out. A manifest records counts, sources, filters, the time range
and the SHA-256 of each file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from stakeflow.core.errors import InputError
from stakeflow.traces import TraceStore

Source = Literal["frontier", "shadow", "approved"]
SOURCES: tuple[str, ...] = ("frontier", "shadow", "approved")
Format = Literal["openai", "trl"]


@dataclass(frozen=True)
class Example:
    messages: list[dict[str, str]]  # system, example turns, user, assistant
    source: str
    run_id: str
    step: int
    purpose: str
    recorded_at: str
    private: bool
    request: dict[str, Any] | None = None  # the captured request (for replay), when collected with_requests

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def split_fraction(self) -> float:
        return int(self.digest[:16], 16) / 2**64

    def line(self, fmt: Format) -> dict[str, Any]:
        if fmt == "trl":
            return {"prompt": self.messages[:-1], "completion": self.messages[-1:]}
        return {"messages": self.messages}


@dataclass
class Export:
    train: list[Example] = field(default_factory=list)
    test: list[Example] = field(default_factory=list)
    duplicates: int = 0
    excluded: dict[str, int] = field(default_factory=dict)


def _answer(purpose: str, response: dict[str, Any], edited: list[dict[str, Any]] | None) -> str:
    if "plan" in response:
        return json.dumps(response["plan"], ensure_ascii=False)
    if "action" in response:
        action = dict(response["action"])
        if edited is not None:
            action["tool_calls"] = edited
        return json.dumps(action, ensure_ascii=False)
    return response.get("text", "")


def _messages(request: dict[str, Any], answer: str) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    if request.get("system"):
        out.append({"role": "system", "content": request["system"]})
    for turn in request.get("examples") or []:
        out += [{"role": "user", "content": turn["prompt"]}, {"role": "assistant", "content": turn["answer"]}]
    out += [{"role": "user", "content": request["prompt"]}, {"role": "assistant", "content": answer}]
    return out


def collect(
    traces_path: Path,
    *,
    since: datetime | None = None,
    agent: str | None = None,
    tool: str | None = None,
    sources: tuple[str, ...] = SOURCES,
    include_private: bool = False,
    split: float = 0.8,
    with_requests: bool = False,
) -> Export:
    """The examples the filters select from the trace store at ``traces_path``, deduplicated and split."""
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise InputError(f"unknown source {', '.join(unknown)}: use {', '.join(SOURCES)}")
    if not 0 < split <= 1:
        raise InputError(f"--split {split}: give the share of examples for training, above 0 and at most 1")
    with TraceStore(traces_path).reader() as con:
        rows = con.execute(
            """
            SELECT c.run_id, c.step, c.purpose, c.tool, c.agent, c.route, c.source, c.sensitivity, c.ok,
                   c.recorded_at, c.request, c.response, l.decision, l.edited_calls,
                   EXISTS (SELECT 1 FROM spans s WHERE s.run_id = c.run_id AND s.step = c.step
                           AND s.name = 'stakeflow.step' AND s.status = 'failed') AS failed
            FROM captures c LEFT JOIN labels l ON l.run_id = c.run_id AND l.step = c.step
            WHERE (? IS NULL OR c.recorded_at >= ?) AND (? IS NULL OR c.agent = ?) AND (? IS NULL OR c.tool = ?)
            ORDER BY c.recorded_at, c.capture_id
        """,
            [since, since, agent, agent, tool, tool],
        ).fetchall()
    export = Export()
    seen: set[str] = set()

    def excluded(why: str) -> None:
        export.excluded[why] = export.excluded.get(why, 0) + 1

    for (
        run_id,
        step,
        purpose,
        _tool,
        _agent,
        route,
        source,
        sensitivity,
        ok,
        recorded_at,
        request,
        response,
        decision,
        edited,
        failed,
    ) in rows:
        if not ok or response is None:
            excluded("failed call")
            continue
        if failed:
            excluded("failed step")
            continue
        if decision in ("rejected", "timed_out"):
            excluded("rejected step")
            continue
        if sensitivity == "private" and not include_private:
            excluded("private run")
            continue
        if purpose == "judge":
            continue
        kind = (
            "shadow"
            if source == "shadow"
            else "frontier"
            if route == "frontier"
            else ("approved" if decision in ("approved", "auto_approved") else None)
        )
        if kind is None or kind not in sources:
            continue
        answer = _answer(purpose, json.loads(response), json.loads(edited) if edited else None)
        asked = json.loads(request)
        example = Example(
            _messages(asked, answer),
            kind,
            run_id,
            step,
            purpose,
            str(recorded_at),
            sensitivity == "private",
            asked if with_requests else None,
        )
        if example.digest in seen:
            export.duplicates += 1
            continue
        seen.add(example.digest)
        (export.train if example.split_fraction() < split else export.test).append(example)
    return export


def write(export: Export, out: Path, fmt: Format, filters: dict[str, Any]) -> dict[str, Any]:
    """``<out>.train.jsonl``, ``<out>.test.jsonl`` and ``<out>.manifest.json``; returns the manifest."""
    stem = out.with_suffix("") if out.suffix == ".jsonl" else out
    stem.parent.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {}
    for name, examples in (("train", export.train), ("test", export.test)):
        path = stem.parent / f"{stem.name}.{name}.jsonl"
        text = "".join(json.dumps(e.line(fmt), ensure_ascii=False) + "\n" for e in examples)
        path.write_text(text, encoding="utf-8")
        files[path.name] = {"lines": len(examples), "sha256": hashlib.sha256(text.encode()).hexdigest()}
    everything = export.train + export.test
    times = sorted(e.recorded_at for e in everything)
    manifest = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "format": fmt,
        "filters": filters,
        "counts": {
            "train": len(export.train),
            "test": len(export.test),
            "duplicates_dropped": export.duplicates,
            "excluded": export.excluded,
        },
        "sources": {s: sum(1 for e in everything if e.source == s) for s in SOURCES},
        "private_examples": sum(1 for e in everything if e.private),
        "time_range": [times[0], times[-1]] if times else None,
        "files": files,
    }
    (stem.parent / f"{stem.name}.manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
