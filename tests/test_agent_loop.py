"""The agent loop on a real dev server with real workers: a step's rounds (the model sees what its tools returned
and fixes what failed), replanning after a step that failed, escalation when the open model is stuck, and the
answer check. Only the model APIs are scripted servers (tests/fakes)."""

from __future__ import annotations

import json
import signal
import uuid

from stakeflow.agents.types import ApprovalRecord, ApprovalRequest, Progress
from stakeflow.core.contracts import APPROVE_UPDATE, PROGRESS_QUERY
from stakeflow.services import runs
from stakeflow.services.render import run_dict
from stakeflow.traces import TraceStore, render_tree, trace_tree
from tests.agent_script import agent, call, plan, round_of
from tests.fakes import FakeAnthropicServer, prompt_text
from tests.support import open_endpoint_env, running_workers, spawn_worker, worker_env
from tests.test_approvals import wait_for_approval
from tests.workflow_support import frontier_fake, open_fake, run_task, settings_for, workspace  # noqa: F401

BAD_QUERY = "SELECT sum(revenue) FROM 'sales.csv'"
GOOD_QUERY = "SELECT sum(units * unit_price) AS revenue FROM 'sales.csv'"
GOAL = "What was the total revenue (units times unit_price) in sales.csv?"


def step_requests(fake) -> list[dict]:
    return [c.body for c in fake.calls if "Now step" in prompt_text(c.body)]


async def test_a_failing_call_is_fixed_in_round_two(client, tmp_path, open_fake, workspace):
    open_fake.script(
        agent(
            plan(("Sum the revenue", "sql_query")),
            {1: [call("sql_query", query=BAD_QUERY), call("sql_query", query=GOOD_QUERY)]},
            answer="Total revenue was 16,330.",
        )
    )
    result = await run_task(client, settings_for(tmp_path, open_fake), GOAL, workspace=workspace)

    [step] = result.steps
    assert step.status == "ok" and [r.round for r in step.rounds] == [1, 2]
    assert [(r.ok, r.round) for r in step.tool_results] == [(False, 1), (True, 2)]
    assert "16330" in step.tool_results[1].output
    # Round 2 saw round 1's call and the tool's own error (with the columns it lists).
    second = step_requests(open_fake)[1]
    assert round_of(second) == 2
    sent = json.dumps(second["messages"])
    assert "revenue" in sent and "Binder Error" in sent and "unit_price" in sent
    assert result.answer_supported is True and result.unsupported_claims == []
    shown = run_dict("wf", "run", "completed", "ui", result=result)
    assert shown["answer_supported"] is True
    assert [r["round"] for r in shown["steps"][0]["rounds"]] == [1, 2]
    assert shown["steps"][0]["rounds"][0]["results"][0]["ok"] is False


async def test_a_wrong_file_then_the_right_one(client, tmp_path, open_fake, workspace):
    wrong = "SELECT max(target_usd) FROM 'targets.csv'"
    right = "SELECT region FROM 'regions.csv' ORDER BY target_usd DESC LIMIT 1"
    open_fake.script(
        agent(
            plan(("Find the region with the highest target", "sql_query")),
            {1: [call("sql_query", query=wrong), call("sql_query", query=right)]},
            answer="Nordic has the highest target.",
        )
    )
    result = await run_task(
        client, settings_for(tmp_path, open_fake), "Which region has the highest target?", workspace=workspace
    )
    [step] = result.steps
    assert step.status == "ok" and len(step.rounds) == 2
    assert "targets.csv" in (step.tool_results[0].error or "")
    assert "Nordic" in step.tool_results[1].output


