"""AgentTaskWorkflow on a real dev server with real workers; only the model APIs are fakes."""

from __future__ import annotations

import json

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from stakeflow.services import runs
from tests.agent_script import agent, call, plan, think
from tests.fakes import Reply
from tests.support import running_workers
from tests.workflow_support import SECRET_KEY, frontier_fake, open_fake, run_task, settings_for, workspace  # noqa: F401


async def test_low_stakes_run_stays_on_the_open_model(client, tmp_path, open_fake, frontier_fake, workspace):
    open_fake.script(
        agent(
            plan(("Read the notes", "read_file")),
            {1: call("read_file", "read notes", path="notes.txt")},
            answer="Revenue grew 12%; Nordic doubled enterprise deals.",
        )
    )
    settings = settings_for(tmp_path, open_fake, frontier_fake)
    result = await run_task(client, settings, "Summarise notes.txt", workspace=workspace)

    assert result.status == "completed"
    assert result.answer == "Revenue grew 12%; Nordic doubled enterprise deals."
    [step] = result.steps
    assert (step.route, step.model, step.stakes, step.status) == ("open", "qwen-test", "low", "ok")
    assert step.reason == "tool read_file is read-only; planner assessed low stakes"
    assert step.tool_results[0].ok and "Nordic region" in step.tool_results[0].output
    assert len(open_fake.calls) == 3  # plan, step, answer
    assert frontier_fake.calls == []
    # The step's tool output reached the answer prompt.
    assert "Nordic region" in open_fake.calls[2].raw
    # Planner and step saw the workspace's real files.
    size = (workspace / "notes.txt").stat().st_size
    assert (
        f"notes.txt ({size} bytes)" in open_fake.calls[0].raw and f"notes.txt ({size} bytes)" in open_fake.calls[1].raw
    )


async def test_side_effect_step_goes_to_frontier_and_writes_once(client, tmp_path, open_fake, frontier_fake, workspace):
    script = agent(
        plan(("Read the notes", "read_file"), ("Write a summary file", "write_file")),
        {
            1: call("read_file", path="notes.txt"),
            2: call("write_file", path="summary.md", content="# Summary\nGrew 12%\n"),
        },
        answer="Wrote summary.md",
    )
    open_fake.script(script)
    frontier_fake.script(script)
    settings = settings_for(tmp_path, open_fake, frontier_fake)
    result = await run_task(
        client, settings, "Summarise notes.txt into summary.md", workspace=workspace, auto_approve=True
    )

    routes = [(s.index, s.route, s.stakes) for s in result.steps]
    assert routes == [(1, "open", "low"), (2, "frontier", "high")]
    assert result.steps[1].reason == "tool write_file has side effects"
    assert result.steps[1].model == "claude-test"
    assert (workspace / "summary.md").read_text() == "# Summary\nGrew 12%\n"
    # Frontier saw step 2 and the answer (the run's highest stakes are high); the key arrived as a header.
    assert len(frontier_fake.calls) == 2
    # (anthropic 2.x sends the key as a bearer token; 0.x as x-api-key)
    sent = [
        c.headers.get("x-api-key") or c.headers.get("authorization", "").removeprefix("Bearer ")
        for c in frontier_fake.calls
    ]
    assert sent == [SECRET_KEY] * 2
    assert result.answer_route.route == "frontier"
    assert len(open_fake.calls) == 2  # plan, step 1


async def test_private_data_never_reaches_the_frontier(client, tmp_path, open_fake, frontier_fake, workspace):
    open_fake.script(
        agent(
            plan(("Read the notes", "read_file"), ("Write the plan", "write_file", "high")),
            {1: call("read_file", path="regions.csv"), 2: call("write_file", path="out.txt", content="Ingrid: hire 2")},
            answer="done",
        )
    )
    settings = settings_for(tmp_path, open_fake, frontier_fake)
    result = await run_task(
        client, settings, "Plan hires from regions.csv", sensitivity="private", workspace=workspace, auto_approve=True
    )

    assert [s.route for s in result.steps] == ["open", "open"]
    assert result.steps[1].needs_approval is True and result.steps[1].stakes == "high"
    assert "private" in result.steps[1].reason
    assert frontier_fake.calls == []
    assert "Ingrid Solberg" in open_fake.calls[2].raw  # the private content did flow, on the open model


