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


# ApplicationError type names: the workflow and the retry policies match on these.
MODEL_OUTPUT_INVALID = "ModelOutputInvalid"
MODEL_AUTH = "ModelAuthError"
MODEL_REQUEST_REJECTED = "ModelRequestRejected"
MODEL_UNAVAILABLE = "ModelUnavailable"
TOOL_FAILED = "ToolFailed"
TOOL_SERVER_UNAVAILABLE = "ToolServerUnavailable"  # an MCP server could not be reached: retried
TASK_INVALID = "TaskInvalid"
STEP_FAILED = "StepFailed"
BUDGET_EXCEEDED = "BudgetExceeded"

NON_RETRYABLE_MODEL_ERRORS = [MODEL_OUTPUT_INVALID, MODEL_AUTH, MODEL_REQUEST_REJECTED]
