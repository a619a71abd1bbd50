"""The model endpoints outside a model call: whether each route answers, and what to do when it does not.

A library floor: `up`, `models`, `doctor` and the embedded model's readiness probe here, so they cannot disagree.
"""

from stakeflow.endpoints._probes import (
    ANTHROPIC_DEFAULT_URL,
    Probe,
    completion_request,
    describe_endpoints,
    probe_completion,
    probe_frontier,
    probe_models,
)

__all__ = [
    "ANTHROPIC_DEFAULT_URL",
    "Probe",
    "completion_request",
    "describe_endpoints",
    "probe_completion",
    "probe_frontier",
    "probe_models",
]