async def test_a_repeated_failing_call_is_not_run_again_and_the_plan_is_revised(client, tmp_path, open_fake, workspace):
    """Open model only (no frontier): the step is stuck when the model asks for the same failing call again;
    the plan is revised (a read_file step instead), and the answer is supported by what that step read."""
    revised = plan(("Read the sales file", "read_file"))
    open_fake.script(
        agent(
            plan(("Sum the revenue", "sql_query")),
            {1: call("sql_query", query=BAD_QUERY), 2: call("read_file", path="sales.csv")},
            answer="I could not compute the total; the sales file lists 10 orders.",
            replan=revised,
        )
    )
    result = await run_task(client, settings_for(tmp_path, open_fake), GOAL, workspace=workspace)

    first, second = result.steps
    assert first.status == "tool_error" and len(first.rounds) == 2 and first.rounds[1].repeated == 1
    assert [r.round for r in first.tool_results] == [1]  # the repeat was not run
    assert first.stuck.startswith("2 failed sql_query calls")
    assert (second.title, second.status) == ("Read the sales file", "ok")
    assert result.replans == 1
    assert any("plan revised after step 1" in n for n in result.notices)
    assert any("not escalated: frontier not configured" in n for n in result.notices)
    # The answer saw that step 1 got no data.
    answer_req = [c.body for c in open_fake.calls if "Write the answer" in prompt_text(c.body)][0]
    assert "Step 1 got no data: sql_query failed; say that you could not find" in prompt_text(answer_req)
    # "10 orders" is in no output: flagged after the re-ask (the script answers the same).
    assert result.answer_supported is False and result.unsupported_claims == ["10"]


async def test_a_stuck_open_step_escalates_to_the_frontier_with_its_reason(
    client, tmp_path, open_fake, frontier_fake, workspace
):
    open_fake.script(agent(plan(("Sum the revenue", "sql_query")), {1: call("sql_query", query=BAD_QUERY)}))
    frontier_fake.script(agent(None, {1: call("sql_query", query=GOOD_QUERY)}, answer="Total revenue: 16330."))
    settings = settings_for(tmp_path, open_fake, frontier_fake)
    result = await run_task(client, settings, GOAL, workspace=workspace)

    [step] = result.steps
    assert step.status == "ok" and step.escalated and step.route == "frontier"
    assert [(r.round, r.route) for r in step.rounds] == [(1, "open"), (2, "open"), (3, "frontier")]
    assert "escalated: open model stuck after 2 failed sql_query calls" in step.reason
    assert step.stuck == ""
    # The frontier saw the open rounds' failure as its own tool use answered.
    [frontier_step] = step_requests(frontier_fake)
    assert "Binder Error" in json.dumps(frontier_step["messages"])
    assert result.answer_supported is True
    # A measured disagreement: the open path's agreement (and routing by it) counts it.
    with TraceStore(settings.traces_path).reader() as con:
        rows = con.execute("SELECT verdict, method, source, tool, open_model, frontier_model FROM evals").fetchall()
    assert rows == [("frontier_better", "stuck", "stuck", "sql_query", "qwen-test", "claude-test")]


async def test_a_private_stuck_step_never_escalates(client, tmp_path, open_fake, frontier_fake, workspace):
    open_fake.script(
        agent(
            plan(("Sum the revenue", "sql_query")), {1: call("sql_query", query=BAD_QUERY)}, answer="It was 105,283.64."
        )
    )
    settings = settings_for(tmp_path, open_fake, frontier_fake)
    result = await run_task(client, settings, GOAL, sensitivity="private", workspace=workspace)

    assert frontier_fake.calls == []
    [step] = result.steps
    assert step.status == "tool_error" and not step.escalated and step.stuck
    assert any("not escalated: data is private" in n for n in result.notices)
    assert result.answer_supported is False and result.unsupported_claims == ["105,283.64"]


