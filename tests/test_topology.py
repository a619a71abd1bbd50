"""The cluster's shape on one machine: one Temporal dev server, and every stakeflow process of
deploy/compose.yaml in its own OS process, started with that file's commands and variables.

- the dev server starts without stakeflow's search attributes; compose's `setup` command registers them;
- worker-open, worker-frontier, worker-tools, webhooks and codec-server each run compose's `command`
  with compose's `environment` (interpolated as `docker compose` would, from test values), the one
  deploy/stakeflow.toml in each home, and payload encryption on;
- GitHub-signed deliveries to the webhook server start runs; each run thinks on the open model, appends
  a line to a shared workspace with write_file (high stakes: the frontier route), and answers;
- meanwhile each process is SIGKILLed in turn, mid-run, and started again;
- at the end every delivery has exactly one run, every run completed, every line is in the file once,
  no history holds a goal in clear, and the restarted codec server decodes them.

What differs from a cluster is only what one machine forces: addresses (127.0.0.1 and free ports instead
of service names and 9464 everywhere), the model endpoints (scripted servers, tests/fakes), a shared
folder instead of a volume, and one approvals line (write_file does not wait for a person here).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from stakeflow.agents.types import TaskResult
from stakeflow.webhooks import sign
from tests.agent_script import agent, call, plan
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, Reply, prompt_text
from tests.support import ephemeral_ports, free_port
from tests.test_codec import KEYS_ENV, sealed_client
from tests.test_codec_server import TOKEN as CODEC_TOKEN

REPO = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
SERVICES = ["worker-open", "worker-frontier", "worker-tools", "webhooks", "codec-server"]
HOOK_SECRET = "whsec-topology-test-91f0"
API_TOKEN = "api-token-topology-test-5d1e"
FRONTIER_KEY = "sk-ant-topology-test-77c3"
RUNS = 10


def interpolate(value, variables: dict[str, str]):
    """`${NAME}`, `${NAME:-default}` and `${NAME:?error}` as docker compose interpolates them."""
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if variables.get(name):
            return variables[name]
        if op == ":?":
            raise AssertionError(f"compose needs {name}: {arg}")
        return arg or ""

    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}", one, value)


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    ready: str  # a log line (workers) or a URL answering 200 (servers)
    popen: subprocess.Popen | None = None
    kills: int = 0
    seen: int = 0  # ready lines in the log before this start

    def start(self) -> None:
        self.seen = self.text().count(self.ready) if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                assert self.popen.poll() is None, f"{self.name} exited {self.popen.returncode}:\n{self.text()[-3000:]}"
                if self.ready.startswith("http"):
                    try:
                        if (await http.get(self.ready)).status_code == 200:
                            return
                    except httpx.HTTPError:
                        pass
                elif self.text().count(self.ready) > self.seen:
                    return
                await asyncio.sleep(0.1)
        pytest.fail(f"{self.name} was not ready in {timeout:g}s:\n{self.text()[-3000:]}")

    def kill(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)
        self.kills += 1

    def stop(self) -> None:
        if self.popen and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(40)
            except subprocess.TimeoutExpired:
                self.popen.kill()


@dataclass
class Cluster:
    address: str
    open_url: str
    frontier_url: str
    root: Path
    workspace: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def variables(self) -> dict[str, str]:
        """deploy/.env as an operator would fill it in."""
        return {
            "STAKEFLOW_CODEC_KEYS": KEYS_ENV,
            "STAKEFLOW_CODEC_AUTH_TOKENS": CODEC_TOKEN,
            "STAKEFLOW_API_TOKEN": API_TOKEN,
            "GITHUB_WEBHOOK_SECRET": HOOK_SECRET,
            "ANTHROPIC_API_KEY": FRONTIER_KEY,
            "POSTGRES_PASSWORD": "unused",
            "OPEN_MODEL": "qwen-test",
            "FRONTIER_MODEL": "claude-test",
        }

    def environment(self, service: str) -> dict[str, str]:
        raw = dict(COMPOSE["services"][service].get("environment", {}))
        env = {k: str(interpolate(v, self.variables())) for k, v in raw.items()}
        # One machine instead of a network: service names become this machine's addresses.
        for key, value in env.items():
            value = value.replace("temporal:7233", self.address).replace("http://vllm:8000/v1", self.open_url)
            env[key] = value
        if "STAKEFLOW_METRICS_PORT" in env:
            env["STAKEFLOW_METRICS_PORT"] = str(self.ports[service])
            env["STAKEFLOW_METRICS_HOST"] = "127.0.0.1"
        if service == "worker-frontier":
            env["ANTHROPIC_BASE_URL"] = self.frontier_url  # the scripted frontier, not the internet
        if service == "codec-server":
            env["STAKEFLOW_CODEC_CORS_ORIGINS"] = '["http://127.0.0.1:8233"]'
        home = self.root / service
        home.mkdir(parents=True, exist_ok=True)
        # The image's STAKEFLOW_HOME, with deploy/stakeflow.toml mounted in it (compose's `configs`).
        toml = (REPO / "deploy" / "stakeflow.toml").read_text() + '\n[approvals]\nrisks = ["irreversible"]\n'
        (home / "stakeflow.toml").write_text(toml)
        if service in ("worker-tools", "webhooks") and not (home / "workspace").exists():
            (home / "workspace").symlink_to(self.workspace)  # compose's `workspaces` volume
        base = {k: v for k, v in os.environ.items() if not k.startswith(("STAKEFLOW_", "ANTHROPIC_", "TEMPORAL_"))}
        return {**base, **env, "STAKEFLOW_HOME": str(home), "TEMPORAL_CONFIG_FILE": str(self.root / "none.toml")}

    def command(self, service: str) -> list[str]:
        argv = [str(a) for a in COMPOSE["services"][service]["command"]]
        argv = ["127.0.0.1" if a == "0.0.0.0" else a for a in argv]
        if "--port" in argv:
            argv[argv.index("--port") + 1] = str(self.ports[service])
        return [sys.executable, "-m", "stakeflow", *argv]

    def add(self, service: str) -> Proc:
        self.ports[service] = free_port()
        env = self.environment(service)
        argv = self.command(service)
        if service.startswith("worker-"):
            ready = "stakeflow.worker: worker polling"  # logged once its Temporal workers run
        else:
            ready = f"http://127.0.0.1:{self.ports[service]}/healthz"
        proc = Proc(service, argv, env, self.root / f"{service}.log", ready)
        self.procs[service] = proc
        return proc


def issue_delivery(n: int, tag: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "action": "opened",
            "issue": {
                "id": n,
                "title": f"ISSUE-{tag}-{n} crashes on start",
                "body": f"GOAL-SECRET-{tag}-{n} steps to reproduce",
            },
        }
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": f"{tag}-{n}",
        "X-Hub-Signature-256": sign(HOOK_SECRET.encode(), body),
    }
    return body, headers


async def deliver(url: str, body: bytes, headers: dict[str, str], deadline_s: float = 120) -> dict:
    """POST until the server accepts it, as GitHub redelivers: a server being restarted refuses connections."""
    deadline = time.monotonic() + deadline_s
    async with httpx.AsyncClient(timeout=15) as http:
        while True:
            try:
                r = await http.post(url, content=body, headers=headers)
                if r.status_code == 202:
                    return r.json()
                assert r.status_code >= 500, r.text  # a 4xx would be a bug, not an outage
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"delivery {headers['X-GitHub-Delivery']} never accepted"
            await asyncio.sleep(0.3)


@pytest.fixture
async def bare_server():
    """A dev server of its own (queues named exactly as in deploy/), without stakeflow's search attributes."""
    from temporalio.testing import WorkflowEnvironment

    from stakeflow.local.services import dev_server_args

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=shutil.which("temporal"),
        ip="127.0.0.1",
        dev_server_extra_args=dev_server_args(log_level="error", search_attributes=False),
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.mark.timeout(600)
async def test_the_cluster_s_processes_survive_being_killed_in_turn(bare_server, tmp_path):
    tag = uuid.uuid4().hex[:6]
    address = bare_server.client.service_client.config.target_host
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    lock = threading.Lock()
    think_calls: dict[str, int] = {}
    # Runs think until every process has been killed once: each kill then finds runs in flight, however long the
    # restarts take (seconds each on a loaded machine).
    released = threading.Event()

    def think_slowly(body):
        m = re.search(r"ISSUE-\w+-(\d+)", prompt_text(body))
        with lock:
            key = m.group(1) if m else "?"
            think_calls[key] = think_calls.get(key, 0) + 1
        released.wait(180)
        return Reply.delayed(0.5, {"tool_calls": [], "result": "considered"})

    def write_line(body):
        m = re.search(r"ISSUE-\w+-(\d+)", prompt_text(body))
        return call("write_file", path="triage.log", content=f"issue {m.group(1)}\n", append=True)

    script = agent(
        plan(("Think about the issue", None, "low"), ("Log the triage", "write_file", "high")),
        {1: think_slowly, 2: write_line},
        answer="Triaged.",
    )
    with FakeOpenAIServer(model="qwen-test") as open_fake, FakeAnthropicServer() as frontier_fake:
        open_fake.script(script)
        frontier_fake.script(script)
        c = Cluster(address, open_fake.url, frontier_fake.url, tmp_path / "cluster", workspace)
        c.root.mkdir()
        # compose's `setup` service, then every stakeflow service.
        setup = subprocess.run(
            [sys.executable, "-m", "stakeflow", *COMPOSE["services"]["setup"]["command"]],
            env={**c.environment("setup")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert setup.returncode == 0, setup.stderr
        assert "added StakeflowStakes" in setup.stdout
        for service in SERVICES:
            c.add(service).start()
        try:
            for p in c.procs.values():
                await p.wait_ready()
            hooks = f"http://127.0.0.1:{c.ports['webhooks']}/hooks/github-issues"
            deliveries = [issue_delivery(n, tag) for n in range(RUNS)]

            async def send_all():
                answers = []
                for body, headers in deliveries:
                    answers.append(asyncio.create_task(deliver(hooks, body, headers)))
                    await asyncio.sleep(1.0)
                return await asyncio.gather(*answers)

            sender = asyncio.create_task(send_all())
            # Each process in turn: killed while runs are in flight, then started again as before.
            in_flight = {}
            for service in SERVICES:
                await asyncio.sleep(1.5)
                p = c.procs[service]
                in_flight[service] = len(
                    [
                        w
                        async for w in bare_server.client.list_workflows(
                            "WorkflowType = 'AgentTaskWorkflow' AND ExecutionStatus = 'Running'"
                        )
                    ]
                )
                p.kill()
                await asyncio.sleep(0.5)
                p.start()
                await p.wait_ready()
            released.set()
            accepted = await sender
            # A redelivery of every delivery, after all the restarts: no second run anywhere.
            again = [await deliver(hooks, body, headers) for body, headers in deliveries]

            sealed = await sealed_client(_codec_settings(address))
            results = []
            for a in accepted:
                handle = sealed.get_workflow_handle(a["workflow_id"], result_type=TaskResult)
                results.append(await asyncio.wait_for(handle.result(), 240))
            codec_url = f"http://127.0.0.1:{c.ports['codec-server']}"
            decoded = await _decode_first_input(bare_server.client, accepted[0]["workflow_id"], codec_url)
        finally:
            released.set()
            for p in c.procs.values():
                p.stop()

    assert all(p.kills == 1 for p in c.procs.values())
    assert all(n > 0 for n in in_flight.values()), f"a kill found no run in flight: {in_flight}"
    assert [a["duplicate"] for a in accepted] == [False] * RUNS
    assert len({a["workflow_id"] for a in accepted}) == RUNS
    assert all(b["duplicate"] and b["workflow_id"] == a["workflow_id"] for a, b in zip(accepted, again, strict=True))
    assert [r.status for r in results] == ["completed"] * RUNS
    assert all(r.answer == "Triaged." for r in results)
    assert all(r.steps[1].route == "frontier" for r in results)  # the write went through the frontier worker
    lines = (workspace / "triage.log").read_text().splitlines()
    assert sorted(lines) == sorted(f"issue {n}" for n in range(RUNS)), "each run's write landed exactly once"
    assert len(frontier_fake.calls) >= RUNS
    # Nothing readable on the server; the restarted codec server reads it for those allowed.
    for a in accepted:
        text = (await bare_server.client.get_workflow_handle(a["workflow_id"]).fetch_history()).to_json()
        assert f"GOAL-SECRET-{tag}" not in text and FRONTIER_KEY not in text and HOOK_SECRET not in text
    assert f"GOAL-SECRET-{tag}-0" in decoded
    for p in c.procs.values():
        assert FRONTIER_KEY not in p.text() and HOOK_SECRET not in p.text() and CODEC_TOKEN not in p.text()


def _codec_settings(address: str):
    from stakeflow.config import Settings

    return Settings(temporal_address=address, codec_keys=KEYS_ENV)


async def _decode_first_input(client, workflow_id: str, codec_url: str) -> str:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    payload = history.events[0].workflow_execution_started_event_attributes.input.payloads[0]
    body = {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in payload.metadata.items()},
                "data": base64.b64encode(payload.data).decode(),
            }
        ]
    }
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(f"{codec_url}/decode", json=body, headers={"Authorization": f"Bearer {CODEC_TOKEN}"})
    assert r.status_code == 200, r.text
    return base64.b64decode(r.json()["payloads"][0]["data"]).decode()


def test_a_server_s_port_is_never_one_the_kernel_hands_out_itself() -> None:
    """A port the kernel picked for a bind to port 0 can go to any outgoing connection before the child process
    binds it: CI saw a worker's metrics port taken ("Address already in use") in the test above."""
    low, _ = ephemeral_ports()
    ports = [free_port() for _ in range(200)]
    assert all(p < low for p in ports), [p for p in ports if p >= low]
    assert len(set(ports)) == len(ports)
