"""The learn loop, as a team uses it: captured runs, `stakeflow learn`, a trainer on the train queue, the adapter
loaded into (fake) vLLM, judged against the current open model on the held-out examples, promoted only when
better, and the agent's next run using it. Also `stakeflow models lora` against a server with runtime LoRA on
and off, `stakeflow evals replay` against another server, a failing trainer, and a train worker killed mid-run.

Real dev server, real workers (in-process, and a `stakeflow worker` process for the crash), real CLI; only
the model APIs are fakes on 127.0.0.1 (tests/fake_vllm.py, tests/fakes).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from stakeflow.cli import cli
from stakeflow.config import load_settings
from stakeflow.core.contracts import PROGRESS_QUERY
from stakeflow.services import runs
from tests.agent_script import agent, call, plan, think
from tests.fake_vllm import FakeVLLMServer
from tests.fakes import FakeAnthropicServer, output_schema, prompt_text
from tests.support import REPO, running_workers, spawn_worker, worker_env, worker_log

BASE = "qwen-test"
ROLES = ("workflows", "open", "frontier", "tools", "train")
GOLD = agent(
    plan(("GOLD: read the notes", "read_file")),
    {1: call("read_file", path="notes.txt")},
    answer="GOLD summary of the notes",
)
WEAK = agent(plan(("look around", None)), {1: think("nothing to do")}, answer="no idea")
ANSWERS = re.compile(r"Answer A:\n(.*)\n\nAnswer B:\n(.*)\n\nWhich is better\?", re.S)


def judge_or(inner):
    """The frontier: a judge preferring the answer in the frontier's own words (GOLD), else the agent."""

    def respond(body):
        if "winner" in ((output_schema(body) or {}).get("properties") or {}):
            a, b = ANSWERS.search(prompt_text(body)).groups()
            if a == b or ("GOLD" in a) == ("GOLD" in b):
                return {"winner": "tie", "reason": "equivalent"}
            return {"winner": "A" if "GOLD" in a else "B", "reason": "follows the request"}
        return inner(body)

    return respond


class Models:
    """Fake vLLM (base model: weak answers; adapters: as good as the frontier, unless ``adapters_learn`` is
    off) and the fake frontier (gold answers, and the judge)."""

    def __init__(self) -> None:
        self.vllm = FakeVLLMServer(base_model=BASE)
        self.frontier = FakeAnthropicServer()
        self.adapters_learn = True
        self.vllm.script(lambda body: (GOLD if body["model"] != BASE and self.adapters_learn else WEAK)(body))
        self.frontier.script(judge_or(GOLD))

    def __enter__(self) -> Models:
        self.vllm.start()
        self.frontier.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.vllm.stop()
        self.frontier.stop()


def trainer_argv(*extra: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "tests" / "fake_trainer.py"),
        "--train",
        "{train}",
        "--out",
        "{output}",
        "--base",
        "{base_model}",
        *extra,
    ]


OPEN_KEY = "sk-vllm-SECRET-learn"  # the open endpoint's key: sent to it, never to a candidate's server


@pytest.fixture
def models():
    with Models() as m:
        yield m