async def test_an_unsupported_answer_is_reasked_then_escalated(client, tmp_path, open_fake, frontier_fake, workspace):
    open_fake.script(
        agent(
            plan(("Sum the revenue", "sql_query")),
            {1: call("sql_query", query=GOOD_QUERY)},
            answer="It was 105,283.64.",
        )
    )
    frontier_fake.script(agent(None, {}, answer="Total revenue was $16,330.00."))
    result = await run_task(client, settings_for(tmp_path, open_fake, frontier_fake), GOAL, workspace=workspace)

    answers = [c.body for c in open_fake.calls if "Write the answer" in prompt_text(c.body)]
    assert len(answers) == 2  # asked, then asked again naming the figure
    assert "Nothing the tools returned supports this in it: 105,283.64" in prompt_text(answers[1])
    assert result.answer == "Total revenue was $16,330.00."
    assert result.answer_route and result.answer_route.route == "frontier" and result.answer_route.escalated
    assert "escalated: answer not supported by what the run observed (105,283.64)" in result.answer_route.reason
    assert result.answer_supported is True


async def test_a_reasked_answer_that_fixes_itself_stays_open(client, tmp_path, open_fake, workspace):
    answers = iter(["Revenue was 16,331.", "Revenue was 16,330."])
    open_fake.script(
        agent(
            plan(("Sum the revenue", "sql_query")),
            {1: call("sql_query", query=GOOD_QUERY)},
            answer=lambda _: next(answers),
        )
    )
    result = await run_task(client, settings_for(tmp_path, open_fake), GOAL, workspace=workspace)
    assert result.answer == "Revenue was 16,330." and result.answer_supported is True
    assert result.answer_route and result.answer_route.route == "open"


async def test_one_round_runs_as_before(client, tmp_path, open_fake, workspace):
    """--max-rounds 1: a failed call ends the step, as runs did before the loop."""
    open_fake.script(agent(plan(("Sum the revenue", "sql_query")), {1: call("sql_query", query=BAD_QUERY)}))
    result = await run_task(client, settings_for(tmp_path, open_fake), GOAL, workspace=workspace, max_rounds=1)
    [step] = result.steps
    assert step.status == "tool_error" and len(step.rounds) == 1
    assert len(step_requests(open_fake)) == 1


async def test_the_frontier_rounds_are_native_tool_use_turns(client, tmp_path, open_fake, workspace):
    """On the frontier a round's action goes back as the output tool's call, its results as that call's result."""
    with FakeAnthropicServer() as frontier:
        frontier.script(
            agent(
                plan(("Sum the revenue", "sql_query", "high")),
                {1: [call("sql_query", query=BAD_QUERY), call("sql_query", query=GOOD_QUERY)]},
                answer="16330",
            )
        )
        open_fake.script(agent(None, {}, answer="16330"))
        settings = settings_for(tmp_path, open_fake, frontier)
        result = await run_task(client, settings, GOAL, workspace=workspace, stakes="high")
        second = step_requests(frontier)[1]
    assert result.steps[0].status == "ok"
    kinds = [
        block.get("type")
        for message in second["messages"]
        for block in (message["content"] if isinstance(message["content"], list) else [])
    ]
    assert "tool_use" in kinds and "tool_result" in kinds


async def test_rounds_are_in_the_trace_and_the_runs_table(client, tmp_path, open_fake, workspace):
    """A worker process (its spans go to the run's trace store), as in production."""
    open_fake.script(
        agent(
            plan(("Sum the revenue", "sql_query")),
            {1: [call("sql_query", query=BAD_QUERY), call("sql_query", query=GOOD_QUERY)]},
            answer="Total revenue was 16,330.",
        )
    )
    settings = settings_for(tmp_path, open_fake)
    worker = spawn_worker(worker_env(settings.home, client, settings.queue_prefix, **open_endpoint_env(open_fake.url)))
    try:
        req = runs.build_request(settings, GOAL, workspace=workspace)
        handle = await runs.start_run(client, settings, req, f"test-rounds-{uuid.uuid4().hex[:8]}")
        await handle.result()
        progress = await handle.query(PROGRESS_QUERY, result_type=Progress)
    finally:
        worker.send_signal(signal.SIGTERM)  # a stopping worker sends its finished work's spans at once
        worker.wait(60)
    assert progress.answer_supported is True
    store = TraceStore(settings.traces_path)
    rows = trace_tree(store, handle.id)
    labels = [r["name"] + (f" r{r['round']}" if r["round"] else "") for r in rows if r["name"] != "stakeflow.step"]
    assert "chat qwen-test r2" in labels and "execute_tool sql_query r2" in labels
    assert "(round 2)" in render_tree(rows)
    with store.reader() as con:
        supported, claims, replans = con.execute(
            "SELECT answer_supported, unsupported_claims, replans FROM runs WHERE run_id = ?", [handle.id]
        ).fetchone()
    assert (supported, json.loads(claims), replans) == (True, [], None)


