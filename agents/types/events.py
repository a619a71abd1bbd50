"""What a run tells the people watching it while it runs (issue 25 §3): the events of its stream.

A run's events are one offset-addressed log (``temporalio.contrib.workflow_streams``, topic ``EVENTS_TOPIC`` in
stakeflow/core/contracts.py). The workflow appends the step events and ``done``; the ``call_model`` activity that
writes the answer appends ``answer_started`` and the ``answer_delta`` batches as the model writes them, but the last:
the workflow appends that one from the activity's result (``stream_call``, ``stream_sent``), with the
``answer_started`` too when the call sent nothing (a fast answer, a local activity).

The rule a consumer follows for the answer: ``answer_started`` (a new answer call, a re-asked or escalated answer,
or a retried attempt after a worker died) discards any partial answer held so far, and only the deltas whose
``call`` is the last ``answer_started``'s are appended. ``done`` carries the final answer whole: it replaces
whatever was put together from the deltas.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

EventKind = Literal["step_started", "step_finished", "waiting_for_approval", "answer_started", "answer_delta", "done"]


class RunEvent(BaseModel):
    """One event of a run's stream; the fields a kind does not use keep their defaults."""

    kind: EventKind = "step_started"
    step: int = 0  # 0 = plan, 1..n = plan steps, n+1 = answer
    title: str = ""  # step_started, step_finished, waiting_for_approval: the step's title
    status: str = ""  # step_finished: the step's status; done: completed, failed or canceled
    route: str = ""  # step_finished, answer_started: open or frontier
    model: str = ""
    # answer_started / answer_delta: which model call wrote it, "<step>.<round>.<attempt>" (a retried attempt, a
    # re-asked answer each have their own), so a consumer never glues two answers together.
    call: str = ""
    text: str = ""  # answer_delta: the text written since the last delta; done: the final answer
    what: str = ""  # waiting_for_approval: what would happen if approved
    error: str = ""  # done, when the run did not complete: why
    offset: int = 0  # set by the reader: the event's place in the run's stream (an SSE event's id)


class AnswerSoFar:
    """The answer as a consumer shows it, from a run's events in order (the rule in the module docstring).

    ``apply`` returns what changed: "reset" (a new answer call: the text shown so far is void), "delta" (``text``
    grew by the event's text), "final" (``text`` is the final answer), or "" (nothing, e.g. a stale attempt's delta).
    """

    def __init__(self) -> None:
        self.text = ""
        self.call = ""
        self.final: str | None = None

    def apply(self, event: RunEvent) -> str:
        if event.kind == "answer_started":
            self.call, self.text = event.call, ""
            return "reset"
        if event.kind == "answer_delta" and event.call == self.call:
            self.text += event.text
            return "delta"
        if event.kind == "done" and event.status == "completed":
            self.final = self.text = event.text
            return "final"
        return ""
