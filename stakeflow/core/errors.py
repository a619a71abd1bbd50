"""The project's exception types and the ApplicationError type names.

Every exception here takes one message argument so it pickles across the activity
boundary. Messages name the fix: the variable to set, the command to run.
"""


class StakeflowError(Exception):
    """A problem the user can fix; the message says how."""


class ConfigError(StakeflowError):
    """Bad settings: a TOML file that does not parse, an unknown key or tool."""


class InputError(StakeflowError):
    """Bad input to a command or a workflow: an empty goal, an unknown option value."""


class EndpointError(StakeflowError):
    """A model endpoint is unreachable or not configured."""


class ServiceError(StakeflowError):
    """A local service (dev server, embedded model, worker) could not be started or reached."""


class ToolError(StakeflowError):
    """A tool refused or failed; the message says why (bad path, host not allowed, ...)."""


class RunFailed(StakeflowError):
    """A run ended without a result (failed, canceled, terminated, timed out); the message says which step failed
    and why, ``status`` which way it ended. Raised where runs are awaited (the CLI, the Python client)."""

    def __init__(self, message: str, status: str = "failed") -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[type["RunFailed"], tuple[str, str]]:  # pickled with its status, not without
        return (type(self), (str(self), self.status))


# ApplicationError type names: activities raise them, workflows and retry policies match on them, and both
# use these names (a string typed again on one side only would let a retry policy miss what it meant to stop).
MODEL_OUTPUT_INVALID = "ModelOutputInvalid"
MODEL_AUTH = "ModelAuthError"
MODEL_REQUEST_REJECTED = "ModelRequestRejected"
MODEL_UNAVAILABLE = "ModelUnavailable"
TOOL_FAILED = "ToolFailed"
TOOL_SERVER_UNAVAILABLE = "ToolServerUnavailable"
TASK_INVALID = "TaskInvalid"
# Temporal's own type for an activity no function on the worker has (stakeflow.workflow.run_agent matches it).
ACTIVITY_NOT_REGISTERED = "NotFoundError"
STEP_FAILED = "StepFailed"
TRAINER_FAILED = "TrainerFailed"
ADAPTER_REFUSED = "AdapterRefused"
NOT_ENOUGH_DATA = "NotEnoughData"
LEARN_FAILED = "LearnFailed"
BUDGET_EXCEEDED = "BudgetExceeded"

# The registry: every type, whether a retry can help, and what it means. Non-retryable ones fail the activity (or
# the workflow) at once; the others are left to Temporal's retry policy.
ERROR_TYPES: dict[str, tuple[bool, str]] = {  # type -> (non-retryable, meaning)
    MODEL_OUTPUT_INVALID: (True, "the model's output failed validation (the workflow may escalate the step)"),
    MODEL_AUTH: (True, "the endpoint refused the key (401/403): fix the key"),
    MODEL_REQUEST_REJECTED: (True, "the endpoint refused the request itself (400): no retry changes it"),
    MODEL_UNAVAILABLE: (False, "the endpoint is unreachable or overloaded (retried; then fallback)"),
    TOOL_FAILED: (True, "a tool failed in a way no retry fixes (a call that may have acted, a broken ledger)"),
    TOOL_SERVER_UNAVAILABLE: (False, "an MCP server could not be reached (retried)"),
    TASK_INVALID: (True, "the run's request cannot run (an empty goal, no workspace for file tools)"),
    ACTIVITY_NOT_REGISTERED: (True, "Temporal's: the worker has no such activity (a team's worker without it)"),
    STEP_FAILED: (True, "a step failed and the run cannot go on"),
    TRAINER_FAILED: (True, "the learn loop's trainer failed (the last lines of its log)"),
    ADAPTER_REFUSED: (True, "vLLM refused to load the adapter"),
    NOT_ENOUGH_DATA: (True, "too few examples to train and judge an adapter"),
    LEARN_FAILED: (True, "a learn loop stage failed"),
    BUDGET_EXCEEDED: (
        True,
        "a frontier budget would be exceeded: nothing was sent (the run downgrades, waits or fails)",
    ),
}
NON_RETRYABLE: tuple[str, ...] = tuple(t for t, (final, _) in ERROR_TYPES.items() if final)
# What a model call's retry policy does not retry (MODEL_OUTPUT_INVALID: the workflow re-asks or escalates).
NON_RETRYABLE_MODEL_ERRORS = [MODEL_OUTPUT_INVALID, MODEL_AUTH, MODEL_REQUEST_REJECTED, BUDGET_EXCEEDED]
