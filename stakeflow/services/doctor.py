"""`stakeflow doctor`: every part a run needs, checked, one line each, with the fix for what is wrong.

Diagnoses only: it starts nothing and changes nothing (the embedded-build check loads the model in a
child process, so a build that faults on this CPU kills the child, not the doctor).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from typing import Literal

from stakeflow.config import Settings

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """One line of the report. ``fail`` means a run needs this and it is broken; ``warn`` does not stop runs."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[self.status]
        text = f"{mark}  {self.name:<18} {self.detail}"
        return f"{text}\n      fix: {self.fix}" if self.fix and self.status != "ok" else text

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def run_checks(settings: Settings) -> list[Check]:
    """All checks, in the order a run meets them."""
    checks = [*local_services(settings)]
    checks += asyncio.run(temporal_checks(settings))
    checks.append(open_model(settings))
    if settings.embedded:
        checks.append(embedded_build(settings))
    checks.append(frontier(settings))
    checks.append(trace_store(settings))
    checks += hooks(settings)
    return checks


def local_services(settings: Settings) -> list[Check]:
    """The services `stakeflow up` started: a crash is reported with how it ended and the fix."""
    from stakeflow.local import services

    if not settings.manages_temporal and not settings.embedded:
        return []
    found: list[Check] = []
    for s in services.status(settings):
        if s.state == "crashed":
            found.append(
                Check(
                    f"service {s.name}", "fail", services.crash_report(s).split("\n  fix: ")[0], services.crash_fix(s)
                )
            )
        elif s.state == "running":
            found.append(Check(f"service {s.name}", "ok", f"running (pid {s.pid})"))
    return found


async def temporal_checks(settings: Settings) -> list[Check]:
    from temporalio.service import RPCError

    from stakeflow.core.contracts import ATTRIBUTES, ROLES, queue_name
    from stakeflow.core.errors import ConfigError, ServiceError
    from stakeflow.services import runs
    from stakeflow.temporal import namespace
    from stakeflow.temporal.connection import connect

    target = settings.target
    what = target.describe() + (" (stakeflow's local dev server)" if target.local else "")
    try:
        client = await connect(settings)
    except (ServiceError, ConfigError) as e:
        return [Check("temporal", "fail", f"{what}: unusable", str(e))]
    found = [Check("temporal", "ok", what)]
    found.append(codec_check(settings))
    try:
        wrong = await namespace.problems(client, settings.temporal_namespace)
        found.append(
            Check("search attributes", "fail", "; ".join(wrong), "run `stakeflow admin setup-search-attributes`")
            if wrong
            else Check("search attributes", "ok", f"all {len(ATTRIBUTES)} registered")
        )
    except RPCError as e:
        found.append(
            Check(
                "search attributes",
                "warn",
                f"cannot list them ({e.message})",
                "check them with your Temporal operator (deploy/README.md)",
            )
        )
    for role in ROLES:
        queue = queue_name(role, settings.queue_prefix)
        try:
            polled = await runs.has_poller(client, settings, role)
        except RPCError as e:
            found.append(Check(f"worker {role}", "fail", f"cannot describe {queue}: {e.message}", "check the server"))
            continue
        found.append(
            Check(f"worker {role}", "ok", f"a worker polls {queue}")
            if polled
            else Check(
                f"worker {role}",
                "warn",
                f"no worker polls {queue} (only `stakeflow learn` needs one)",
                "`stakeflow worker --queues train` where the GPU is",
            )
            if role == "train"
            else Check(
                f"worker {role}",
                "fail",
                f"no worker polls {queue}",
                "`stakeflow up` (local) or `stakeflow worker --queues " + role + "` where that queue belongs",
            )
        )
    return found


def codec_check(settings: Settings) -> Check:
    """Payload encryption: on (which key encrypts, which decrypt; never the keys) or off."""
    from stakeflow.temporal.codec import load_keyring

    keyring = load_keyring(settings)  # a bad key source already failed connect, with its fix
    if keyring is None:
        return Check(
            "payload codec", "ok", "off: payloads are stored in clear (set STAKEFLOW_CODEC_KEYS_FILE to encrypt)"
        )
    current, _ = keyring.current
    return Check(
        "payload codec",
        "ok",
        f"AES-256-GCM, encrypting with key '{current}', decrypting with "
        f"{', '.join(keyring.ids)} (from {keyring.source}; keys not shown)",
    )


