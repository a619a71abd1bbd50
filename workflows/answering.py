"""The run's answer, and no answer the tools did not support: the answer call, then its check against what the
run observed, re-asked once with the mismatch named, escalated when allowed, and flagged when still unsupported.

A mixin of AgentTaskWorkflow. Every figure and quotation in the answer must appear in the goal or in a tool's
successful output (agents/claims.py); the check runs as a local activity, so its verdict is in history. An
unsupported answer is asked again once, on the same route, naming what nothing supports; then, if sensitivity
and policy allow, on the frontier ("escalated: answer not supported ..."); otherwise the run reports it as it
is, flagged: ``answer_supported`` false with the claims, in the result, the run span, the memo and the
``StakeflowAnswerSupported`` search attribute. Runs of earlier releases carry ``check_answer = False``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from opentelemetry import trace as otel_trace

    from stakeflow.agents import prompts
    from stakeflow.agents.claims import AnswerCheck, AnswerCheckRequest, Observation, missing_files
    from stakeflow.agents.policy import decide_route, escalate_unsupported
    from stakeflow.agents.types import ModelCallRequest, ModelCallResult, RouteDecision, StepRecord, TaskResult
    from stakeflow.core import semconv as sc
    from stakeflow.core.contracts import KEYS, Public
    from stakeflow.workflows.calls import check_answer
    from stakeflow.workflows.model_steps import ModelSteps
    from stakeflow.workflows.tally import tally

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractAsyncContextManager


class Answering(ModelSteps):
    """The answer call and the answer check."""

    _step_span: Callable[[int, str], AbstractAsyncContextManager[None]]  # the workflow's
    _emit: Callable[..., None]  # RunEvents'

    async def _answer(self, result: TaskResult) -> str:
        req = self._req
        decision = decide_route(self._facts(None, tally(self._progress.steps).stakes), req.routing, req.queue_prefix)
        result.answer_route = decision
        index = len(self._progress.steps) + 1
        seen = self._observed()  # the steps are done: what the answer is checked against is fixed now
        missing = self._missing(seen)
        call = ModelCallRequest(
            purpose="answer",
            step=index,
            system=prompts.with_role(req.instructions, prompts.ANSWER_SYSTEM),
            prompt=prompts.answer_prompt(req.goal, self._progress.steps, missing),
            stream=True,  # the activity publishes the text as it comes (activities/model_stream.py)
        )
        record = StepRecord(index=index, title="answer")
        self._emit("step_started", step=index, title="answer")
        async with self._step_span(index, "answer"):
            reply, decision = await self._call_model(call, decision, record, label="answer")
            self._append_answer(reply)
            self._mark(decision)
            answer = (reply.text or "").strip()
            if req.routing.check_answer:
                answer, decision = await self._checked(call, answer, decision, record, seen, missing)
        result.answer_route = decision
        return answer

    def _append_answer(self, reply: ModelCallResult) -> None:
        """What of a streamed answer its activity left to the run's events (activities/model_stream.py): the rest
        of the text, and its ``answer_started`` if the activity sent none. A state change, no command."""
        text = reply.text or ""
        if not reply.stream_call or len(text) <= reply.stream_sent:
            return
        if not reply.stream_sent:
            self._emit("answer_started", call=reply.stream_call, route=reply.route, model=reply.model)
        self._emit("answer_delta", call=reply.stream_call, text=text[reply.stream_sent :])

    async def _checked(
        self,
        call: ModelCallRequest,
        answer: str,
        decision: RouteDecision,
        record: StepRecord,
        seen: AnswerCheckRequest,
        missing: list[str],
    ) -> tuple[str, RouteDecision]:
        """The answer once the check has passed, or after the re-ask and the escalation it allows; flagged if not.
        ``seen``: what the run observed (``_observed``); ``missing``: the files the answer must say are absent."""
        req = self._req
        check = await self._check(seen, answer)
        if not check.supported:
            again = call.model_copy(
                update={
                    "round": 2,
                    "prompt": prompts.reask_prompt(
                        req.goal, self._progress.steps, answer, check.unsupported_claims, missing
                    ),
                }
            )
            reply, decision = await self._call_model(again, decision, record, label="answer · re-asked")
            self._append_answer(reply)
            answer = (reply.text or "").strip()
            check = await self._check(seen, answer)
        if not check.supported:
            escalated, why_not = escalate_unsupported(
                decision, self._sensitivity, req.routing, check.unsupported_claims, req.queue_prefix
            )
            if escalated is not None:
                self._progress.notices.append(f"answer: {escalated.reason.rsplit('; ', 1)[-1]}")
                again = call.model_copy(
                    update={
                        "round": 3,
                        "prompt": prompts.reask_prompt(
                            req.goal, self._progress.steps, answer, check.unsupported_claims, missing
                        ),
                    }
                )
                reply, decision = await self._call_model(again, escalated, record, label="answer · escalated")
                self._append_answer(reply)
                self._mark(decision)
                answer = (reply.text or "").strip()
                check = await self._check(seen, answer)
            else:
                self._progress.notices.append(
                    f"answer not supported by what the run observed ({', '.join(check.unsupported_claims)}); "
                    f"not escalated: {why_not}"
                )
        self._progress.answer_supported = check.supported
        self._progress.unsupported_claims = list(check.unsupported_claims)
        otel_trace.get_current_span().set_attributes(
            {sc.ANSWER_SUPPORTED: check.supported, sc.UNSUPPORTED_CLAIMS: list(check.unsupported_claims)}
        )
        workflow.upsert_search_attributes([KEYS["answer_supported"].value_set(check.supported)])
        verdict = "supported" if check.supported else f"unsupported: {', '.join(check.unsupported_claims)}"
        workflow.upsert_memo({"answer_check": Public(verdict)})
        return answer, decision

    def _observed(self) -> AnswerCheckRequest:
        """What the answer is checked against: the goal, every successful tool output the run kept, the
        workspace's names, how many calls failed, and the text arguments of calls in rounds whose every call
        succeeded (what a tool reached: a file it read)."""
        steps = self._progress.steps
        results = [r for s in steps for r in s.tool_results]
        reached = [
            str(value)
            for s in steps
            for rnd in s.rounds
            if (done := [r for r in s.tool_results if r.round == rnd.round]) and all(r.ok for r in done)
            for call in rnd.tool_calls
            for value in call.args.values()
            if isinstance(value, str)
        ]
        return AnswerCheckRequest(
            goal=self._req.goal,
            observations=[Observation(tool=r.tool, text=r.output) for r in results if r.ok],
            workspace_paths=self._req.workspace_paths,
            failed_calls=sum(not r.ok for r in results),
            reached=reached,
        )

    @staticmethod
    def _missing(seen: AnswerCheckRequest) -> list[str]:
        """The files the goal names that the workspace lacks and no tool reached: the answer must say so."""
        return missing_files(
            seen.goal, seen.workspace_paths, "\n".join([*(o.text for o in seen.observations), *seen.reached])
        )

    @staticmethod
    async def _check(seen: AnswerCheckRequest, answer: str) -> AnswerCheck:
        return await check_answer(seen.model_copy(update={"answer": answer}))
