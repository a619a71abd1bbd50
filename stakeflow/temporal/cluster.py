"""What deploy/ (the image, compose.yaml, the Kubernetes manifests) relies on, defined once.

The manifests are YAML and cannot import these; tests/test_deploy.py reads them and checks they name
the same queues, commands, ports and variables as the code, so a rename here (or in
stakeflow/core/contracts.py, or a settings field) that deploy/ does not follow fails CI instead of a
cluster.
"""

from __future__ import annotations

from stakeflow.core.contracts import QueueRole

WEBHOOK_PORT = 8080  # `stakeflow serve`
CODEC_PORT = 8081  # `stakeflow codec-server`
METRICS_PORT = 9464  # STAKEFLOW_METRICS_PORT of every worker in deploy/
VLLM_PORT = 8000
TEMPORAL_PORT = 7233

# The learn folder (stakeflow.stores.promotions.learn_dir: $STAKEFLOW_HOME/learn in the image): one shared volume
# at this same path in the workflows worker (datasets, promotions.json), the train worker (adapters), vLLM
# (loads adapters by path) and the webhook server (reads promotions.json when it starts runs).
LEARN_DIR = "/var/lib/stakeflow/learn"

# One worker service (compose) / Deployment (Kubernetes) per placement: the open worker next to the
# GPU, the frontier worker where the API key is, workflows and tools next to the data (the workflow
# worker runs the fast read-only tools as local activities, so it needs the workspaces too), and the
# train worker on a GPU of its own (the learn loop's trainer, from its own image deploy/finetune/Dockerfile;
# Kubernetes scales it to zero between trainings, compose starts it with `--profile learn`).
WORKER_SERVICES: dict[str, tuple[QueueRole, ...]] = {
    "open": ("open",),
    "frontier": ("frontier",),
    "tools": ("workflows", "tools"),
    "train": ("train",),
}

# Which of a queue's task types its backlog is in (KEDA's temporal scaler, `queueTypes`).
QUEUE_TYPES: dict[QueueRole, str] = {
    "workflows": "workflow",
    "open": "activity",
    "frontier": "activity",
    "tools": "activity",
    "train": "activity",
}

# Kubernetes' terminationGracePeriodSeconds / compose's stop_grace_period for workers: longer than the
# worker's graceful shutdown (workers.main.GRACEFUL_SHUTDOWN, 20 s) plus the span flush, so SIGKILL never
# cuts an activity that was given time to finish. The train worker's too: a training outlasts any grace
# period, so a stopped trainer is killed and Temporal retries the train step on a train worker (the
# learn workflow allows two attempts in all): waiting longer would only delay that.
WORKER_GRACE_S = 30


def worker_command(service: str) -> list[str]:
    """The container command of one worker service: ``["worker", "--queues", "workflows,tools"]``."""
    return ["worker", "--queues", ",".join(WORKER_SERVICES[service])]
