"""Where a durable run's server-side time went, from its event history: bench/overhead.py's breakdown table,
bench/concurrency.py's and bench/segments.py's figures."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.api.enums.v1 import EventType


@dataclass
class Breakdown:
    """Where a run's server-side time went, from its event history (milliseconds, summed)."""

    wft_count: int = 0
    wft_wait: float = 0.0  # WorkflowTaskScheduled -> Started: server hands the task to the worker
    wft_run: float = 0.0  # WorkflowTaskStarted -> Completed: workflow code (+ local activities) on the worker
    act_count: int = 0
    act_wait: float = 0.0  # ActivityTaskScheduled -> Started: dispatch to an activity worker
    act_run: float = 0.0  # ActivityTaskStarted -> Completed: the activity (model call over HTTP, tool)
    markers: int = 0  # local activities (their MarkerRecorded events)
    server_total: float = 0.0  # WorkflowExecutionStarted -> Completed
    client_total: float = 0.0  # start_workflow() called -> result() returned

    def __add__(self, o: Breakdown) -> Breakdown:
        return Breakdown(**{k: getattr(self, k) + getattr(o, k) for k in self.__dataclass_fields__})

    def scaled(self, f: float) -> Breakdown:
        return Breakdown(**{k: getattr(self, k) * f for k in self.__dataclass_fields__})


def event_ms(ts) -> float:
    """A history event's timestamp in ms."""
    return ts.seconds * 1000.0 + ts.nanos / 1e6


def breakdown_of(history, client_ms: float) -> Breakdown:
    b = Breakdown(client_total=client_ms)
    scheduled: dict[int, float] = {}
    started: dict[int, float] = {}
    first = last = None
    for e in history.events:
        t = event_ms(e.event_time)
        first = t if first is None else first
        last = t
        kind = e.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            scheduled[e.event_id] = t
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            sid = e.workflow_task_started_event_attributes.scheduled_event_id
            started[e.event_id] = t
            b.wft_wait += t - scheduled[sid]
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            b.wft_count += 1
            b.wft_run += t - started[e.workflow_task_completed_event_attributes.started_event_id]
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[e.event_id] = t
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started[e.event_id] = t
            b.act_wait += t - scheduled[e.activity_task_started_event_attributes.scheduled_event_id]
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            b.act_count += 1
            b.act_run += t - started[e.activity_task_completed_event_attributes.started_event_id]
        elif (
            kind == EventType.EVENT_TYPE_MARKER_RECORDED
            and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
        ):
            b.markers += 1
    b.server_total = (last or 0.0) - (first or 0.0)
    return b
