"""A run's request, built and checked as the CLI builds it, for the client and for a team's own workflow.

``request_for`` is the one step from ``RunOptions`` to a ``TaskRequest``: ``stakeflow.services.runs.build_request``,
the CLI's and the webhook server's, given the options by their names. ``RunPreparation.prepare_run`` is the
activity ``stakeflow.workflow.run_agent`` calls on the team's own queue, since building a request reads
stakeflow.toml, the workspace and the promotions file (I/O a workflow may not do); ``plugin`` gives it to every
worker of a Temporal client.
"""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.exceptions import ApplicationError

from stakeflow.agents.types import PreparedRun, RunOptions, TaskRequest
from stakeflow.config import Settings
from stakeflow.core.contracts import PREPARE_RUN, queue_name
from stakeflow.core.errors import TASK_INVALID, StakeflowError
from stakeflow.services import runs
from stakeflow.temporal.plugin import StakeflowPlugin


def request_for(settings: Settings, options: RunOptions) -> TaskRequest:
    """The run's request, as `stakeflow run` would build it from the same options; InputError naming the fix."""
    return runs.build_request(settings, options.goal, source=options.source or "python", **options.request_args())


def prepared_run(settings: Settings, options: RunOptions) -> PreparedRun:
    """The request, and the queue, summary and details ``runs.start_run`` would start it with."""
    req = request_for(settings, options)
    return PreparedRun(
        request=req,
        task_queue=queue_name("workflows", settings.queue_prefix),
        summary=runs.run_summary(req.goal),
        details=runs.run_details(settings, req),
    )


class RunPreparation:
    """Holds the ``stakeflow.prepare_run`` activity, with the settings of the process whose worker runs it (the
    team's: as the CLI's settings are for `stakeflow run`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name=PREPARE_RUN)
    async def prepare_run(self, options: RunOptions) -> PreparedRun:
        """A refused request fails at once (``TaskInvalid``, the message naming the fix): no retry changes it."""
        try:
            return await asyncio.to_thread(prepared_run, self.settings, options)
        except StakeflowError as e:
            raise ApplicationError(str(e), type=TASK_INVALID, non_retryable=True) from None


def plugin(settings: Settings) -> StakeflowPlugin:
    """Stakeflow's plugin for a team's own Temporal client, with what ``run_agent`` needs on the team's workers:

        client = await temporalio.client.Client.connect(address, plugins=[stakeflow.client.plugin(settings)])

    ``stakeflow.Client.connect`` connects with this plugin (``client.temporal``)."""
    return StakeflowPlugin(settings, activities=[RunPreparation(settings).prepare_run])
