"""Record real AgentTaskWorkflow histories of one release, as fixtures every later change must replay.

    python tests/histories/record.py LABEL        # writes tests/histories/LABEL/<scenario>.json
    python tests/histories/record.py LABEL NAME...  # only these scenarios

Run it from the checkout of the release to record (it uses that checkout's workflow, workers and test
fakes), before a change to the workflow lands; commit the folder. tests/test_history_fixtures.py replays
every recorded history against the current code, so a change that would break runs in flight after an
upgrade (a new command order without `workflow.patched`) fails CI instead of a user's run. See
docs/versioning.md.

Each scenario is a real run on a dev server this script starts, with real workers and the scripted model
servers of tests/fakes; its history is saved as Temporal's JSON (``WorkflowHistory.to_json``), every
generation of a run that continued as new as its own file.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))

from temporalio.client import Client, WorkflowFailureError  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from stakeflow.agents.types import ApprovalRequest, Progress  # noqa: E402
from stakeflow.local.services import dev_server_args  # noqa: E402
from stakeflow.services import runs  # noqa: E402
from tests.agent_script import agent, call, plan, think  # noqa: E402
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, Reply  # noqa: E402
from tests.support import make_settings, running_workers  # noqa: E402

NOTES = "Revenue grew 12% over Q2, driven by the Nordic region.\n"
WRITE_PLAN = plan(("Read the notes", "read_file"), ("Write the summary", "write_file", "high"))
WRITE_STEPS = {1: call("read_file", path="notes.txt"), 2: call("write_file", path="summary.txt", content="12%\n")}

Scenario = Callable[[Client, Path, FakeOpenAIServer, FakeAnthropicServer], Awaitable[str]]


async def _start(client, settings, goal, ws, **kw):
    req = runs.build_request(settings, goal, workspace=ws, **kw)
    return await runs.start_run(client, settings, req, f"fixture-{uuid.uuid4().hex[:8]}")


async def _waiting(handle, step: int) -> None:
    for _ in range(300):
        p = await handle.query("progress", result_type=Progress)
        if step in p.awaiting_approval:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"step {step} never waited for approval")


def _settings(tmp: Path, open_fake, frontier_fake=None, **kw):
    extra = {}
    if frontier_fake is not None:
        extra = dict(
            anthropic_api_key="sk-ant-fixture", anthropic_base_url=frontier_fake.url, frontier_model="claude-sonnet-4-6"
        )
    return make_settings(tmp, open_base_url=open_fake.url, open_model="qwen-test", open_dialect="vllm", **extra, **kw)


async def read_and_answer(client, tmp, open_fake, frontier_fake):
    open_fake.script(
        agent(
            plan(("Read the notes", "read_file")), {1: call("read_file", path="notes.txt")}, answer="Revenue grew 12%."
        )
    )
    settings = _settings(tmp, open_fake)
    async with running_workers(client, settings):
        handle = await _start(client, settings, "Summarise notes.txt", tmp / "ws")
        await handle.result()
    return handle.id


async def escalation(client, tmp, open_fake, frontier_fake):
    script = agent(plan(("Compute", "calculator")), {1: call("calculator", expression="6*7")}, answer="42")
    open_fake.script(agent(plan(("Compute", "calculator")), {1: Reply.raw("not json")}, answer="42"))
    frontier_fake.script(script)
    settings = _settings(tmp, open_fake, frontier_fake)
    async with running_workers(client, settings):
        handle = await _start(client, settings, "What is 6*7?", tmp / "ws")
        await handle.result()
    return handle.id


async def approved_write(client, tmp, open_fake, frontier_fake):
    open_fake.script(agent(WRITE_PLAN, WRITE_STEPS, answer="done"))
    settings = _settings(tmp, open_fake)
    async with running_workers(client, settings):
        handle = await _start(client, settings, "Summarise notes.txt into summary.txt", tmp / "ws")
        await _waiting(handle, 2)
        await handle.execute_update("approve_step", ApprovalRequest(step=2, decision="approve", by="fixture"))
        await handle.result()
    return handle.id


async def rejected_write(client, tmp, open_fake, frontier_fake):
    open_fake.script(agent(WRITE_PLAN, WRITE_STEPS, answer="done"))
    settings = _settings(tmp, open_fake)
    async with running_workers(client, settings):
        handle = await _start(client, settings, "Summarise notes.txt into summary.txt", tmp / "ws")
        await _waiting(handle, 2)
        await handle.execute_update("approve_step", ApprovalRequest(step=2, decision="reject", note="no", by="fixture"))
        await handle.result()
    return handle.id


async def cancelled_while_waiting(client, tmp, open_fake, frontier_fake):
    open_fake.script(agent(WRITE_PLAN, WRITE_STEPS, answer="done"))
    settings = _settings(tmp, open_fake)
    async with running_workers(client, settings):
        handle = await _start(client, settings, "Summarise notes.txt into summary.txt", tmp / "ws")
        await _waiting(handle, 2)
        await handle.cancel()
        try:
            await handle.result()
        except WorkflowFailureError:
            pass
    return handle.id


async def failed_step(client, tmp, open_fake, frontier_fake):
    open_fake.script(agent(plan(("Compute", "calculator")), {1: Reply.raw("not json")}))
    settings = _settings(tmp, open_fake)
    async with running_workers(client, settings):
        handle = await _start(client, settings, "What is 2+2?", tmp / "ws", sensitivity="private")
        try:
            await handle.result()
        except WorkflowFailureError:
            pass
    return handle.id


async def fallback(client, tmp, open_fake, frontier_fake):
    open_fake.script(lambda body: Reply.error(503, "overloaded"))
    frontier_fake.script(agent(plan(("Think", None)), {1: think("thought")}, answer="ok"))
    settings = _settings(tmp, open_fake, frontier_fake)
    settings.policy.model_max_attempts = 2
    settings.policy.model_retry_initial_s = 0.1
    async with running_workers(client, settings):
        handle = await _start(client, settings, "Think about it", tmp / "ws")
        await handle.result()
    return handle.id


async def continued_as_new(client, tmp, open_fake, frontier_fake):
    steps = [(f"Compute {i}", "calculator") for i in range(1, 8)]
    open_fake.script(
        agent(plan(*steps), {i: call("calculator", expression=f"{i}*2") for i in range(1, 8)}, answer="done")
    )
    settings = _settings(tmp, open_fake)
    req = runs.build_request(settings, "Seven sums", workspace=tmp / "ws", max_steps=7)
    req.steps_per_history = 3
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req, f"fixture-{uuid.uuid4().hex[:8]}")
        await handle.result()
    return handle.id


async def private_tool_failed(client, tmp, open_fake, frontier_fake):
    """A private tool fails, then a high-stakes step and an open-world call (issue 20 §1's patch)."""
    (tmp / "ws" / "people.csv").write_text("name,ssn\nAda,123-45-6789\n")
    script = agent(
        plan(("Count", "sql_query"), ("Decide", None, "high"), ("Look it up", "http_get")),
        {
            1: call("sql_query", query="SELECT CAST(ssn AS INTEGER) FROM people"),
            2: think("decided"),
            3: call("http_get", url="http://127.0.0.1:9/lookup"),
        },
        answer="done",
    )
    open_fake.script(script)
    frontier_fake.script(script)
    settings = _settings(tmp, open_fake, frontier_fake)
    settings.policy.private_tools = ["sql_query"]
    async with running_workers(client, settings):
        handle = await _start(client, settings, "Who is in people.csv?", tmp / "ws", tools=["sql_query", "http_get"])
        # From 0.3.0 the open-world call of a run holding private data waits for a person: approved here.
        await _waiting_or_done(handle)
    return handle.id


async def auto_approve_private_egress(client, tmp, open_fake, frontier_fake):
    """A private run with --auto-approve calls an open-world tool (issue 20 §4's patch)."""
    open_fake.script(
        agent(plan(("Look it up", "http_get")), {1: call("http_get", url="http://127.0.0.1:9/x")}, answer="done")
    )
    settings = _settings(tmp, open_fake)
    async with running_workers(client, settings):
        handle = await _start(
            client, settings, "Look it up", tmp / "ws", tools=["http_get"], sensitivity="private", auto_approve=True
        )
        await _waiting_or_done(handle)
    return handle.id


async def _waiting_or_done(handle) -> None:
    """The run's end; a step that waits for approval (as it does from the release after 0.2.0) is approved."""
    for _ in range(300):
        p = await handle.query("progress", result_type=Progress)
        if p.awaiting_approval:
            await handle.execute_update("approve_step", ApprovalRequest(step=p.awaiting_approval[0], by="fixture"))
        if p.phase in ("done", "failed"):
            break
        await asyncio.sleep(0.1)
    await handle.result()


CSV = "region,revenue\nNordic,8379\nSouth,7951\n"
BAD_SQL = "SELECT sum(amount) FROM 'sales.csv'"
GOOD_SQL = "SELECT sum(revenue) FROM 'sales.csv'"


async def rounds_and_reask(client, tmp, open_fake, frontier_fake):
    """The agent loop (0.3): a failed call and its fix in two rounds, an unsupported answer asked again."""
    (tmp / "ws" / "sales.csv").write_text(CSV)
    answers = iter(["Revenue was 16,331.", "Revenue was 16,330."])
    open_fake.script(
        agent(
            plan(("Sum the revenue", "sql_query")),
            {1: [call("sql_query", query=BAD_SQL), call("sql_query", query=GOOD_SQL)]},
            answer=lambda _: next(answers),
        )
    )
    settings = _settings(tmp, open_fake)
    async with running_workers(client, settings):
        handle = await _start(client, settings, "What was the total revenue in sales.csv?", tmp / "ws")
        await handle.result()
    return handle.id


async def stuck_escalation(client, tmp, open_fake, frontier_fake):
    """The agent loop (0.3): the open model repeats a failed call (stuck), the step escalates to the frontier;
    the answer check escalates an unsupported answer."""
    (tmp / "ws" / "sales.csv").write_text(CSV)
    the_plan = plan(("Sum the revenue", "sql_query"), ("Read the notes", "read_file"))
    open_fake.script(
        agent(
            the_plan, {1: call("sql_query", query=BAD_SQL), 2: call("read_file", path="notes.txt")}, answer="It was 99."
        )
    )
    frontier_fake.script(agent(None, {1: call("sql_query", query=GOOD_SQL)}, answer="Revenue was 16,330."))
    settings = _settings(tmp, open_fake, frontier_fake)
    async with running_workers(client, settings):
        handle = await _start(client, settings, "What was the total revenue in sales.csv?", tmp / "ws")
        await handle.result()
    return handle.id


SCENARIOS: dict[str, Scenario] = {
    "rounds_and_reask": rounds_and_reask,
    "stuck_escalation": stuck_escalation,
    "read_and_answer": read_and_answer,
    "escalation": escalation,
    "approved_write": approved_write,
    "rejected_write": rejected_write,
    "cancelled_while_waiting": cancelled_while_waiting,
    "failed_step": failed_step,
    "fallback": fallback,
    "continued_as_new": continued_as_new,
    "private_tool_failed": private_tool_failed,
    "auto_approve_private_egress": auto_approve_private_egress,
}


# A scenario is a few model calls against scripted fakes: seconds. One still running after this waits for something
# that will not come (an approval its release asks for and the scenario does not give): stopped, and said so.
SCENARIO_TIMEOUT_S = 120.0


class ScenarioTimeout(Exception):
    """A scenario did not finish within ``SCENARIO_TIMEOUT_S``."""


async def within_limit(name: str, scenario: Awaitable[str], timeout_s: float = SCENARIO_TIMEOUT_S) -> str:
    """``scenario``'s workflow id; ScenarioTimeout naming it if it runs past ``timeout_s``."""
    try:
        return await asyncio.wait_for(scenario, timeout_s)
    except TimeoutError:
        raise ScenarioTimeout(
            f"scenario {name} did not finish within {timeout_s:g}s: its run waits for something the scenario does not "
            "give (an approval, a signal) or a worker is stuck; see its workflow in the dev server's history. "
            "Nothing of it was recorded."
        ) from None


async def _save(client: Client, wf_id: str, out: Path, name: str) -> None:
    """Every generation of the run ``wf_id`` as ``out/<name>[-n].json``."""
    runs = [wf async for wf in client.list_workflows(f"WorkflowId = '{wf_id}'")]
    for n, wf in enumerate(sorted(runs, key=lambda w: w.start_time), start=1):
        history = await client.get_workflow_handle(wf_id, run_id=wf.run_id).fetch_history()
        suffix = f"-{n}" if len(runs) > 1 else ""
        (out / f"{name}{suffix}.json").write_text(history.to_json())
    print(f"{name}: {len(runs)} histor{'y' if len(runs) == 1 else 'ies'}")


async def main(label: str, names: list[str]) -> int:
    """Records the scenarios named (every one when none are); the number that failed."""
    out = Path(__file__).resolve().parent / label
    out.mkdir(parents=True, exist_ok=True)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=shutil.which("temporal"),
        data_converter=pydantic_data_converter,
        ip="127.0.0.1",
        dev_server_extra_args=dev_server_args(log_level="error"),
    )
    failed = 0
    try:
        for name, scenario in SCENARIOS.items():
            if names and name not in names:
                continue
            tmp = Path(f"/tmp/stakeflow-fixture-{uuid.uuid4().hex[:8]}")
            (tmp / "ws").mkdir(parents=True)
            (tmp / "ws" / "notes.txt").write_text(NOTES)
            try:
                with FakeOpenAIServer(model="qwen-test") as open_fake, FakeAnthropicServer() as frontier_fake:
                    wf_id = await within_limit(name, scenario(env.client, tmp, open_fake, frontier_fake))
                await _save(env.client, wf_id, out, name)
            except ScenarioTimeout as e:
                print(f"{name}: FAILED: {e}", file=sys.stderr)
                failed += 1
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        await env.shutdown()
    return failed


if __name__ == "__main__":
    if len(sys.argv) < 2 or any(n not in SCENARIOS for n in sys.argv[2:]):
        sys.exit(f"usage: python tests/histories/record.py LABEL [SCENARIO ...] (scenarios: {', '.join(SCENARIOS)})")
    sys.exit(1 if asyncio.run(main(sys.argv[1], sys.argv[2:])) else 0)
