"""Task suite: how often a run's answer is right, honestly flagged, or confidently wrong (issue 22, section 5).

A benchmark, not a test: it runs every task of bench/tasks.toml (questions with known answers over
examples/workspace and bench/workspaces/roastery: CSV joins, counts and sums, max/min, facts from text
files, arithmetic, a file that does not exist, questions the data cannot answer) against whatever open
model is configured, two ways, and prints both side by side:

  stakeflow  `stakeflow run --json --workspace DIR --tools ... GOAL` as a subprocess, exactly what a user
             types; model calls and tokens from its `usage`, rounds from its `steps` (each step's `rounds`
             when a run reports them, else one per step: today's pipeline);
  anchor     a plain pydantic-ai Agent on the same endpoint with stakeflow's own tool functions, in this
             process (bench/task_anchor.py says how, and why the loop is prompted JSON on llama.cpp).

Each answer is graded deterministically (bench/task_grading.py): right / flagged (the run reported
`answer_supported: false`, or the answer declines) / wrong and unflagged / failed (no answer: the run
failed or timed out). A run's `answer_supported`, which issue 22 adds, is honoured whenever present.

    python bench/tasks.py                         # every task, both columns (~30 min on 2 cores, embedded)
    python bench/tasks.py --only 'ro-*' --limit 5 # a glob (or a substring) of task names; the first 5
    python bench/tasks.py --skip-anchor --json /tmp/tasks.json
    python bench/tasks.py --verify                # recompute every expected answer from the data, no model
    python bench/tasks.py --report /tmp/tasks.json   # the tables of a --json file, its answers graded again
    STAKEFLOW_OPEN_BASE_URL=http://gpu:8000/v1 STAKEFLOW_OPEN_MODEL=Qwen/Qwen2.5-7B-Instruct python bench/tasks.py

Isolation: everything runs under a fresh STAKEFLOW_HOME (a temporary folder, removed at the end unless
--keep-home) with its own free ports for the dev server, its Web UI and the embedded model, so it never
touches another stakeflow on the machine; Temporal variables and profiles are dropped (it always starts its
own dev server), and ANTHROPIC_API_KEY too unless --frontier: both columns then use the open model only.
The open model's variables (STAKEFLOW_OPEN_BASE_URL, _MODEL, _API_KEY, _DIALECT) pass through; --config
copies a stakeflow.toml into the home. `stakeflow down` stops what it started, whatever happens.
Tasks run one at a time, stakeflow then the anchor, so load on the machine hits both columns alike.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.task_anchor import Anchor, Endpoint, anchor_mode
from bench.task_grading import OUTCOMES, Grade, Task, check, grade, load_suite

SUITE = REPO / "bench" / "tasks.toml"
STAKEFLOW = [sys.executable, "-m", "stakeflow"]
# Steps in these states ran their model call; "pending"/"skipped" ones did not.
_RAN = ("running", "awaiting_approval", "ok", "tool_error", "failed")


@dataclass
class Row:
    """One task in one column: the outcome and what it cost."""

    outcome: str = "failed"
    note: str = ""
    answer: str | None = None
    calls: int = 0
    rounds: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    wall_s: float = 0.0
    completed: bool = False  # it ended with an answer (what grade() takes)
    supported: bool | None = None  # the run's answer_supported, when it reports one
    extra: dict[str, Any] = field(default_factory=dict)  # the run's own record, for --json


# --- an isolated stakeflow --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def isolated_env(home: Path, frontier: bool) -> dict[str, str]:
    """This process's environment, pointed at ``home`` and free ports, with no other Temporal or frontier."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TEMPORAL_", "STAKEFLOW_TEMPORAL_"))
        and k not in ("STAKEFLOW_HOME", "STAKEFLOW_TRACES", "STAKEFLOW_UI_BASE_URL")
    }
    if not frontier:
        env.pop("ANTHROPIC_API_KEY", None)
        env.pop("STAKEFLOW_FRONTIER_AVAILABLE", None)
    env.update(
        STAKEFLOW_HOME=str(home),
        TEMPORAL_CONFIG_FILE=str(home / "no-temporal-profile.toml"),  # no profile from ~/.config
        STAKEFLOW_TEMPORAL_PORT=str(free_port()),
        STAKEFLOW_UI_PORT=str(free_port()),
        STAKEFLOW_EMBEDDED_PORT=str(free_port()),
    )
    return env


