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
"""

from __future__ import annotations

import dataclasses

from temporalio.worker import UnsandboxedWorkflowRunner, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

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
    through, the sandbox runs each activation and each payload's serialization context through ``exec`` of a
    small code string, and checks every attribute access against its restrictions: about 10% of a loaded
    worker's samples (bench/README.md).
    """
    return with_passthrough(None) if sandboxed else UnsandboxedWorkflowRunner()