async def test_private_tool_taints_the_rest_of_the_run(client, tmp_path, open_fake, frontier_fake, workspace):
    script = agent(
        plan(("Read regions", "read_file"), ("Decide", None, "high")),
        {1: call("read_file", path="regions.csv"), 2: think("Nordic first")},
        answer="Nordic first",
    )
    open_fake.script(script)
    frontier_fake.script(script)
    settings = settings_for(tmp_path, open_fake, frontier_fake)
    settings.policy.private_tools = ["read_file"]
    result = await run_task(client, settings, "Which region first?", workspace=workspace)

    assert result.sensitivity == "private"
    assert result.steps[1].route == "open" and result.steps[1].needs_approval
    assert any("reads a private source" in n for n in result.notices)
    assert frontier_fake.calls == []


async def test_invalid_open_output_escalates_to_frontier(client, tmp_path, open_fake, frontier_fake, workspace):
    the_plan = plan(("Compute", "calculator"))
    open_fake.script(agent(the_plan, {1: Reply.raw("this is not json")}, answer="42"))
    frontier_fake.script(agent(the_plan, {1: call("calculator", expression="6*7")}))
    settings = settings_for(tmp_path, open_fake, frontier_fake)
    result = await run_task(client, settings, "What is 6*7?", workspace=workspace)

    [step] = result.steps
    assert step.escalated and step.route == "frontier"
    assert step.reason.endswith("escalated: open output failed validation twice")
    assert [a.split(":")[0] for a in step.attempts] == ["open", "open", "frontier"]
    assert step.tool_results[0].output == "6*7 = 42"
    assert len(frontier_fake.calls) == 1
    assert any("escalated" in n for n in result.notices)


async def test_invalid_output_on_private_run_fails_clearly(client, tmp_path, open_fake, frontier_fake, workspace):
    open_fake.script(agent(plan(("Compute", "calculator")), {1: Reply.raw("{not json")}))
    settings = settings_for(tmp_path, open_fake, frontier_fake)
    with pytest.raises(WorkflowFailureError) as info:
        await run_task(client, settings, "What is 6*7?", sensitivity="private", workspace=workspace)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "StepFailed"
    assert "step 1/1 'Compute' failed" in cause.message
    assert "not escalated: data is private and never leaves the open model" in cause.message
    assert frontier_fake.calls == []


async def test_high_stakes_without_key_is_downgraded_visibly(client, tmp_path, open_fake, workspace):
    open_fake.script(agent(plan(("Decide the budget", None, "high")), {1: think("keep it")}, answer="keep it"))
    settings = settings_for(tmp_path, open_fake)
    result = await run_task(client, settings, "Should we keep the budget?", workspace=workspace)
    [step] = result.steps
    assert (step.route, step.stakes, step.downgraded) == ("open", "high", True)
    assert "frontier not configured (ANTHROPIC_API_KEY unset)" in step.reason
    assert any("frontier not configured" in n for n in result.notices)


async def test_tools_limit_rejects_a_plan_naming_another_tool(client, tmp_path, open_fake, workspace):
    open_fake.script(agent(plan(("Read", "read_file")), {}))
    settings = settings_for(tmp_path, open_fake)
    with pytest.raises(WorkflowFailureError) as info:
        await run_task(client, settings, "Summarise notes.txt", tools=["calculator"], workspace=workspace)
    msg = info.value.cause.message
    assert msg.startswith("plan 'plan' failed: open model output invalid 2x")
    assert "read_file" in msg
    # The plan request offered only the allowed tool.
    assert "read_file" not in str(open_fake.calls[0].body.get("response_format"))


