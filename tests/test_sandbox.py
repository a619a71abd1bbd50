"""stakeflow's sandbox (stakeflow/temporal/sandbox.py): with a converter no serialization context changes, a
sandboxed workflow's payloads are converted without entering the sandbox, and with any other the sandbox is
Temporal's own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.converter import (
    DataConverter,
    ExternalStorage,
    PayloadCodec,
    SerializationContext,
    StorageDriver,
    WithSerializationContext,
)
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from stakeflow.temporal.codec import ENCODING, data_converter
from stakeflow.temporal.plugin import StakeflowPlugin
from stakeflow.temporal.sandbox import PASSED_THROUGH, ContextFreeSandbox, context_free, for_converter
from tests.support import make_settings
from tests.team_worker import TeamStuckWorkflow, TeamWorkflow, team_echo
from tests.test_codec import KEYS_ENV


class _ContextCodec(PayloadCodec, WithSerializationContext):
    """A codec whose output could depend on the workflow or activity it encodes for."""

    def __init__(self, context: SerializationContext | None = None) -> None:
        self.context = context

    def with_context(self, context: SerializationContext) -> _ContextCodec:
        return _ContextCodec(context)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


class _Driver(StorageDriver):
    def name(self) -> str:
        return "test-driver"

    async def store(self, context, payloads):  # pragma: no cover - never called: only its presence is checked
        raise NotImplementedError

    async def retrieve(self, context, claims):  # pragma: no cover
        raise NotImplementedError


def test_only_temporals_own_sandbox_with_a_context_free_converter_skips_the_sandbox(tmp_path):
    keyed = data_converter(make_settings(tmp_path, codec_keys=KEYS_ENV))
    assert keyed.payload_codec is not None and context_free(keyed) and context_free(DataConverter.default)
    aware = DataConverter(payload_codec=_ContextCodec())
    stored = DataConverter(external_storage=ExternalStorage(drivers=[_Driver()]))
    assert not context_free(aware) and not context_free(stored)

    sandbox = SandboxedWorkflowRunner().restrictions.with_passthrough_modules("tests")
    runner = for_converter(SandboxedWorkflowRunner(restrictions=sandbox), keyed)
    assert type(runner) is ContextFreeSandbox and runner.restrictions is sandbox  # passthrough kept
    for converter in (aware, stored):
        plain = SandboxedWorkflowRunner()
        assert for_converter(plain, converter) is plain

    class TeamSandbox(SandboxedWorkflowRunner):  # a team's own sandbox keeps its own behaviour
        pass

    for other in (TeamSandbox(), UnsandboxedWorkflowRunner()):
        assert for_converter(other, keyed) is other


async def test_a_run_under_the_plugin_converts_its_payloads_without_entering_the_sandbox(client, tmp_path, monkeypatch):
    """Every serialization-context question the worker asks is answered outside the sandbox, the payloads are still
    encrypted, and the history replays. Fails on Temporal's sandbox, which answers each inside it."""
    asked = {"context": 0, "activations": 0}
    create = SandboxedWorkflowRunner.create_instance

    def spied(self, det):
        instance = create(self, det)
        context, activate = instance.get_serialization_context, instance.activate

        def counted_context(command_info):
            asked["context"] += 1
            return context(command_info)

        def counted_activate(act):
            asked["activations"] += 1
            return activate(act)

        instance.get_serialization_context = counted_context
        instance.activate = counted_activate
        return instance

    monkeypatch.setattr(SandboxedWorkflowRunner, "create_instance", spied)
    settings = make_settings(tmp_path, codec_keys=KEYS_ENV)
    team = Client(client.service_client, namespace=client.namespace, plugins=[StakeflowPlugin(settings)])
    queue = f"team-{uuid.uuid4().hex[:8]}"
    worker = Worker(team, task_queue=queue, workflows=[TeamWorkflow], activities=[team_echo])
    runner = worker.config(active_config=True)["workflow_runner"]
    assert isinstance(runner, ContextFreeSandbox) and set(PASSED_THROUGH) <= set(
        runner.restrictions.passthrough_modules
    )

    async with worker:
        handle = await team.start_workflow(TeamWorkflow.run, "hello", id=queue, task_queue=queue)
        assert (await handle.result()).startswith("hello ")

    assert asked["activations"] >= 2 and asked["context"] == 0, asked
    history = await handle.fetch_history()
    scheduled = next(e for e in history.events if e.HasField("activity_task_scheduled_event_attributes"))
    assert scheduled.activity_task_scheduled_event_attributes.input.payloads[0].metadata["encoding"] == ENCODING
    replayed = await Replayer(workflows=[TeamWorkflow], plugins=[StakeflowPlugin(settings)]).replay_workflow(history)
    assert replayed.replay_failure is None


async def test_a_stuck_workflow_on_the_context_free_sandbox_is_reported_with_its_stack(client, tmp_path):
    """Temporal's deadlock detector finds the workflow thread through the instance (``get_thread_id``): the
    workflow task fails naming the potential deadlock and where the workflow is blocked."""
    settings = make_settings(tmp_path)
    team = Client(client.service_client, namespace=client.namespace, plugins=[StakeflowPlugin(settings)])
    queue = f"team-{uuid.uuid4().hex[:8]}"
    worker = Worker(team, task_queue=queue, workflows=[TeamStuckWorkflow])
    assert isinstance(worker.config(active_config=True)["workflow_runner"], ContextFreeSandbox)
    async with worker:
        handle = await team.start_workflow(TeamStuckWorkflow.run, id=queue, task_queue=queue)
        failed = None
        try:
            for _ in range(100):  # the first attempt fails after the 2 s timeout
                history = await handle.fetch_history()
                failed = next((e for e in history.events if e.HasField("workflow_task_failed_event_attributes")), None)
                if failed is not None:
                    break
                await asyncio.sleep(0.2)
        finally:
            await handle.terminate("test over")
    assert failed is not None, "no workflow task failed: the deadlock was not detected"
    failure = failed.workflow_task_failed_event_attributes.failure
    assert "Potential deadlock detected" in failure.message
    assert "team_worker.py" in failure.stack_trace and "time.sleep(STUCK_S)" in failure.stack_trace, failure.stack_trace
