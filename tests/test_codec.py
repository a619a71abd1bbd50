"""Payload encryption: what the server stores is ciphertext, and everything still works.

Runs on the session's dev server with real workers whose client encrypts (stakeflow.temporal.connection.connect
with keys configured); the raw history, fetched by a client without keys, is scanned for the goal, the
prompt, a tool's output and a file's content. tests/test_histories_replay.py replays these histories with
``KEYRING`` (they must replay like any other) and scans every history for ``KEY_SECRETS``.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType

from stakeflow.agents.types import TaskResult
from stakeflow.core.errors import ConfigError
from stakeflow.services import runs
from stakeflow.temporal.codec import ENCODING, CodecKeyError, EncryptionCodec, data_converter, parse_keys
from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer
from tests.support import make_settings, open_settings, running_workers


def _key(label: str) -> str:
    return base64.b64encode(hashlib.sha256(label.encode()).digest()).decode()


RETIRED = ("2026-01", _key("stakeflow test key, retired"))
CURRENT = ("2026-12", _key("stakeflow test key, current"))
KEYS_ENV = ",".join(f"{i}:{k}" for i, k in (RETIRED, CURRENT))  # the last one encrypts
KEY_SECRETS = [RETIRED[1], CURRENT[1]]  # tests/test_histories_replay.py scans every history for these
KEYRING = parse_keys(KEYS_ENV, "tests", separator=":")

GOAL_MARK = "GOAL-MARK-7f3e quarterly figures for the board"
FILE_MARK = "FILE-MARK-b81c Revenue grew 12% in the Nordic region"
ANSWER_MARK = "ANSWER-MARK-44aa revenue grew"


async def sealed_client(settings):
    """A client that encrypts as ``stakeflow.temporal.connection.connect`` makes it (the same data converter), without
    the OpenTelemetry plugin, which in-process workers cannot use without a process-wide tracer provider
    (the worker processes of tests/test_topology.py use ``connect`` itself)."""
    from temporalio.client import Client

    return await Client.connect(
        settings.address, namespace=settings.temporal_namespace, data_converter=data_converter(settings)
    )


def codec_settings(tmp_path, client, **kw):
    return make_settings(tmp_path, temporal_address=client.service_client.config.target_host, codec_keys=KEYS_ENV, **kw)


# --- the codec itself ----------------------------------------------------------------------------


async def test_round_trip_rotation_and_unknown_keys():
    converter = data_converter(make_settings_stub())
    [sealed] = await converter.encode(["a goal"])
    assert sealed.metadata["encoding"] == ENCODING and sealed.metadata["encryption-key-id"] == b"2026-12"
    assert b"a goal" not in sealed.data
    assert await converter.decode([sealed]) == ["a goal"]

    # Encrypted under the retired key (by a process configured before the rotation): still decodes.
    old = EncryptionCodec(parse_keys(f"{RETIRED[0]} {RETIRED[1]}", "old key file"))
    [plain] = converter.payload_converter.to_payloads(["written before the rotation"])
    assert await converter.decode([old.encrypt(plain)]) == ["written before the rotation"]

    # Not encrypted (a history from before the keys were configured): read as it is.
    assert await converter.decode([plain]) == ["written before the rotation"]

    # Under a key that is not configured: a clear error naming the id and the fix.
    stranger = EncryptionCodec(parse_keys(f"2025-06 {_key('gone')}", "elsewhere"))
    with pytest.raises(CodecKeyError) as e:
        await converter.decode([stranger.encrypt(plain)])
    assert "encrypted with key id '2025-06', which is not configured here (configured: 2026-01, 2026-12" in str(e.value)
    assert "add that key back" in str(e.value)

    # A key id relabelled onto another payload's key, or altered bytes: refused, never misread.
    forged = Payload(metadata={"encoding": ENCODING, "encryption-key-id": b"2026-01"}, data=sealed.data)
    with pytest.raises(CodecKeyError) as e:
        await converter.decode([forged])
    assert "does not open with the key configured under that id" in str(e.value)


def make_settings_stub():
    from stakeflow.config import Settings

    return Settings(codec_keys=KEYS_ENV)


@pytest.mark.parametrize(
    "text,needle",
    [
        ("k1 notbase64!!", "the key is not base64"),
        (f"k1 {base64.b64encode(b'short').decode()}", "a key is 32 bytes (AES-256), this one is 5"),
        (f"k1 {_key('a')}\nk1 {_key('b')}", "key id 'k1' is listed twice"),
        ("# only a comment\n", "no codec keys in"),
        ("justonefield", "is not '<key id> <base64>'"),
    ],
)
def test_bad_key_files_name_the_entry_and_the_fix(tmp_path, text, needle):
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        data_converter(make_settings(tmp_path, codec_keys_file=path))
    assert needle in str(e.value)


def test_the_key_file_lists_oldest_first_and_the_last_encrypts(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"# rotated 2026-12-01\n{RETIRED[0]} {RETIRED[1]}\n{CURRENT[0]} {CURRENT[1]}  # current\n")
    codec = data_converter(make_settings(tmp_path, codec_keys_file=path)).payload_codec
    assert codec.keyring.ids == ["2026-01", "2026-12"] and codec.keyring.current[0] == "2026-12"
    assert CURRENT[1] not in repr(codec.keyring)


# --- on the server ---------------------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text(FILE_MARK + "\n")
    return ws


async def test_no_history_event_holds_a_goal_prompt_tool_output_or_file_in_clear(client, tmp_path, workspace):
    """A run that reads a file, waits for approval of a write, and answers; then its raw history."""
    with FakeOpenAIServer(model="qwen-test") as open_fake:
        # The answer takes ~0.5 s to stream, so batches of it are signalled (one written faster comes whole with the
        # activity's result, and is sealed as that is).
        open_fake.chunk_delay_s = 0.1
        open_fake.script(
            agent(
                plan(("Read the notes", "read_file"), ("Write the summary", "write_file", "high")),
                {
                    1: call("read_file", path="notes.txt"),
                    2: call("write_file", path="summary.txt", content=ANSWER_MARK),
                },
                answer=ANSWER_MARK,
            )
        )
        settings = codec_settings(
            tmp_path, client, open_base_url=open_fake.url, open_model="qwen-test", open_dialect="vllm"
        )
        sealed = await sealed_client(settings)
        req = runs.build_request(settings, GOAL_MARK, workspace=workspace)
        async with running_workers(sealed, settings):
            handle = await runs.start_run(sealed, settings, req)
            from tests.test_approvals import wait_for_approval

            await wait_for_approval(handle, 2)
            record = await runs.decide_step(sealed, handle.id, 2, True, "fine", "tester")
            result = await handle.result()
    assert record.decision == "approved"
    assert result.status == "completed" and result.answer == ANSWER_MARK
    assert (workspace / "summary.txt").read_text() == ANSWER_MARK
    # The model really saw the goal and the file (the prompts that went through history).
    assert any(GOAL_MARK in c.raw for c in open_fake.calls) and any(FILE_MARK in c.raw for c in open_fake.calls)

    raw = await client.get_workflow_handle(handle.id).fetch_history()  # the session's client has no keys
    text = raw.to_json()
    for mark in (GOAL_MARK, FILE_MARK, ANSWER_MARK, "Read the notes", "notes.txt", "Revenue grew"):
        assert mark not in text, f"{mark!r} is in the history in clear"
    for secret in KEY_SECRETS:
        assert secret not in text
    # The answer's stream: its deltas' signals are sealed too (their items are base64 inside: no mark would show).
    signals = [e for e in raw.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
    assert signals and all(
        p.metadata["encoding"] == ENCODING
        for e in signals
        for p in e.workflow_execution_signaled_event_attributes.input.payloads
    )
    started = raw.events[0].workflow_execution_started_event_attributes
    assert started.input.payloads[0].metadata["encoding"] == ENCODING
    assert raw.events[0].user_metadata.summary.metadata["encoding"] == ENCODING  # the static summary is a payload too
    # Search attributes stay readable without keys: the Web UI and `stakeflow list` filter on them.
    desc = await client.get_workflow_handle(handle.id).describe()
    assert desc.typed_search_attributes  # decoded with no codec at all
    stakes = [p.value for p in desc.typed_search_attributes if p.key.name == "StakeflowStakes"]
    assert stakes == ["high"]
    # The cost line is a Public memo value: in clear (the Web UI shows it without keys), and the same with them.
    assert desc.raw_description.workflow_execution_info.memo.fields["cost"].metadata["encoding"] == b"json/plain"
    assert (await desc.memo_value("cost")).startswith("cost ")
    keyed = await sealed.get_workflow_handle(handle.id).describe()
    assert (await keyed.memo_value("cost")).startswith("cost ")


async def test_a_failed_step_keeps_its_message_out_of_the_history(client, tmp_path):
    """Failure messages are not payloads in Temporal; with keys on they are moved into an encrypted one."""
    from tests.fakes import Reply

    with FakeOpenAIServer(model="qwen-test") as open_fake:
        open_fake.script(agent(plan(("Compute", "calculator")), {1: Reply.raw("not json at all FAIL-MARK-19c2")}))
        settings = codec_settings(
            tmp_path, client, open_base_url=open_fake.url, open_model="qwen-test", open_dialect="vllm"
        )
        sealed = await sealed_client(settings)
        req = runs.build_request(settings, "What is 2+2? " + GOAL_MARK, sensitivity="private")
        async with running_workers(sealed, settings):
            handle = await runs.start_run(sealed, settings, req)
            with pytest.raises(runs.RunFailed) as e:
                await runs.wait_result(handle)
    assert "step 1/1 'Compute' failed" in str(e.value)  # decoded by the client with the keys
    text = (await client.get_workflow_handle(handle.id).fetch_history()).to_json()
    assert "Compute" not in text and "FAIL-MARK-19c2" not in text and GOAL_MARK not in text
    assert "Encoded failure" in text  # what a reader without keys sees


async def test_a_history_written_in_clear_is_still_read_after_keys_are_configured(client, tmp_path):
    with FakeOpenAIServer(model="qwen-test") as open_fake:
        open_fake.script(agent(plan(("Think", None)), {1: {"tool_calls": [], "result": "ok"}}, answer="in clear"))
        plain = open_settings(tmp_path, client, open_fake)
        async with running_workers(client, plain):
            handle = await runs.start_run(client, plain, runs.build_request(plain, "Think in clear"))
            await handle.result()
    sealed = await sealed_client(codec_settings(tmp_path, client))
    result = await sealed.get_workflow_handle(handle.id, result_type=TaskResult).result()
    assert result.answer == "in clear"


async def test_a_client_without_the_keys_cannot_read_a_sealed_result(client, tmp_path):
    with FakeOpenAIServer(model="qwen-test") as open_fake:
        open_fake.script(agent(plan(("Think", None)), {1: {"tool_calls": [], "result": "ok"}}, answer=ANSWER_MARK))
        settings = codec_settings(
            tmp_path, client, open_base_url=open_fake.url, open_model="qwen-test", open_dialect="vllm"
        )
        sealed = await sealed_client(settings)
        async with running_workers(sealed, settings):
            handle = await runs.start_run(sealed, settings, runs.build_request(settings, GOAL_MARK))
            await handle.result()
    other = await sealed_client(
        make_settings(
            tmp_path,
            temporal_address=client.service_client.config.target_host,
            codec_keys=f"2025-06:{_key('another deployment')}",
        )
    )
    with pytest.raises(CodecKeyError) as e:
        await other.get_workflow_handle(handle.id, result_type=TaskResult).result()
    assert "key id '2026-12', which is not configured here (configured: 2025-06" in str(e.value)
    history = json.dumps((await handle.fetch_history()).to_json_dict())
    assert ANSWER_MARK not in history


async def test_public_memo_values_stay_readable_without_keys(client, tmp_path):
    """A webhook seal's memo (its run's workflow id) is a Public value: in clear on the server; everything
    else of the seal, its static summary included, is encrypted."""
    from datetime import timedelta

    from stakeflow.webhooks.temporal import Seal, _claim

    sealed = await sealed_client(codec_settings(tmp_path, client))
    seal = Seal(f"seal-test-{tmp_path.name}", timedelta(minutes=2), summary="delivery of " + GOAL_MARK)
    assert await _claim(sealed, seal, "hook-gh-d-public") == "hook-gh-d-public"
    raw = await client.get_workflow_handle(seal.workflow_id).describe()  # no keys
    memo = raw.raw_description.workflow_execution_info.memo.fields["run"]
    assert memo.metadata["encoding"] == b"json/plain" and json.loads(memo.data) == "hook-gh-d-public"
    assert await raw.memo_value("run") == "hook-gh-d-public"
    history = (await client.get_workflow_handle(seal.workflow_id).fetch_history()).to_json()
    assert GOAL_MARK not in history  # the summary was encrypted
    # The same claim again reads the owner back through the codec (a Public value decodes as it is).
    assert await _claim(sealed, seal, "hook-gh-d-other") == "hook-gh-d-public"
    await client.get_workflow_handle(seal.workflow_id).terminate("test")