def stakeflow(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*STAKEFLOW, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def wait_idle(base_url: str, api_key: str, limit_s: float = 900) -> float:
    """Wait until the open endpoint lists its models within 2 s; returns the seconds waited.

    llama-cpp-python's server answers nothing, not even ``GET /models``, while it completes a request, and a
    request whose client gave up (the anchor's, at its timeout) runs on to its end. A `stakeflow run` started
    then takes the busy embedded model for a stranger on its port and exits 1 (seen here): each task waits.
    """
    request = urllib.request.Request(f"{base_url.rstrip('/')}/models", headers={"Authorization": f"Bearer {api_key}"})
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        try:
            with urllib.request.urlopen(request, timeout=2):
                return time.monotonic() - started
        except OSError:
            time.sleep(1)
    raise SystemExit(f"the open model at {base_url} stayed busy for {limit_s:g}s")


def run_stakeflow(task: Task, timeout_s: float) -> Row:
    """One task through `stakeflow run --json`; a run still going at the timeout is cancelled."""
    workflow_id = f"bench-{task.name}-{uuid.uuid4().hex[:6]}"
    argv = ["run", "--json", "--id", workflow_id, "--workspace", str(REPO / task.workspace)]
    argv += ["--tools", ",".join(task.tools), task.goal]
    started = time.perf_counter()
    try:
        done = stakeflow(argv, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stakeflow(["cancel", workflow_id], timeout=60)
        return Row(note=f"timed out after {timeout_s:g}s", wall_s=time.perf_counter() - started)
    wall = time.perf_counter() - started
    try:
        data = json.loads(done.stdout)
    except ValueError:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Row(note=f"exit {done.returncode}: {tail[:150]}", wall_s=wall)
    steps = data.get("steps") or []
    usage = data.get("usage") or {}
    supported = data.get("answer_supported") if "answer_supported" in data else None
    completed = data.get("status") == "completed" and done.returncode == 0
    graded = grade(task, data.get("answer"), completed, supported)
    errors = [f"{r['tool']}: {r['error']}" for s in steps for r in s.get("tool_results", []) if not r.get("ok")]
    return Row(
        outcome=graded.outcome,
        note=graded.note if completed else (data.get("error") or graded.note or "")[:150],
        answer=data.get("answer"),
        calls=usage.get("requests", 0),
        rounds=sum(
            len(s["rounds"]) if isinstance(s.get("rounds"), list) else 1 for s in steps if s.get("status") in _RAN
        ),
        input_tokens=usage.get("input_tokens", 0),
        output_tokens=usage.get("output_tokens", 0),
        wall_s=wall,
        completed=completed,
        supported=supported,
        extra={
            "workflow_id": workflow_id,
            "status": data.get("status"),
            "answer_supported": supported,
            "unsupported_claims": data.get("unsupported_claims"),
            "plan": [f"{s['title']} [{', '.join(s.get('tools') or []) or 'no tool'}]" for s in steps],
            "tool_errors": errors,
            "notices": data.get("notices"),
            "error": data.get("error"),
        },
    )


async def run_anchor(anchor: Anchor, task: Task, timeout_s: float) -> Row:
    result = await anchor.run(task.goal, REPO / task.workspace, task.tools, timeout_s)
    graded: Grade = grade(task, result.answer, result.error is None, None)
    return Row(
        outcome=graded.outcome,
        note=graded.note if result.error is None else result.error[:150],
        answer=result.answer,
        calls=result.calls,
        rounds=result.rounds,
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        wall_s=result.wall_s,
        completed=result.error is None,
        extra={"transcript": result.transcript, "error": result.error},
    )


# --- the report -------------------------------------------------------------------------------------------

_COLS = f"{'outcome':<8} {'calls':>5} {'rnds':>4} {'in tok':>7} {'out':>5} {'wall s':>6}"


def _cells(r: Row | None) -> str:
    if r is None:
        return f"{'-':<8} {'':>5} {'':>4} {'':>7} {'':>5} {'':>6}"
    return f"{r.outcome:<8} {r.calls:>5} {r.rounds:>4} {r.input_tokens:>7} {r.output_tokens:>5} {r.wall_s:>6.1f}"


def _clip(text: str | None, n: int = 90) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def report(tasks: list[Task], rows: dict[str, dict[str, Row]], columns: list[str]) -> None:
    width = max(len(t.name) for t in tasks)
    head = f"{'task':<{width}} {'expected':<12}" + "".join(f" | {c + ': ' + _COLS:<48}" for c in columns)
    print(head)
    print("-" * len(head))
    for t in tasks:
        line = f"{t.name:<{width}} {_clip(t.expected(), 12):<12}"
        print(line + "".join(f" | {_cells(rows[t.name].get(c))}" for c in columns))
    print()
    print(f"totals over {len(tasks)} tasks")
    print(
        f"{'column':<10} {'right':>5} {'flagged':>7} {'WRONG unflagged':>15} {'failed':>6}   {'calls':>5} "
        f"{'rounds':>6} {'in tok':>8} {'out tok':>7} {'wall s':>7}"
    )
    for c in columns:
        rs = [rows[t.name][c] for t in tasks if c in rows[t.name]]
        n = {o: sum(r.outcome == o for r in rs) for o in OUTCOMES}
        right_flagged = sum(r.note == "right but flagged" for r in rs)
        print(
            f"{c:<10} {n['right']:>5} {n['flagged']:>7} {n['wrong']:>15} {n['failed']:>6}   {sum(r.calls for r in rs):>5} "
            f"{sum(r.rounds for r in rs):>6} {sum(r.input_tokens for r in rs):>8} {sum(r.output_tokens for r in rs):>7} "
            f"{sum(r.wall_s for r in rs):>7.0f}"
            + (f"   ({right_flagged} of the flagged were right)" if right_flagged else "")
        )
    print()
    print(f"right, by kind ({' / '.join(columns)}):")
    for kind in sorted({t.kind for t in tasks}):
        of_kind = [t for t in tasks if t.kind == kind]
        rights = [sum(rows[t.name][c].outcome == "right" for t in of_kind if c in rows[t.name]) for c in columns]
        print(f"  {kind:<13} {' / '.join(str(n) for n in rights)} of {len(of_kind)}")
    print()
    print("why each answer that is not right got its mark, and what it said:")
    for t in tasks:
        for c in columns:
            r = rows[t.name].get(c)
            if r is not None and r.outcome != "right":
                print(f"  {t.name:<{width}} {c:<9} {r.outcome:<7} {_clip(r.note, 40):<40} {_clip(r.answer, 70)!r}")


def print_report(meta: dict[str, Any], tasks: list[Task], rows: dict[str, dict[str, Row]]) -> None:
    columns = [c for c in ("stakeflow", "anchor") if any(c in rows[t.name] for t in tasks)]
    started = datetime.fromisoformat(meta["started"])
    print(
        f"bench/tasks.py · {started:%Y-%m-%d %H:%M} UTC · {meta.get('machine', '?')} · "
        f"{meta['model']} ({meta['dialect']}) · anchor {meta['anchor_mode']}"
    )
    print()
    report(tasks, rows, columns)


def save(path: Path, meta: dict[str, Any], tasks: list[Task], rows: dict[str, dict[str, Row]]) -> None:
    """Every task so far with its rows, answers and transcripts (written after each task: a crash keeps them)."""
    out = {
        **meta,
        "tasks": [
            {**asdict(t), "expected": t.expected(), **{c: asdict(r) for c, r in rows[t.name].items()}} for t in tasks
        ],
    }
    path.write_text(json.dumps(out, indent=2, default=str))


def regrade(path: Path, tasks: list[Task]) -> tuple[dict[str, Any], list[Task], dict[str, dict[str, Row]]]:
    """A --json file's rows, each answer graded again by today's grader against today's expectations."""
    data = json.loads(path.read_text())
    wanted = {t.name: t for t in tasks}
    meta = {k: v for k, v in data.items() if k != "tasks"}
    kept: list[Task] = []
    rows: dict[str, dict[str, Row]] = {}
    names = set(Row.__dataclass_fields__)
    for item in data["tasks"]:
        t = wanted.get(item["name"])
        if t is None:
            continue
        kept.append(t)
        rows[t.name] = {}
        for c in ("stakeflow", "anchor"):
            if c not in item:
                continue
            r = Row(**{k: v for k, v in item[c].items() if k in names})
            if "completed" not in item[c]:  # written before the field existed
                extra = r.extra
                r.completed = extra.get("status") == "completed" if c == "stakeflow" else not extra.get("error")
                r.supported = extra.get("answer_supported")
            if r.completed:
                graded = grade(t, r.answer, r.completed, r.supported)
                r.outcome, r.note = graded.outcome, graded.note
            rows[t.name][c] = r
    return meta, kept, rows


# --- main -------------------------------------------------------------------------------------------------


def select(tasks: list[Task], only: str | None, limit: int | None) -> list[Task]:
    if only:
        pats = [p.strip() for p in only.split(",") if p.strip()]
        tasks = [
            t for t in tasks if any(fnmatch.fnmatch(t.name, p) if set(p) & set("*?[") else p in t.name for p in pats)
        ]
    return tasks[:limit] if limit else tasks


async def run_suite(tasks: list[Task], args: argparse.Namespace) -> tuple[dict[str, dict[str, Row]], dict[str, Any]]:
    from stakeflow.config import load_settings

    up = stakeflow(["up"], timeout=300)
    if up.returncode != 0:
        raise SystemExit(f"stakeflow up failed:\n{up.stdout}{up.stderr}")
    settings = load_settings()
    key = settings.open_api_key.get_secret_value() if settings.open_api_key else ""
    endpoint = Endpoint(settings.open_url, settings.open_model_id, key, settings.dialect)
    mode = anchor_mode(endpoint.dialect) if args.anchor_mode == "auto" else args.anchor_mode
    anchor = None if args.skip_anchor else Anchor(endpoint, mode, args.anchor_rounds)
    meta = {
        "started": datetime.now(UTC).isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "endpoint": endpoint.base_url,
        "model": endpoint.model,
        "dialect": endpoint.dialect,
        "anchor_mode": mode,
    }
    print(f"open model {endpoint.model} at {endpoint.base_url} ({endpoint.dialect}); anchor: {mode}", file=sys.stderr)
    rows: dict[str, dict[str, Row]] = {}
    for n, t in enumerate(tasks, 1):
        waited = await asyncio.to_thread(wait_idle, endpoint.base_url, key or "none")
        rows[t.name] = {"stakeflow": await asyncio.to_thread(run_stakeflow, t, args.timeout)}
        if anchor is not None:
            waited += await asyncio.to_thread(wait_idle, endpoint.base_url, key or "none")
            rows[t.name]["anchor"] = await run_anchor(anchor, t, args.timeout)
        if waited > 5:
            print(f"[{n}/{len(tasks)}] waited {waited:.0f}s for the open model to be idle", file=sys.stderr)
        if args.json:
            save(Path(args.json), meta, tasks[:n], rows)
        for c, r in rows[t.name].items():
            print(
                f"[{n}/{len(tasks)}] {t.name} {c}: {r.outcome} ({r.note}) {r.wall_s:.1f}s {_clip(r.answer, 100)!r}",
                file=sys.stderr,
            )
    return rows, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", metavar="PATTERN", help="task names: globs or substrings, comma-separated")
    parser.add_argument("--limit", type=int, metavar="N", help="the first N tasks (after --only)")
    parser.add_argument("--skip-anchor", action="store_true", help="stakeflow only")
    parser.add_argument("--json", metavar="FILE", help="also write every row, answer and transcript here")
    parser.add_argument("--report", type=Path, metavar="FILE", help="print the report of a --json file, graded again")
    parser.add_argument("--verify", action="store_true", help="check the expected answers against the data, and stop")
    parser.add_argument("--suite", type=Path, default=SUITE, help="the task file (default bench/tasks.toml)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per task and column (default 600)")
    parser.add_argument(
        "--anchor-mode",
        choices=["auto", "native", "prompted"],
        default="auto",
        help="how the anchor calls tools (default: prompted on llama.cpp, native elsewhere)",
    )
    parser.add_argument("--anchor-rounds", type=int, default=6, help="model requests the anchor may make per task")
    parser.add_argument("--config", type=Path, help="a stakeflow.toml to use (copied into the isolated home)")
    parser.add_argument(
        "--frontier", action="store_true", help="keep ANTHROPIC_API_KEY: stakeflow may use the frontier"
    )
    parser.add_argument("--keep-home", action="store_true", help="keep the isolated STAKEFLOW_HOME (logs, traces)")
    args = parser.parse_args()

    suite = load_suite(args.suite)
    problems = [(t.name, p) for t in suite.tasks if (p := check(t, REPO))]
    for name, p in problems:
        print(f"{name}: {p}", file=sys.stderr)
    if problems:
        raise SystemExit(f"{len(problems)} expected answers disagree with the data: fix {args.suite}")
    tasks = select(suite.tasks, args.only, args.limit)
    if args.verify:
        print(f"{len(suite.tasks)} tasks: every expected answer agrees with the data")
        return
    if not tasks:
        raise SystemExit("no task matches --only")
    if args.report:
        meta, tasks, rows = regrade(args.report, tasks)
        print_report(meta, tasks, rows)
        return

    home = Path(tempfile.mkdtemp(prefix="stakeflow-bench-tasks-"))
    if args.config:
        shutil.copy(args.config, home / "stakeflow.toml")
    env = isolated_env(home, args.frontier)  # read before clearing: it keeps the open model's variables
    os.environ.clear()
    os.environ.update(env)
    try:
        rows, meta = asyncio.run(run_suite(tasks, args))
    finally:
        down = stakeflow(["down"], timeout=120)
        if down.returncode != 0:
            print(f"stakeflow down: {down.stdout}{down.stderr}", file=sys.stderr)
        if args.keep_home:
            print(f"STAKEFLOW_HOME kept: {home}", file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)
    if args.json:
        save(Path(args.json), meta, tasks, rows)
    print_report(meta, tasks, rows)


if __name__ == "__main__":
    main()
