"""A team's own workflow that runs a stakeflow agent as one of its steps (tests/test_run_agent.py), written as a team
would write it: its own module and input, ``run_agent`` called from workflow code, the answer used in its reply,
a failed run handed to a person.

Its histories recorded on earlier commits (tests/histories/team/) replay on it in every run of the suite: a change
here that alters the commands it issues needs a new recording, as a team's own change would need versioning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from temporalio import workflow
from temporalio.exceptions import ApplicationError, ChildWorkflowError

from stakeflow.workflow import run_agent


@dataclass
class Ticket:
    id: str
    question: str
    workspace: str
    tools: list[str] = field(default_factory=lambda: ["read_file"])
    stakes: str | None = None  # as the team's form sends it: run_agent checks it
    max_steps: int | None = None
    budget_tokens: int | None = None
    agent_run_id: str | None = None


@workflow.defn(name="TeamTicketWorkflow")
class TeamTicketWorkflow:
    @workflow.run
    async def run(self, ticket: Ticket) -> str:
        try:
            result = await run_agent(
                ticket.question,
                workspace=ticket.workspace,
                tools=ticket.tools,
                stakes=ticket.stakes,  # type: ignore[arg-type]  # the form's text, checked by run_agent
                max_steps=ticket.max_steps,
                budget_tokens=ticket.budget_tokens,
                id=ticket.agent_run_id,
            )
        except ChildWorkflowError as e:
            reason = e.cause.message if isinstance(e.cause, ApplicationError) else str(e.cause)
            return f"ticket {ticket.id}: handed to a person ({reason})"
        routes = ", ".join(f"{s.index} {s.route}" for s in result.steps)
        return f"ticket {ticket.id}: {result.answer} [steps: {routes}]"
