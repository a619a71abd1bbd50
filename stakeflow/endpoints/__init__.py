"""The model endpoints outside a model call: whether each route answers (``_probes``), and adapters on vLLM
(``_lora``).

A library floor: `up`, `models`, `doctor` and the embedded model's readiness probe here, so they cannot
disagree; `stakeflow models lora` and the learn loop's load step load adapters here.
"""

from stakeflow.endpoints._lora import LORA_FLAGS, lora
from stakeflow.endpoints._probes import (
    ANTHROPIC_DEFAULT_URL,
    Probe,
    check_base_url,
    completion_request,
    describe_endpoints,
    probe_completion,
    probe_frontier,
    probe_models,
    same_endpoint,
)

__all__ = [
    "ANTHROPIC_DEFAULT_URL",
    "LORA_FLAGS",
    "Probe",
    "check_base_url",
    "completion_request",
    "describe_endpoints",
    "lora",
    "probe_completion",
    "probe_frontier",
    "probe_models",
    "same_endpoint",
]