async def test_empty_goal_fails_at_once_without_model_calls(client, tmp_path, open_fake, workspace):
    from stakeflow.agents.types import TaskRequest

    settings = settings_for(tmp_path, open_fake)
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, TaskRequest(goal="  ", queue_prefix=settings.queue_prefix))
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    assert info.value.cause.type == "TaskInvalid"
    assert open_fake.calls == []


async def test_token_budget_stops_the_run(client, tmp_path, open_fake, workspace):
    open_fake.script(agent(plan(("a", None), ("b", None)), {1: think("x"), 2: think("y")}))
    settings = settings_for(tmp_path, open_fake)
    with pytest.raises(WorkflowFailureError) as info:
        await run_task(client, settings, "two steps", workspace=workspace, budget_tokens=1)
    assert "token budget exceeded after plan" in info.value.cause.message


async def test_progress_query_reports_steps(client, tmp_path, open_fake, workspace):
    open_fake.script(agent(plan(("Compute", "calculator")), {1: call("calculator", expression="2**10")}, answer="1024"))
    settings = settings_for(tmp_path, open_fake)
    req = runs.build_request(settings, "2**10?", workspace=workspace)
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req)
        await handle.result()
        info = await runs.describe_run(client, handle.id)
    assert info.status == "completed"
    assert info.progress.phase == "done"
    assert [(s.index, s.status, s.route) for s in info.progress.steps] == [(1, "ok", "open")]
    assert info.result.steps[0].tool_results[0].output == "2**10 = 1024"
    assert handle.id.startswith("task-")


async def test_repeated_identical_tool_calls_run_once(client, tmp_path, open_fake, workspace):
    twice = {
        "tool_calls": [{"tool": "write_file", "args": {"path": "x.txt", "content": "a\n", "append": True}}] * 2,
        "result": "wrote",
    }
    open_fake.script(agent(plan(("Write", "write_file")), {1: twice}, answer="ok"))
    settings = settings_for(tmp_path, open_fake)
    result = await run_task(client, settings, "append a line", workspace=workspace, stakes="low")
    assert len(result.steps[0].tool_results) == 1
    assert (workspace / "x.txt").read_text() == "a\n"


async def test_run_cost_from_configured_prices(client, tmp_path, open_fake, frontier_fake, workspace):
    """Costs summed in the workflow equal a hand computation from the fakes' token counts."""
    from stakeflow.agents.billing import cost_line
    from stakeflow.config import PriceConfig

    script = agent(
        plan(("Read", "read_file"), ("Write", "write_file")),
        {1: call("read_file", path="notes.txt"), 2: call("write_file", path="o.txt", content="x")},
        answer="ok",
    )
    open_fake.script(script)
    frontier_fake.script(script)
    open_fake.usage = {"prompt_tokens": 1000, "completion_tokens": 200, "cached_tokens": 0}
    frontier_fake.usage = {
        "input_tokens": 2000,
        "output_tokens": 300,
        "cache_creation_input_tokens": 500,
        "cache_read_input_tokens": 4000,
    }
    settings = settings_for(
        tmp_path,
        open_fake,
        frontier_fake,
        frontier_model="claude-sonnet-4-6",
        prices={"qwen-test": PriceConfig(input_per_mtok=0.2, output_per_mtok=0.6)},
    )
    result = await run_task(client, settings, "read then write", workspace=workspace, auto_approve=True)

    # open: plan + step 1, each 1000 in / 200 out at $0.20/$0.60 per Mtok
    open_call = 1000 * 0.2e-6 + 200 * 0.6e-6  # 0.00032
    # frontier (claude-sonnet-4-6: $3 in, $15 out, $3.75 cache write, $0.30 cache read): step 2 + answer
    frontier_call = 2000 * 3e-6 + 300 * 15e-6 + 500 * 3.75e-6 + 4000 * 0.3e-6  # 0.013575
    # what the frontier would have charged for an open call's tokens
    open_as_frontier = 1000 * 3e-6 + 200 * 15e-6  # 0.006
    c = result.cost
    assert (c.open_calls, c.frontier_calls, c.unpriced_calls) == (2, 2, 0)
    assert c.open_usd == pytest.approx(2 * open_call, abs=1e-9)
    assert c.frontier_usd == pytest.approx(2 * frontier_call, abs=1e-9)
    assert c.frontier_equivalent_usd == pytest.approx(2 * open_as_frontier + 2 * frontier_call, abs=1e-9)
    assert result.steps[1].cost_usd == pytest.approx(frontier_call, abs=1e-9)
    # the frontier calls' cache: 6,500 input tokens at $3 would have been $0.0195 a call, against $0.009075 paid
    assert c.cache_saved_usd == pytest.approx(2 * (6500 * 3e-6 - (2000 * 3e-6 + 500 * 3.75e-6 + 4000 * 0.3e-6)))
    assert cost_line(c) == (
        "cost $0.0278 (open 2 calls $0.0006 · frontier 2 calls $0.0272) · cache saved $0.0209 · all-frontier would be"
        " $0.0392 · saved 29% · agreement not measured"  # a saving never stands alone: no shadow evaluation ran
    )


