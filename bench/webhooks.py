"""Start cost of a webhook delivery: signed POSTs to `stakeflow serve` vs direct client starts.

One Temporal dev server (in-memory, stakeflow's tuning and search attributes: local.services.dev_server_args, free port), no
workers (so only the start is measured: runs stay queued), and two ways to start AgentTaskWorkflow:

  (w) webhook: `python -m stakeflow serve` in its own process, N concurrent keep-alive connections on
      loopback each sending signed deliveries (X-Stakeflow-Signature-256 + X-Stakeflow-Timestamp, a
      fresh delivery id each); the latency is request sent -> 202 received. The load generator is a
      minimal HTTP/1.1 client (0.4 ms CPU per request; httpx costs ~2.5 ms, which on 2 cores starves
      the servers being measured);
  (d) direct: the Temporal client in this process calls start_workflow with the same TaskRequest and
      the same concurrency; the latency is one start_workflow call.

Both use the same id policies (conflict FAIL, reuse REJECT_DUPLICATE); (w) also claims each delivery's
seal (the replay guard: one more start per delivery). (r) sends every (w) delivery a second time,
re-signed now: the redelivery path, which Temporal refuses and the server answers duplicate=true. (p)
re-sends every (w) delivery's captured signed headers under a fresh delivery id: a replay, answered as a
duplicate of the (w) run.

    python bench/webhooks.py                       # 3 rounds x 600 deliveries, 8 concurrent clients
    python bench/webhooks.py --rounds 5 --n 1000 --concurrency 32

Rounds alternate (w) and (d) so load drift hits both; the table shows the median round. Every answer is
checked (202, duplicate flag as expected), so a broken path fails loudly instead of looking fast.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx
from temporalio.client import Client

from bench.harness import dev_server
from bench.procstats import cpu_seconds
from stakeflow.config import HookConfig, Settings
from stakeflow.services import runs
from stakeflow.webhooks import sign, start_delivery
from tests.support import free_port

SECRET = b"bench-secret-not-real"
GOAL = "Triage this issue and draft a reply: {payload.issue.title}\n\n{payload.issue.body}"
TARGET_RATE, TARGET_P99_MS, TARGET_SHARE = 100.0, 150.0, 0.8


@dataclass
class Round:
    rate: float
    p50: float
    p99: float
    n: int
    cpu: dict[str, float] | None = None  # process -> CPU ms per start
    # (w) rounds: each delivery's headers, for the replay round
    signed: list[dict[str, str]] | None = field(default=None, repr=False)


def cpu_ms(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), in ms."""
    return cpu_seconds([pid]) * 1000


