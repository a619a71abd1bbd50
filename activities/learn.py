"""The activities of the learn loop (workflows/learn.py): export, train, load/unload the adapter, promote.

The trainer is the team's command (``[learn] trainer``, e.g. deploy/finetune/train.py, TRL SFT + LoRA) run as a
child process on a ``stakeflow-train`` worker; it heartbeats while it runs, its output goes to a log beside the
adapter, and a trainer that fails is a non-retryable failure carrying the last lines of that log.
Promotions are records in the learn folder that every run reads (stakeflow/stores/promotions.py).
"""

from __future__ import annotations

import asyncio
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from stakeflow.activities.parameters import LearnParameters
from stakeflow.agents.evals import AdapterRequest, DatasetFiles, LearnRequest, Promotion, TrainRequest
from stakeflow.core.contracts import (
    EXPORT_DATASET,
    LOAD_ADAPTER,
    PROMOTE_ADAPTER,
    TRAIN_ADAPTER,
    UNLOAD_ADAPTER,
    QueueRole,
)
from stakeflow.core.errors import ADAPTER_REFUSED, TRAINER_FAILED, InputError
from stakeflow.endpoints import lora
from stakeflow.stores.datasets import collect, write
from stakeflow.stores.promotions import promote

TAIL_LINES = 20
# deploy/finetune/train.py in a checkout; in an image, where deploy/finetune/Dockerfile puts it.
RECIPES = (
    Path(__file__).resolve().parents[1] / "deploy" / "finetune" / "train.py",
    Path(sys.prefix) / "share" / "stakeflow" / "finetune" / "train.py",
)


def _recipe() -> Path:
    """Where the fine-tuning recipe is on this worker (the first of RECIPES that exists)."""
    return next((p for p in RECIPES if p.is_file()), RECIPES[-1])


def _die_with_parent() -> None:
    """In the trainer's process: be killed when the worker dies (a SIGKILLed worker must not leave a trainer
    holding the GPU while Temporal retries the activity on another one). Linux only; elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class LearnActivities:
    """The learn loop's activities, each on the queue where what it touches is: the learn folder (workflows), the
    GPU (train), the vLLM server (open)."""

    def __init__(self, params: LearnParameters) -> None:
        self._params = params

    def activities(self, role: QueueRole) -> list[Callable[..., Any]]:
        by_role: dict[str, list[Callable[..., Any]]] = {
            "workflows": [self.export_dataset, self.promote_adapter],
            "open": [self.load_adapter, self.unload_adapter],  # next to vLLM
            "train": [self.train_adapter],  # where the GPU is: the trainer runs as a child process
        }
        return by_role.get(role, [])

    @activity.defn(name=EXPORT_DATASET)
    async def export_dataset(self, req: LearnRequest) -> DatasetFiles:
        def run() -> DatasetFiles:
            exported = collect(self._params.traces_path, agent=req.agent or None, split=req.split)
            out = Path(req.workdir) / "dataset.jsonl"
            write(exported, out, "openai", {"agent": req.agent, "split": req.split})
            return DatasetFiles(
                train=str(out.parent / "dataset.train.jsonl"),
                test=str(out.parent / "dataset.test.jsonl"),
                manifest=str(out.parent / "dataset.manifest.json"),
                train_examples=len(exported.train),
                test_examples=len(exported.test),
            )

        return await asyncio.to_thread(run)

    @activity.defn(name=TRAIN_ADAPTER)
    async def train_adapter(self, req: TrainRequest) -> AdapterRequest:
        learn = req.learn
        output = Path(learn.workdir) / "adapter"
        output.mkdir(parents=True, exist_ok=True)
        fields = {
            "train": req.files.train,
            "test": req.files.test,
            "output": str(output),
            "base_model": learn.base_model,
            "agent": learn.agent,
            "python": sys.executable,
            "recipe": str(_recipe()),
        }
        try:
            argv = [part.format(**fields) for part in self._params.trainer]
        except (KeyError, IndexError, ValueError) as e:
            raise ApplicationError(
                f"[learn] trainer has an unknown placeholder ({e}): use {{{'}, {'.join(fields)}}}",
                type=TRAINER_FAILED,
                non_retryable=True,
            ) from None
        log = Path(learn.workdir) / "trainer.log"
        with open(log, "ab") as out:
            out.write(f"$ {shlex.join(argv)}\n".encode())
            out.flush()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    stdin=asyncio.subprocess.DEVNULL,
                    preexec_fn=_die_with_parent,
                )
            except OSError as e:
                raise ApplicationError(
                    f"the trainer {argv[0]!r} cannot start ({e.strerror}): fix [learn] trainer",
                    type=TRAINER_FAILED,
                    non_retryable=True,
                ) from None
            timeout = activity.info().heartbeat_timeout
            beat = timeout.total_seconds() / 4 if timeout else 20.0
            try:
                while True:
                    try:
                        code = await asyncio.wait_for(proc.wait(), timeout=beat)
                        break
                    except TimeoutError:
                        activity.heartbeat()
            except asyncio.CancelledError:  # cancelled, or the worker shuts down: the retry trains again
                proc.kill()
                await proc.wait()
                raise
        if code != 0 or not (output / "adapter_config.json").is_file():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-TAIL_LINES:])
            why = f"exited with code {code}" if code != 0 else "wrote no adapter_config.json"
            raise ApplicationError(
                f"the trainer {why}; last lines of {log}:\n{tail}", type=TRAINER_FAILED, non_retryable=True
            )
        return AdapterRequest(name=learn.adapter_name, path=str(output))

    @activity.defn(name=LOAD_ADAPTER)
    async def load_adapter(self, adapter: AdapterRequest) -> str:
        try:
            return await asyncio.to_thread(
                lora, self._params.open_url, self._params.open_api_key, "load", adapter.name, adapter.path
            )
        except InputError as e:
            if "already been loaded" in str(e):  # a retry after a load whose answer was lost
                return "already loaded"
            raise ApplicationError(str(e), type=ADAPTER_REFUSED, non_retryable=True) from None

    @activity.defn(name=UNLOAD_ADAPTER)
    async def unload_adapter(self, adapter: AdapterRequest) -> str:
        try:
            return await asyncio.to_thread(
                lora, self._params.open_url, self._params.open_api_key, "unload", adapter.name
            )
        except InputError as e:
            if "cannot be found" in str(e):  # already unloaded
                return "not loaded"
            raise

    @activity.defn(name=PROMOTE_ADAPTER)
    async def promote_adapter(self, promotion: Promotion) -> None:
        await asyncio.to_thread(promote, self._params.learn_dir, promotion)