async def test_unpriced_open_model_is_loud(client, tmp_path, open_fake, workspace):
    from stakeflow.agents.billing import cost_line

    open_fake.script(agent(plan(("Think", None)), {1: think("x")}, answer="ok"))
    settings = settings_for(tmp_path, open_fake, frontier_model="claude-sonnet-4-6")
    result = await run_task(client, settings, "think", workspace=workspace)
    assert result.cost.unpriced_calls == 3 and result.cost.open_usd == 0
    assert result.steps[0].cost_usd is None
    line = cost_line(result.cost)
    assert "3 calls UNPRICED" in line and "saved" not in line


async def test_200_step_plan_continues_as_new_and_keeps_history_small(client, tmp_path, open_fake, workspace):
    (workspace / "big.txt").write_text("x" * 10_000_000)  # a 10 MB file: only a clipped part may reach history
    steps = [("Read the big file", "read_file")] + [(f"Compute {i}", "calculator") for i in range(2, 201)]

    def step_action(body):
        from tests.agent_script import step_index

        i = step_index(body)
        return call("read_file", path="big.txt") if i == 1 else call("calculator", expression=f"{i}*2")

    open_fake.script(agent(plan(*steps), {i: step_action for i in range(1, 201)}, answer="done"))
    settings = settings_for(tmp_path, open_fake)
    req = runs.build_request(settings, "a long plan", workspace=workspace, max_steps=200)
    req.steps_per_history = 60
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req)
        result = await handle.result()
        generations = [wf async for wf in client.list_workflows(f"WorkflowId = '{handle.id}'")]
        last = await client.get_workflow_handle(handle.id).fetch_history()
    assert result.status == "completed" and len(result.steps) == 200
    assert [s.index for s in result.steps] == list(range(1, 201))
    assert all(s.status == "ok" for s in result.steps)
    assert result.steps[199].tool_results[0].output == "200*2 = 400"
    assert result.steps[0].tool_results[0].truncated and len(result.steps[0].tool_results[0].output) < 3200
    assert len(generations) == 4  # 200 steps, a fresh history every 60
    assert len(last.events) < 1000
    assert len(last.to_json()) < 2_000_000
    assert result.usage.requests == 202  # plan + 200 steps + answer, across all runs