async def test_each_round_that_acts_asks_for_approval_again(client, tmp_path, open_fake, workspace):
    """A high-risk step whose first write is refused by the tool: its second round waits for a person again,
    with the new call, and acts once."""
    open_fake.script(
        agent(
            plan(("Save the total", "write_file")),
            {
                1: [
                    call("write_file", path="../outside.md", content="16330"),
                    call("write_file", path="total.md", content="16330"),
                ]
            },
            answer="Saved the total to total.md.",
        )
    )
    settings = settings_for(tmp_path, open_fake)
    req = runs.build_request(settings, "Save 16330 to total.md", workspace=workspace)
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req, f"test-{uuid.uuid4().hex[:8]}")
        for expected in ("../outside.md", "total.md"):
            await wait_for_approval(handle, 1)
            record = await handle.execute_update(
                APPROVE_UPDATE, ApprovalRequest(step=1, decision="approve", by="tester"), result_type=ApprovalRecord
            )
            assert expected in record.waiting_for
        result = await handle.result()
    [step] = result.steps
    assert step.status == "ok" and len(step.rounds) == 2
    assert [r.ok for r in step.tool_results] == [False, True]
    assert (workspace / "total.md").read_text() == "16330"
    assert not (tmp_path / "outside.md").exists()


async def test_a_run_revises_its_plan_at_most_twice(client, tmp_path, open_fake, workspace):
    """A model that plans the same failing step again and again: two revisions, then the run answers."""
    failing = plan(("Sum the revenue again", "sql_query"))
    open_fake.script(
        agent(
            plan(("Sum the revenue", "sql_query")),
            {i: call("sql_query", query=BAD_QUERY) for i in range(1, 7)},
            answer="I could not find the revenue.",
            replan=failing,
        )
    )
    result = await run_task(client, settings_for(tmp_path, open_fake), GOAL, workspace=workspace)
    assert result.replans == 2 and len(result.steps) == 3
    assert all(s.status == "tool_error" for s in result.steps)
    assert result.answer_supported is True  # it said it could not find it


async def test_a_goal_naming_a_file_the_workspace_lacks_is_answered_with_a_decline_or_flagged(
    client, tmp_path, open_fake, workspace
):
    """SmolLM2 answered "the largest invoices in invoices.csv" from another file. The answer prompt says the file
    does not exist; an answer that still does not say so is re-asked, then flagged."""
    goal = "What are the three largest invoices in invoices.csv?"

    def reads_regions_then_answers(answer: str):
        return agent(plan(("Read the invoices", "read_file")), {1: call("read_file", path="regions.csv")}, answer)

    open_fake.script(reads_regions_then_answers("The three largest invoices are Nordic, South and West."))
    result = await run_task(client, settings_for(tmp_path, open_fake), goal, workspace=workspace)
    answers = [prompt_text(c.body) for c in open_fake.calls if "Write the answer" in prompt_text(c.body)]
    assert len(answers) == 2
    assert all("say that invoices.csv does not exist" in a for a in answers)
    assert result.answer_supported is False
    assert result.unsupported_claims == ["invoices.csv: no such file in the workspace"]

    open_fake.script(reads_regions_then_answers("invoices.csv does not exist in the workspace."))
    result = await run_task(client, settings_for(tmp_path, open_fake), goal, workspace=workspace)
    assert result.answer_supported is True
