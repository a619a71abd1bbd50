"""The workflow sandbox of stakeflow's workers: Temporal's, with stakeflow's own deterministic modules passed through.

Temporal's sandbox re-imports, for every new run, each module the workflow imports that is not passed
through. For AgentTaskWorkflow that was ``workflows/agent_task.py`` itself, compiled from source and
executed once per run in a fresh sandbox: 14% of a worker's samples with 100 runs in flight
(bench/README.md, "concurrency.py"). Its imports already went through ``imports_passed_through()``.

Passed through here, so imported once per process:

- ``workflows``: decides only, never does I/O (no clock, random, network or files: STYLE.md); no module
  keeps state a run could change (constants, pure functions, the workflow classes).
- ``stakeflow.workflow``: ``run_agent``, what a team's own workflow calls to run an agent (the same rules).
- ``agents`` and ``stakeflow.core``: prompts, types, the stakes policy, contracts, errors, billing, semantic
  conventions: pure data and pure functions, already passed through by every import in ``workflows/``.

What passing through gives up is the sandbox's run-time check that this code calls nothing
nondeterministic. The check still runs in the test suite: ``Replayer`` uses Temporal's default, strict
sandbox, and tests/test_histories_replay.py and tests/test_history_fixtures.py replay every history the suite
produces and every recorded history of earlier releases under it.

A sandboxed worker with a converter that no serialization context changes (``context_free``: no context-aware
codec, no external storage, as stakeflow's is, encrypted or not) runs ``ContextFreeSandbox``: see its docstring.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.converter import (
    DataConverter,
    SerializationContext,
    StorageDriverStoreContext,
    WithSerializationContext,
)
from temporalio.worker import (
    UnsandboxedWorkflowRunner,
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowRunner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.workflow import Info

PASSED_THROUGH = ("stakeflow.workflows", "stakeflow.workflow", "stakeflow.agents", "stakeflow.core")


def with_passthrough(runner: WorkflowRunner | None) -> WorkflowRunner:
    """``runner`` (Temporal's default sandbox when None) with ``PASSED_THROUGH`` imported once per process instead
    of once per run, when it is a sandbox; any other runner as it is."""
    runner = runner or SandboxedWorkflowRunner()
    if not isinstance(runner, SandboxedWorkflowRunner):
        return runner
    return dataclasses.replace(runner, restrictions=runner.restrictions.with_passthrough_modules(*PASSED_THROUGH))


def workflow_runner(sandboxed: bool = True) -> WorkflowRunner:
    """Stakeflow's workflows queue's runner: the sandbox with ``PASSED_THROUGH``, or none.

    ``sandboxed=False`` (``[workers] workflow_sandbox = false``): no sandbox at all. Even with everything passed
    through, the sandbox runs each activation through ``exec`` of a small code string and checks every attribute
    access against its restrictions: 3-9% of a loaded worker's CPU per model call (bench/README.md, fifth
    session; about 10% before ``ContextFreeSandbox`` took the per-payload entries out).
    """
    return with_passthrough(None) if sandboxed else UnsandboxedWorkflowRunner()


def context_free(converter: DataConverter) -> bool:
    """Whether no serialization context can change what ``converter`` does to a workflow task's payloads.

    The worker's passes over an activation's and a completion's payloads use the codec and the external storage
    only (``temporalio.worker._workflow``: decode, encode, reference and store passes); a context reaches them
    through ``DataConverter.with_context``, which changes only what implements ``WithSerializationContext``.
    """
    return converter.external_storage is None and not isinstance(converter.payload_codec, WithSerializationContext)


@dataclass(frozen=True)
class ContextFreeSandbox(SandboxedWorkflowRunner):
    """Temporal's sandbox for a worker whose converter is ``context_free``: its instances answer the worker's
    serialization-context questions without entering the sandbox.

    The worker asks the workflow instance for a context for every payload sequence of every activation and
    completion, three passes each (codec, references, external storage: 265 questions in a 10-step
    AgentTaskWorkflow run), and the sandboxed instance answers each by ``exec`` of a code string under its import
    and builtins overrides: ~60 µs each, 15 ms a run (bench/README.md, fifth session). With a context-free
    converter every answer yields the same bytes, so the instance answers at once: no context (the worker's own
    converter) and no store target (none is used without external storage).
    """

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _ContextFreeInstance(super().create_instance(det))


class _ContextFreeInstance(WorkflowInstance):
    """A sandboxed workflow instance, its serialization-context questions answered outside it (ContextFreeSandbox)."""

    def __init__(self, sandboxed: WorkflowInstance) -> None:
        self._sandboxed = sandboxed

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        return self._sandboxed.activate(act)

    def get_serialization_context(self, command_info: object) -> SerializationContext | None:
        return None

    def get_external_store_context(self, command_info: object) -> StorageDriverStoreContext:
        return StorageDriverStoreContext(target=None)

    def get_info(self) -> Info:
        return self._sandboxed.get_info()

    def get_thread_id(self) -> int | None:
        return self._sandboxed.get_thread_id()  # the deadlock detector's stack trace


def for_converter(runner: WorkflowRunner, converter: DataConverter) -> WorkflowRunner:
    """``runner`` as a ``ContextFreeSandbox`` when it is Temporal's sandbox as it stands (a subclass keeps its own
    behaviour) and ``converter`` is ``context_free``; otherwise ``runner`` unchanged."""
    if type(runner) is not SandboxedWorkflowRunner or not context_free(converter):
        return runner
    return ContextFreeSandbox(restrictions=runner.restrictions, runner_class=runner.runner_class)