async def test_the_schemas_a_small_model_decodes_under_name_only_real_tools_and_files(
    client, tmp_path, open_fake, workspace
):
    """What grammar-constrained decoding enforces: the plan names only allowed tools and starts by reading the
    file the goal names; a read_file path can only be a workspace file."""
    from tests.fakes import output_schema

    open_fake.script(
        agent(
            plan(("Read the notes", "read_file")),
            {1: call("read_file", "read notes", path="notes.txt")},
            answer="Revenue grew 12%.",
        )
    )
    settings = settings_for(tmp_path, open_fake)
    settings.policy.first_step_reads = "always"  # the default, "auto", constrains the embedded model only
    result = await run_task(
        client,
        settings,
        "Summarise the file notes.txt",
        workspace=workspace,
        tools=["read_file", "calculator", "write_file"],
    )
    assert result.status == "completed"
    plan_schema, step_schema = (output_schema(c.body) for c in open_fake.calls[:2])
    # pydantic-ai inlines $defs for the vLLM dialect's strict json_schema.
    first = plan_schema["properties"]["first"]["properties"]["tool"]
    assert first["const"] == "read_file"
    later = plan_schema["properties"]["then"]["items"]["properties"]["tool"]["anyOf"][0]["enum"]
    assert sorted(later) == ["calculator", "read_file", "write_file"]
    args = json.dumps(step_schema)
    assert '"const": "notes.txt"' in args  # the first step reads the file the goal names, and only it
    # The worked examples went first, as earlier turns, and name only sample-* files.
    messages = open_fake.calls[0].body["messages"]
    assert [m["role"] for m in messages[-3:]] == ["user", "assistant", "user"]
    assert "sample-minutes.md" in messages[-3]["content"] and "notes.txt" in messages[-1]["content"]


async def test_a_goal_that_names_no_file_leaves_the_plan_unconstrained(client, tmp_path, open_fake, workspace):
    from tests.fakes import output_schema

    open_fake.script(agent(plan(("Add", "calculator")), {1: call("calculator", expression="2+2")}, answer="4"))
    settings = settings_for(tmp_path, open_fake)
    result = await run_task(client, settings, "What is 2+2?", workspace=workspace)
    assert result.answer == "4"
    assert "steps" in output_schema(open_fake.calls[0].body)["properties"]


def _largest_payload(history) -> int:
    """The largest payload (bytes) any event of ``history`` carries: Temporal refuses one over 2 MB."""
    from google.protobuf.message import Message

    largest = 0

    def walk(msg: Message) -> None:
        nonlocal largest
        for field, value in msg.ListFields():
            if field.message_type is None:
                continue
            items = list(value) if not isinstance(value, Message) else [value]  # repeated or single
            for item in items:
                if not isinstance(item, Message):
                    continue  # a map's scalar values
                if field.message_type.name == "Payload":
                    largest = max(largest, item.ByteSize())
                else:
                    walk(item)

    for event in history.events:
        walk(event)
    return largest


async def test_a_200_step_run_keeps_every_payload_bounded(client, tmp_path, open_fake, workspace):
    """Every step keeps three 3,000-character outputs; the run's payloads (progress, continue-as-new state,
    result) must not grow with all of them: steps that left the recent window are compacted."""
    for name in ("a.txt", "b.txt", "c.txt"):
        (workspace / name).write_text(name[0] * 5000)
    steps = [(f"Read the three files again ({i})", "read_file") for i in range(1, 201)]
    reads = {
        "tool_calls": [{"tool": "read_file", "args": {"path": p}} for p in ("a.txt", "b.txt", "c.txt")],
        "result": "read them",
    }
    open_fake.script(agent(plan(*steps), {i: reads for i in range(1, 201)}, answer="done"))
    settings = settings_for(tmp_path, open_fake)
    req = runs.build_request(settings, "a long plan", workspace=workspace, max_steps=200)
    req.steps_per_history = 70
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req)
        result = await handle.result()
        generations = [wf async for wf in client.list_workflows(f"WorkflowId = '{handle.id}'")]
        largest = 0
        for wf in generations:
            largest = max(
                largest, _largest_payload(await client.get_workflow_handle(handle.id, run_id=wf.run_id).fetch_history())
            )
    assert result.status == "completed" and len(result.steps) == 200
    assert all(len(r.output) >= 3000 for s in result.steps[-5:] for r in s.tool_results)  # recent: whole
    assert all(len(r.output) < 300 and r.truncated for r in result.steps[0].tool_results)  # older: compacted
    print(f"largest payload of a 200-step run: {largest} bytes")
    # 414 kB measured (351 kB while the window slid one step at a time: now up to 9 recent steps stay whole between
    # its jumps); without compaction 1.99 MB, at the 2 MB limit
    assert largest < 500_000, largest
