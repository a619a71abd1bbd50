"""The run's event stream (agents/types/events.py): steps starting and finishing, waits for approval, and the end.

A mixin of AgentTaskWorkflow, which opens the stream in its ``__init__`` (``WorkflowStream`` must be built there).
The stream is ``temporalio.contrib.workflow_streams``': an in-memory log the workflow appends to, which the answer's
``call_model`` activity appends to by signal (activities/model_stream.py), read by query (services/runs/_events.py).
Appending from workflow code issues no command and writes nothing to history: a replay rebuilds the same log from
the same decisions, so runs recorded before the stream replay unchanged; only the activity's signals are recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from temporalio.contrib.workflow_streams import WorkflowStream, WorkflowStreamState, WorkflowTopicHandle

    from stakeflow.agents.types import EventKind, RunEvent

if TYPE_CHECKING:
    from stakeflow.agents.types import StepRecord

# What a run carries across continue-as-new: its most recent events (~450 bytes each in the new generation's input,
# which tests/test_workflow.py's 200-step run bounds). A reader that joins a continued run late gets these of the
# earlier generations (the stream starts at the oldest kept), then everything since; the answer comes last, whole.
MAX_CARRIED_EVENTS = 50
# An approval's calls, whole, can be long (a file's content): the event says what waits, the progress query has it all.
MAX_WHAT_CHARS = 2000


class RunEvents:
    """Publishing to the run's event stream, and its state for continue-as-new."""

    _stream: WorkflowStream
    _events: WorkflowTopicHandle[RunEvent]

    def _emit(self, kind: EventKind, **fields: Any) -> None:
        if len(fields.get("what", "")) > MAX_WHAT_CHARS:
            fields["what"] = fields["what"][: MAX_WHAT_CHARS - 1] + "…"
        self._events.publish(RunEvent(kind=kind, **fields))

    def _emit_finished(self, record: StepRecord) -> None:
        self._emit(
            "step_finished",
            step=record.index,
            title=record.title,
            status=record.status,
            route=record.route,
            model=record.model,
        )

    def _events_state(self) -> WorkflowStreamState:
        """The stream's state for the next generation: its offsets and publishers, its last events."""
        state = self._stream.get_state()
        state.base_offset += max(0, len(state.log) - MAX_CARRIED_EVENTS)
        state.log = state.log[-MAX_CARRIED_EVENTS:]
        return state