@pytest.fixture
def team(tmp_path, client, models, monkeypatch):
    """A team's setup, as environment and stakeflow.toml: an agent, capture on, a trainer command."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    prefix = f"t{tmp_path.name[-8:].replace('-', '').replace('_', '')}"
    for key, value in {
        "STAKEFLOW_HOME": str(home),
        "STAKEFLOW_TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "STAKEFLOW_QUEUE_PREFIX": prefix,
        "STAKEFLOW_OPEN_BASE_URL": models.vllm.url,
        "STAKEFLOW_OPEN_MODEL": BASE,
        "ANTHROPIC_API_KEY": "sk-ant-learn-test",
        "ANTHROPIC_BASE_URL": models.frontier.url,
        "STAKEFLOW_OPEN_API_KEY": OPEN_KEY,
    }.items():
        monkeypatch.setenv(key, value)
    write_config(home, trainer_argv())
    return home


def write_config(home: Path, trainer: list[str], heartbeat_s: float = 120.0) -> None:
    (home / "stakeflow.toml").write_text(
        '[agents.notes]\ninstructions = "You summarise notes."\ntools = ["read_file"]\n\n'
        "[dataset]\ncapture = true\n\n"
        f"[learn]\ntrainer = {json.dumps(trainer)}\nmin_examples = 3\nsplit = 0.5\nheartbeat_s = {heartbeat_s}\n"
    )


def stakeflow(*args: str) -> tuple[int, str]:
    """The CLI as a user runs it: exit code, and stdout (with --json) or everything it printed."""
    ran = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return ran.exit_code, ran.stdout if "--json" in args else ran.output


async def capture_runs(client, settings, workspace: Path, n: int = 8) -> None:
    """``n`` runs of the agent whose high-stakes steps the frontier answers: captured examples."""
    workspace.mkdir(exist_ok=True)
    (workspace / "notes.txt").write_text("Revenue grew 12%.\n")
    for i in range(n):
        req = runs.build_request(
            settings, f"Summarise notes.txt for team {i}", workspace=workspace, agent="notes", stakes="high"
        )
        result = await (await runs.start_run(client, settings, req)).result()
        assert result.answer == "GOLD summary of the notes"


async def test_learn_promotes_a_better_adapter_and_the_agents_runs_use_it(client, tmp_path, team, models):
    settings = load_settings()
    async with running_workers(client, settings, ROLES):
        await capture_runs(client, settings, tmp_path / "ws")
        code, out = await asyncio.to_thread(stakeflow, "learn", "--agent", "notes", "--json")
        assert code == 0, out
        learned = json.loads(out)
        adapter = learned["adapter"]
        assert learned["promoted"] is True, learned["reason"]
        assert learned["candidate"]["n"] == learned["current"]["n"] == learned["test_examples"] > 0
        assert learned["candidate"]["agreeing"] > learned["current"]["agreeing"]
        assert f"{adapter} agreed with the reference on 100%" in learned["reason"]
        assert models.vllm.adapters == {adapter: learned["adapter_path"]}  # loaded, and left loaded
        assert (Path(learned["adapter_path"]) / "adapter_config.json").is_file()
        assert "training examples" in (Path(learned["adapter_path"]).parent / "trainer.log").read_text()

        # Every stage is in the workflow's current details, which the Web UI shows (the metadata query).
        handle = client.get_workflow_handle(learned["workflow_id"])
        meta = await handle.query("__temporal_workflow_metadata")
        details = meta.current_details
        for stage in ("exporting the dataset of agent notes", "training", "loading adapter", "judging", "promoting"):
            assert stage in details, details
        assert (await handle.query(PROGRESS_QUERY, result_type=list[str]))[-1] == learned["reason"]

        # The agent's next run uses the adapter; `stakeflow agents` says so.
        before = len(models.vllm.calls)
        req = runs.build_request(load_settings(), "Summarise notes.txt", workspace=tmp_path / "ws", agent="notes")
        assert req.routing.open.model == adapter
        await (await runs.start_run(client, settings, req)).result()
        assert {c.body["model"] for c in models.vllm.calls[before:]} == {adapter}
        code, out = await asyncio.to_thread(stakeflow, "agents")
        assert f"open model {adapter} (promoted by stakeflow learn)" in out

        # A replay against another server (--base-url): the same held-out examples, side by side.
        with FakeVLLMServer(base_model="other-model") as other:
            other.script(GOLD)
            code, out = await asyncio.to_thread(
                stakeflow,
                "evals",
                "replay",
                "--model",
                "other-model",
                "--base-url",
                other.url,
                "--agent",
                "notes",
                "--json",
            )
        assert code == 0, out
        rows = {r["model"].split(" @ ")[0]: r for r in json.loads(out)["models"]}
        assert rows["other-model"]["agreement"] == 1.0 and rows["other-model"]["n"] == learned["test_examples"]
        assert rows[adapter]["n"] == learned["test_examples"]  # the current open model is the promoted one now
        assert len(other.calls) == learned["test_examples"]
        # The open model's key went to the open endpoint only, never to the candidate's server (issue 20 §5).
        assert all(OPEN_KEY not in str(c.headers) for c in other.calls)
        assert models.vllm.calls[-1].headers["authorization"] == f"Bearer {OPEN_KEY}"

    code, out = stakeflow("learn", "--agent", "notes", "--revert")
    assert code == 0 and f"{adapter} no longer promoted" in out
    assert runs.build_request(load_settings(), "Go", agent="notes").routing.open.model == BASE


async def test_an_adapter_no_better_is_unloaded_and_not_promoted(client, tmp_path, team, models):
    models.adapters_learn = False  # the adapter answers like the base model
    settings = load_settings()
    async with running_workers(client, settings, ROLES):
        await capture_runs(client, settings, tmp_path / "ws", n=6)
        code, out = await asyncio.to_thread(stakeflow, "learn", "--agent", "notes")
    assert code == 0, out
    assert "not promoted, unloaded" in out and "needs 2% more agreement" in out
    assert models.vllm.adapters == {}
    unloads = [r for r in models.vllm.requests if r.path.endswith("/unload_lora_adapter")]
    assert len(unloads) == 1
    assert runs.build_request(load_settings(), "Go", agent="notes").routing.open.model == BASE


async def test_a_failing_trainer_fails_the_learn_run_with_its_log_tail(client, tmp_path, team, models):
    write_config(team, trainer_argv("--fail"))
    settings = load_settings()
    async with running_workers(client, settings, ROLES):
        code, out = await asyncio.to_thread(stakeflow, "learn", "--agent", "notes")
        assert code == 1
        assert "failed at export: 0 training and 0 held-out examples of agent notes" in out
        assert "[dataset] capture = true" in out
        await capture_runs(client, settings, tmp_path / "ws", n=6)
        code, out = await asyncio.to_thread(stakeflow, "learn", "--agent", "notes")
    assert code == 1
    assert "failed at train: the trainer exited with code 1; last lines of" in out
    assert "torch.OutOfMemoryError: CUDA out of memory" in out
    assert models.vllm.adapters == {} and not [r for r in models.vllm.requests if "lora" in r.path]


async def test_the_learn_run_survives_its_train_worker_being_killed(client, tmp_path, team, models):
    write_config(team, trainer_argv("--seconds", "3"), heartbeat_s=3)
    settings = load_settings()
    async with running_workers(client, settings, ("workflows", "open", "frontier", "tools")):
        await capture_runs(client, settings, tmp_path / "ws", n=6)
        handle, _ = await tasks_start_learn(settings)
        env = worker_env(
            team,
            client,
            settings.queue_prefix,
            STAKEFLOW_OPEN_BASE_URL=models.vllm.url,
            STAKEFLOW_OPEN_MODEL=BASE,
            ANTHROPIC_API_KEY="sk-ant-learn-test",
            ANTHROPIC_BASE_URL=models.frontier.url,
        )
        train = spawn_worker(env, "train")
        try:
            await _wait_for(lambda: "step 3" in _trainer_log(team))
            train.send_signal(signal.SIGKILL)
            train.wait(10)
            train = spawn_worker(env, "train")
            result = await asyncio.wait_for(handle.result(), 120)
        finally:
            train.terminate()
            train.wait(30)
    assert result.promoted, result.reason
    log = _trainer_log(team)
    assert log.count("$ ") == 2, log  # the trainer ran again on the new worker
    assert "adapter written" in log, worker_log(env)


async def tasks_start_learn(settings):
    from stakeflow.services.learn import start_learn

    return await start_learn(settings, "notes")


def _trainer_log(home: Path) -> str:
    logs = list((home / "learn").glob("*/trainer.log"))
    return logs[0].read_text() if logs else ""


async def _wait_for(predicate, timeout: float = 60) -> None:
    for _ in range(int(timeout * 10)):
        if predicate():
            return
        await asyncio.sleep(0.1)
    pytest.fail("timed out")


def test_lora_adapters_load_list_and_unload_on_vllm(tmp_path, monkeypatch):
    adapter = FakeVLLMServer.adapter_folder(tmp_path / "support-v3", BASE)
    with FakeVLLMServer(base_model=BASE) as vllm:
        monkeypatch.setenv("STAKEFLOW_OPEN_BASE_URL", vllm.url)
        monkeypatch.setenv("STAKEFLOW_OPEN_MODEL", BASE)
        code, out = stakeflow("models", "lora", "load", "support-v3", str(adapter))
        assert code == 0 and "added successfully" in out, out
        code, out = stakeflow("models")
        assert f"adapter support-v3 (LoRA on {BASE})" in out, out
        code, out = stakeflow("models", "lora", "load", "support-v3", str(adapter))
        assert code == 1 and "has already been loaded" in out
        code, out = stakeflow("models", "lora", "load", "broken", str(tmp_path / "nowhere"))
        assert code == 1 and "vLLM refused to load adapter 'broken' (HTTP 400)" in out
        code, out = stakeflow("models", "lora", "unload", "support-v3")
        assert code == 0 and "removed successfully" in out
        code, out = stakeflow("models", "lora", "unload", "support-v3")
        assert code == 1 and "cannot be found" in out
    with FakeVLLMServer(base_model=BASE, runtime_lora=False) as vllm:
        monkeypatch.setenv("STAKEFLOW_OPEN_BASE_URL", vllm.url)
        code, out = stakeflow("models", "lora", "load", "support-v3", str(adapter))
    assert code == 1
    assert "has no runtime LoRA API (HTTP 404)" in out and "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in out
    assert "--enable-lora" in out


def test_the_recipe_reads_exported_lines_as_prompt_completion_pairs():
    sys.path.insert(0, str(REPO / "deploy" / "finetune"))
    try:
        from train import require_chat_template, to_prompt_completion
    finally:
        sys.path.pop(0)
    line = {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u"},
            {"role": "assistant", "content": "a"},
        ]
    }
    assert to_prompt_completion(line) == {"prompt": line["messages"][:2], "completion": line["messages"][2:]}
    with pytest.raises(ValueError, match="ending with an assistant turn"):
        to_prompt_completion({"messages": line["messages"][:2]})
    # Tool schemas travel as a JSON string: nested, Arrow would merge every line's schemas into one struct.
    tools = [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}]
    row = to_prompt_completion({**line, "tools": tools})
    assert isinstance(row["tools"], str) and json.loads(row["tools"]) == tools
    # A tokenizer without a chat template cannot render chat examples: said before any training starts.
    with pytest.raises(SystemExit, match="has no chat template"):
        require_chat_template(type("Tokenizer", (), {"chat_template": None})(), "base-model")


def test_a_candidate_url_is_checked_before_a_replay_starts():
    code, out = stakeflow("evals", "replay", "--model", "m", "--base-url", "http://me:pw@models.example/v1")
    assert code == 1 and "--base-url http://models.example/v1: it carries credentials" in out and "pw" not in out
