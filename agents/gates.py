"""Webhook storms: what a hook's gate admits (``[hooks.<name>] max_runs_per_minute``, ``max_concurrent_runs``).

Pure models; the gate is a workflow per hook (workflows/hook_gate.py), so every server process counts in one
place, exactly, and the count survives their restarts.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

WINDOW_S = 60.0  # max_runs_per_minute counts the runs admitted in the last minute


class AdmitAsk(BaseModel):
    """Input of the gate's ``admit`` update: one delivery's run, and the hook's limits where it arrived."""

    workflow_id: str = ""
    max_runs_per_minute: int | None = None
    max_concurrent_runs: int | None = None
    finished: list[str] = Field(default_factory=list)  # admitted runs the asker found ended: no longer running


class Admission(BaseModel):
    """The gate's answer: admitted, or why not and when to come back."""

    admitted: bool = True
    reason: str = ""
    retry_after_s: float = 0.0
    # At max_concurrent_runs: the runs the gate counts as running, with their age in seconds (the asker checks
    # which have ended and asks again with them in ``finished``).
    leases: dict[str, float] = Field(default_factory=dict)


class GateState(BaseModel):
    """Input of ``HookGateWorkflow``, carried across continue-as-new."""

    hook: str = ""
    admitted: dict[str, str] = Field(default_factory=dict)  # workflow id -> when admitted (ISO), last minute only
    leases: dict[str, str] = Field(default_factory=dict)  # workflow id -> when admitted, until found ended
    generation: int = 1
    max_history_events: int = 10_000