def child_pids(name: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            comm, rest = stat.split("(", 1)[1].rsplit(")", 1)
            if comm == name and int(rest.split()[1]) == os.getpid():
                out.append(int(d.name))
    return out


class CpuMeter:
    """CPU ms per start of each process taking part: this one, the dev server, the webhook server."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def snapshot(self) -> dict[str, float]:
        return {name: cpu_ms(pid) for name, pid in self.pids.items()}

    def per_start(self, before: dict[str, float], n: int) -> dict[str, float]:
        after = self.snapshot()
        return {name: (after[name] - before[name]) / n for name in self.pids}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def summarise(latencies_ms: list[float], seconds: float) -> Round:
    return Round(len(latencies_ms) / seconds, pct(latencies_ms, 0.5), pct(latencies_ms, 0.99), len(latencies_ms))


def payload(i: int, delivery: str) -> bytes:
    """An issue body; unique per delivery, as real events are (the same signed bytes twice are a replay)."""
    import json

    return json.dumps(
        {"action": "opened", "issue": {"id": delivery, "title": f"Crash #{i} on start", "body": "x" * 400}}
    ).encode()


async def run_pool(n: int, concurrency: int, one) -> tuple[list[float], float]:
    """Run one(i) for i in range(n) on `concurrency` workers; (latencies ms, wall seconds)."""
    latencies: list[float] = []
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            t = time.perf_counter()
            await one(i)
            latencies.append((time.perf_counter() - t) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return latencies, time.perf_counter() - start


class Connection:
    """A minimal keep-alive HTTP/1.1 client: the load generator should cost the machine little
    (httpx spends ~2.5 ms CPU per request here, on the same 2 cores as both servers)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        self.writer.write(head.encode() + body)
        assert self.reader is not None
        status_line = await self.reader.readuntil(b"\r\n")
        length = 0
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def bench_webhook(
    port: int,
    path: str,
    bodies: list[bytes],
    ids: list[str],
    concurrency: int,
    duplicate: bool,
    signed: list[dict[str, str]] | None = None,
) -> Round:
    """POST every body under its delivery id, signed now; with ``signed``, re-send those captured
    headers (timestamp and signature) instead: a replay. Each delivery's headers are kept in the
    result's ``signed``, so a later round can replay them."""
    import json

    pool = [Connection(port) for _ in range(concurrency)]
    free = list(pool)

    async def one(i: int) -> None:
        conn = free.pop()
        try:
            if signed is None:
                ts = str(int(time.time()))
                headers = {
                    "Content-Type": "application/json",
                    "X-Stakeflow-Timestamp": ts,
                    "X-Stakeflow-Signature-256": sign(SECRET, bodies[i], ts),
                }
            else:
                headers = dict(signed[i])
            headers["X-Stakeflow-Delivery"] = ids[i]
            captured[i] = headers
            status, body = await conn.post(path, headers, bodies[i])
        finally:
            free.append(conn)
        if status != 202 or json.loads(body)["duplicate"] is not duplicate:
            raise SystemExit(f"webhook answered {status} {body!r}")
        if signed is not None and json.loads(body)["workflow_id"] != f"hook-bench-{signed[i]['X-Stakeflow-Delivery']}":
            raise SystemExit(f"a replay answered for another run: {body!r}")

    captured: list[dict[str, str]] = [{} for _ in ids]
    try:
        lat, secs = await run_pool(len(ids), concurrency, one)
    finally:
        for c in pool:
            c.close()
    result = summarise(lat, secs)
    result.signed = captured
    return result


async def bench_direct(client: Client, settings: Settings, n: int, concurrency: int, tag: str) -> Round:
    req = runs.build_request(
        settings, "Triage this issue and draft a reply: Crash on start\n\n" + "x" * 400, stakes="low", source="bench"
    )

    async def one(i: int) -> None:
        started = await start_delivery(client, settings, req, f"direct-{tag}-{i}")
        if started.duplicate:
            raise SystemExit("direct start reported a duplicate")

    lat, secs = await run_pool(n, concurrency, one)
    return summarise(lat, secs)


def start_server(home: Path, address: str, prefix: str, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STAKEFLOW_", "ANTHROPIC_"))}
    env.update(
        STAKEFLOW_HOME=str(home),
        STAKEFLOW_TEMPORAL_ADDRESS=address,
        STAKEFLOW_QUEUE_PREFIX=prefix,
        BENCH_WEBHOOK_SECRET=SECRET.decode(),
        STAKEFLOW_OPEN_BASE_URL="http://127.0.0.1:9/v1",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "stakeflow", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        cwd=REPO,
    )


async def wait_healthy(http: httpx.AsyncClient, url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"stakeflow serve exited with {proc.returncode}")
        try:
            if (await http.get(url)).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("stakeflow serve did not become healthy")


async def main(args: argparse.Namespace) -> None:
    env = await dev_server()
    tmp = Path(tempfile.mkdtemp(prefix="stakeflow-bench-hooks-"))
    home = tmp / "home"
    home.mkdir()
    (home / "stakeflow.toml").write_text(
        f'[hooks.bench]\nsecret_env = "BENCH_WEBHOOK_SECRET"\ngoal = """{GOAL}"""\nstakes = "low"\n'
    )
    address = env.client.service_client.config.target_host
    prefix = f"bench{uuid.uuid4().hex[:6]}"  # no worker polls it: runs stay queued
    settings = Settings(
        home=home,
        temporal_address=address,
        queue_prefix=prefix,
        open_base_url="http://127.0.0.1:9/v1",
        hooks={"bench": HookConfig(secret_env="BENCH_WEBHOOK_SECRET", goal=GOAL, stakes="low")},
    )
    port = free_port()
    log = tmp / "serve.log"
    proc = start_server(home, address, prefix, port, log)
    base = f"http://127.0.0.1:{port}"
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    rows: dict[str, list[Round]] = {"w": [], "d": [], "r": [], "p": []}
    meter = CpuMeter(
        {"bench client": os.getpid(), "dev server": child_pids("temporal")[0], "stakeflow serve": proc.pid}
    )
    try:
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            await wait_healthy(http, f"{base}/healthz", proc)
            path = "/hooks/bench"
            # Warm-up: connections, the server's Temporal client, the dev server's caches.
            warm = [f"warm-{uuid.uuid4().hex[:8]}-{i}" for i in range(50)]
            await bench_webhook(port, path, [payload(i, d) for i, d in enumerate(warm)], warm, args.concurrency, False)
            await bench_direct(env.client, settings, 50, args.concurrency, "warm")
            for r in range(args.rounds):
                ids = [f"r{r}-{uuid.uuid4().hex[:10]}" for _ in range(args.n)]
                bodies = [payload(i, d) for i, d in enumerate(ids)]
                order = ("w", "d") if r % 2 == 0 else ("d", "w")
                for which in order:
                    before = meter.snapshot()
                    if which == "w":
                        rows["w"].append(await bench_webhook(port, path, bodies, ids, args.concurrency, False))
                    else:
                        rows["d"].append(await bench_direct(env.client, settings, args.n, args.concurrency, f"r{r}"))
                    rows[which][-1].cpu = meter.per_start(before, args.n)
                    print(f"round {r} {which}: {rows[which][-1]}", file=sys.stderr)
                before = meter.snapshot()
                rows["r"].append(await bench_webhook(port, path, bodies, ids, args.concurrency, True))
                rows["r"][-1].cpu = meter.per_start(before, args.n)
                fresh = [f"p{r}-{uuid.uuid4().hex[:10]}" for _ in range(args.n)]
                before = meter.snapshot()
                rows["p"].append(
                    await bench_webhook(port, path, bodies, fresh, args.concurrency, True, signed=rows["w"][-1].signed)
                )
                rows["p"][-1].cpu = meter.per_start(before, args.n)
    finally:
        proc.terminate()
        proc.wait(10)
        await env.shutdown()
    report(rows, args)
    log_text = log.read_text()
    if SECRET.decode() in log_text or "Crash #" in log_text:
        raise SystemExit("the server log contains the secret or a body")


def _have(module: str) -> str:
    import importlib.util

    return module if importlib.util.find_spec(module) else "(not installed)"


def report(rows: dict[str, list[Round]], args: argparse.Namespace) -> None:
    def median(rs: list[Round]) -> Round:
        return sorted(rs, key=lambda x: x.rate)[len(rs) // 2]

    w, d, r, p = median(rows["w"]), median(rows["d"]), median(rows["r"]), median(rows["p"])
    print(
        f"\nstakeflow webhook start cost · {platform.python_implementation()} {platform.python_version()} · "
        f"{os.cpu_count()} CPUs · {args.rounds} rounds x {args.n} deliveries · {args.concurrency} concurrent clients"
        f" · median round · server http={_have('httptools')} loop={_have('uvloop')}"
    )
    names = list(w.cpu or {})
    print("| | path | starts/s | p50 ms | p99 ms | " + " | ".join(f"CPU ms/start: {n}" for n in names) + " |")
    print("|---|---|---:|---:|---:|" + "---:|" * len(names))
    for tag, name, x in (
        ("w", "webhook: signed POST -> 202 (new run)", w),
        ("d", "direct: Temporal client start_workflow", d),
        ("r", "webhook redelivery -> 202 duplicate", r),
        ("p", "webhook replay, fresh delivery id -> 202 duplicate", p),
    ):
        cpu = " | ".join(f"{(x.cpu or {}).get(n, 0):.2f}" for n in names)
        print(f"| ({tag}) | {name} | {x.rate:.0f} | {x.p50:.1f} | {x.p99:.1f} | {cpu} |")
    share = w.rate / d.rate
    print(f"\nwebhook/direct rate: {share:.0%}")
    for ok, text in (
        (w.rate >= TARGET_RATE, f"≥ {TARGET_RATE:.0f} deliveries/s"),
        (w.p99 < TARGET_P99_MS, f"p99 < {TARGET_P99_MS:.0f} ms"),
        (share >= TARGET_SHARE, f"within {TARGET_SHARE:.0%} of the direct-start rate"),
    ):
        print(f"  {'met' if ok else 'MISSED'}: {text}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=600, help="deliveries per round")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args))
    sys.stdout.flush()
    os._exit(0)  # temporalio can crash at interpreter exit (sdk-python#300)
