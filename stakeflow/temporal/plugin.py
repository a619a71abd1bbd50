"""``StakeflowPlugin``: stakeflow's Temporal plugin, the one object a Client, a Worker or a Replayer takes to work
with stakeflow, following Temporal's convention (``temporalio.plugin.SimplePlugin``, as pydantic-ai's
``PydanticAIPlugin`` and the SDK's ``OpenAIAgentsPlugin`` are).

    from temporalio.client import Client
    from temporalio.worker import Worker

    from stakeflow.config import load_settings
    from stakeflow.temporal.plugin import StakeflowPlugin

    settings = load_settings()
    client = await Client.connect(settings.address, namespace=settings.temporal_namespace,
                                  plugins=[StakeflowPlugin(settings)])
    worker = Worker(client, task_queue="my-team", workflows=[MyWorkflow])  # takes the client's plugin

What every client and worker gets from it:

- the **data converter**: pydantic, and with codec keys configured the payload encryption (``codec``), so a team's
  client reads what stakeflow's workers wrote and the other way round;
- **tracing**: Temporal's OpenTelemetry interceptor, so a run is one trace from the client through the workflow to
  every activity. It needs the process's tracer provider to be replay-safe, as ``telemetry.setup_tracing`` (what
  `stakeflow worker` calls first) or ``temporalio.contrib.opentelemetry.create_tracer_provider`` installs it; in
  a process without one (a script, the tests' in-process workers) the plugin leaves tracing out and says so in
  the log, where Temporal would refuse to build the worker;
- the **sandbox**: stakeflow's pure modules (``sandbox.PASSED_THROUGH``, and OpenTelemetry when traced) passed
  through a sandboxed worker's runner, imported once per process instead of once per run; with stakeflow's
  converter the sandbox answers the worker's serialization-context questions without entering it
  (``sandbox.ContextFreeSandbox``); stakeflow's own workflows queue runs sandboxed or not as
  ``[workers] workflow_sandbox`` says.

And a worker on one of stakeflow's queues (``queue_roles``: each role's queue under the settings' prefix, and each
MCP server's own queue, a tools queue) also gets that role's workflows and activities: each activity holder says
which of its activities serve which role (``ActivityHolder.activities``), so nothing outside the holder decides.
A worker on any other queue gets only what every worker gets. `stakeflow worker` (``workers.main``) builds its
holders and passes them here; ``connect`` uses the plugin without any.

``activities`` go to every worker, whatever its queue: the Python client (``stakeflow.client.plugin``) gives the
activity that ``stakeflow.workflow.run_agent`` calls on a team's own queue to build and check a run's request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from opentelemetry import trace
from temporalio.client import ClientConfig
from temporalio.contrib.opentelemetry import OpenTelemetryPlugin, ReplaySafeTracerProvider
from temporalio.plugin import SimplePlugin
from temporalio.worker import ReplayerConfig, WorkerConfig

from stakeflow.config import Settings
from stakeflow.core.contracts import ROLES, QueueRole, queue_name
from stakeflow.temporal.codec import data_converter
from stakeflow.temporal.sandbox import for_converter, with_passthrough, workflow_runner

log = logging.getLogger("stakeflow.temporal")


def tracing_on() -> bool:
    """True when this process's tracer provider is replay-safe, as Temporal's OpenTelemetry interceptor needs."""
    return isinstance(trace.get_tracer_provider(), ReplaySafeTracerProvider)


class ActivityHolder(Protocol):
    """An object holding activities (and the clients, sessions and caches they share), which says for itself which
    of them serve which queue role."""

    def activities(self, role: QueueRole) -> Sequence[Callable[..., Any]]: ...


def queue_roles(settings: Settings) -> dict[str, QueueRole]:
    """Each task queue stakeflow's workers poll, and its role: every role's queue, and each MCP server's own queue
    (a tools queue on the host where that server lives)."""
    roles: dict[str, QueueRole] = {queue_name(role, settings.queue_prefix): role for role in ROLES}
    for server in settings.mcp.values():
        if server.task_queue:
            roles.setdefault(server.task_queue, "tools")
    return roles


class StakeflowPlugin(SimplePlugin):
    """Stakeflow's converter, codec, tracing and sandbox for any client or worker; on stakeflow's queues, also the
    role's workflows and the holders' activities (module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        holders: Sequence[ActivityHolder] = (),
        workflows: Sequence[type] = (),
        activities: Sequence[Callable[..., Any]] = (),
    ) -> None:
        self._otel = OpenTelemetryPlugin()
        self._roles = queue_roles(settings)
        self._holders = tuple(holders)
        self._workflows = tuple(workflows)
        self._sandboxed = settings.workers.workflow_sandbox
        self._said_untraced = False
        super().__init__(
            "StakeflowPlugin",
            data_converter=data_converter(settings),
            workflow_runner=with_passthrough,
            activities=list(activities) or None,  # on every worker, whatever its queue
        )

    def configure_client(self, config: ClientConfig) -> ClientConfig:
        config = super().configure_client(config)
        return self._otel.configure_client(config) if tracing_on() else config

    def configure_replayer(self, config: ReplayerConfig) -> ReplayerConfig:
        config = super().configure_replayer(config)
        return self._otel.configure_replayer(config) if tracing_on() else config

    def configure_worker(self, config: WorkerConfig) -> WorkerConfig:
        role = self._roles.get(config.get("task_queue", ""))
        if role == "workflows":  # stakeflow's own workflows: sandboxed or not as [workers] workflow_sandbox says
            config["workflow_runner"] = workflow_runner(self._sandboxed)
        config = super().configure_worker(config)
        if "workflow_runner" in config and "client" in config:
            config["workflow_runner"] = for_converter(config["workflow_runner"], config["client"].data_converter)
        if tracing_on():
            config = self._otel.configure_worker(config)
        elif not self._said_untraced:
            self._said_untraced = True
            log.info("no replay-safe tracer provider in this process: workers run untraced (telemetry.setup_tracing)")
        if role is None:  # a team's own queue: converter, codec, tracing and sandbox only
            return config
        served = [fn for holder in self._holders for fn in holder.activities(role)]
        config["activities"] = list(dict.fromkeys([*config.get("activities", []), *served]))
        if role == "workflows":
            config["workflows"] = list(dict.fromkeys([*config.get("workflows", []), *self._workflows]))
        return config
