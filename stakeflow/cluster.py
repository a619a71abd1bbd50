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

# One worker service (compose) / Deployment (Kubernetes) per placement: the open worker next to the
# GPU, the frontier worker where the API key is, workflows and tools next to the data (the workflow
# worker runs the fast read-only tools as local activities, so it needs the workspaces too).
WORKER_SERVICES: dict[str, tuple[QueueRole, ...]] = {
    "open": ("open",),
    "frontier": ("frontier",),
    "tools": ("workflows", "tools"),
}

# Which of a queue's task types its backlog is in (KEDA's temporal scaler, `queueTypes`).
QUEUE_TYPES: dict[QueueRole, str] = {"workflows": "workflow", "open": "activity", "frontier": "activity",
                                     "tools": "activity"}

# Kubernetes' terminationGracePeriodSeconds / compose's stop_grace_period for workers: longer than the
# worker's graceful shutdown (workers.main.GRACEFUL_SHUTDOWN, 20 s) plus the span flush, so SIGKILL never
# cuts an activity that was given time to finish.
WORKER_GRACE_S = 30


def worker_command(service: str) -> list[str]:
    """The container command of one worker service: ``["worker", "--queues", "workflows,tools"]``."""
    return ["worker", "--queues", ",".join(WORKER_SERVICES[service])]