def open_model(settings: Settings) -> Check:
    from stakeflow.endpoints import probe_completion

    probe = probe_completion(settings, timeout=60.0)
    what = f"{settings.open_model_id} at {settings.open_url}"
    if probe.ok:
        return Check("open model", "ok", f"{what} {probe.detail}")
    return Check("open model", "fail", f"{what}: {probe.detail}", probe.fix)


def embedded_build(settings: Settings) -> Check:
    """Load the embedded model in a child process and generate one token: proves the build runs here."""
    import importlib.util

    from stakeflow.core.errors import ServiceError
    from stakeflow.local.embedded import REINSTALL
    from stakeflow.local.services import embedded_model_file

    if importlib.util.find_spec("llama_cpp") is None:
        return Check("embedded build", "fail", "llama-cpp-python is not installed", "pip install 'stakeflow[embedded]'")
    try:
        model = embedded_model_file()
    except ServiceError as e:
        return Check("embedded build", "fail", str(e).split(":")[0], str(e).split(": ", 1)[-1])
    try:
        ran = subprocess.run(
            [sys.executable, "-m", "stakeflow.local.embedded", "check", str(model)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        return Check("embedded build", "fail", "a one-token completion took over 120 s", "see `stakeflow models`")
    if ran.returncode < 0:
        import signal

        name = signal.Signals(-ran.returncode).name
        return Check(
            "embedded build",
            "fail",
            f"a one-token completion killed the process ({name})",
            f"reinstall the portable build: {REINSTALL}",
        )
    if ran.returncode != 0:
        last = (ran.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return Check("embedded build", "fail", f"the check failed: {last}", "pip install 'stakeflow[embedded]'")
    facts = json.loads(ran.stdout.strip().splitlines()[-1])
    detail = f"{facts['build']}; one token in {facts['completion_s']:.2f} s"
    if facts["amx_kept_off"]:
        return Check(
            "embedded build",
            "warn",
            detail + "; AMX kernels compiled in and kept off",
            f"for the portable build: {REINSTALL}",
        )
    return Check("embedded build", "ok", detail)


def frontier(settings: Settings) -> Check:
    from stakeflow.endpoints import probe_frontier

    if settings.frontier_configured and not settings.has_frontier_key:
        return Check(
            "frontier",
            "ok",
            f"{settings.frontier_model}: runs route high stakes to the frontier worker "
            "(STAKEFLOW_FRONTIER_AVAILABLE=true); the key is not needed here",
        )
    if not settings.frontier_configured:
        status: Status = "fail" if settings.policy.on_frontier_missing == "fail" else "warn"
        return Check(
            "frontier",
            status,
            "ANTHROPIC_API_KEY is not set: high-stakes steps run on the open model",
            "export ANTHROPIC_API_KEY (never put it in stakeflow.toml)",
        )
    probe = probe_frontier(settings)
    detail = f"{settings.frontier_model}: key present (not shown); {probe.detail}"
    if probe.ok:
        return Check("frontier", "ok", detail)
    # Unreachable from here is not proof it is broken where the frontier worker runs.
    return Check("frontier", "warn" if probe.status is None else "fail", detail, probe.fix)


def trace_store(settings: Settings) -> Check:
    path = settings.traces_path
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            pass
    except OSError as e:
        return Check(
            "trace store",
            "fail",
            f"cannot write in {folder}: {e.strerror}",
            "fix the folder's permissions, or set STAKEFLOW_TRACES to a writable file",
        )
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return Check("trace store", "fail", f"{path} is not readable and writable", "fix its permissions")
    return Check("trace store", "ok", f"{path} writable")


def hooks(settings: Settings) -> list[Check]:
    found = []
    for name, hook in sorted(settings.hooks.items()):
        if os.environ.get(hook.secret_env):
            found.append(Check(f"hook {name}", "ok", f"secret in ${hook.secret_env} (not shown)"))
        else:
            found.append(
                Check(
                    f"hook {name}",
                    "fail",
                    f"${hook.secret_env} is not set: every delivery gets 503",
                    f"export {hook.secret_env} in the webhook server's environment",
                )
            )
    return found
