"""Span names and attribute keys, in one place: OpenTelemetry GenAI conventions plus stakeflow's own.

The trace store promotes these to columns; the CLI's `trace` and `costs` read them.
"""

# --- span names ---------------------------------------------------------------------------
SPAN_RUN = "stakeflow.run"  # one per run (workflow)
SPAN_STEP = "stakeflow.step"  # one per plan / step / answer phase
SPAN_CHAT = "chat"  # one per model call: "chat {model}" (GenAI convention)
SPAN_TOOL = "execute_tool"  # one per tool call: "execute_tool {tool}" (GenAI convention)

# --- GenAI semantic conventions ----------------------------------------------------------
GEN_AI_OPERATION = "gen_ai.operation.name"  # "chat" | "execute_tool"
GEN_AI_PROVIDER = "gen_ai.provider.name"  # "anthropic" | "vllm" | "llama.cpp" | "openai"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"  # total input: uncached + cache read + cache write
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_CACHE_WRITE = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"  # only with STAKEFLOW_TRACE_CONTENT=1
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"  # only with STAKEFLOW_TRACE_CONTENT=1

# --- stakeflow ----------------------------------------------------------------------------
RUN_ID = "stakeflow.run_id"  # the workflow id
STEP = "stakeflow.step"  # 0 = plan, 1..n = steps, n+1 = answer
PURPOSE = "stakeflow.purpose"  # plan | step | replan | answer
ROUND = "stakeflow.round"  # a step's round (model call, its tool calls, ...), on model-call and tool spans
STUCK = "stakeflow.stuck"  # step span: why the step ended without the result it needed
ROUTE = "stakeflow.route"  # open | frontier
STAKES = "stakeflow.stakes"  # low | high
REASON = "stakeflow.reason"
SOURCE = "stakeflow.source"  # cli | webhook name
AGENT = "stakeflow.agent"  # the named agent of the run ([agents.<name>]), on run and model-call spans
SENSITIVITY = "stakeflow.sensitivity"
ESCALATED = "stakeflow.escalated"
ATTEMPT = "stakeflow.attempt"  # Temporal activity attempt (1 = first)
RAW_INPUT_TOKENS = "stakeflow.usage.raw_input_tokens"  # as sent: OpenAI-compatible with cached, Anthropic without
COST_USD = "stakeflow.cost_usd"  # absent when unpriced
FRONTIER_EQUIVALENT_USD = "stakeflow.frontier_equivalent_usd"  # what the frontier model would have charged
PRICE_VERSION = "stakeflow.price_version"
UNPRICED = "stakeflow.unpriced"  # true when no price is configured for the model
DURATION_S = "stakeflow.call_seconds"  # measured model-call seconds (GPU-hour pricing)
STATUS = "stakeflow.status"  # run / step / call outcome: ok | failed | ...
# Step spans name the routed model here, not in gen_ai.request.model: only model-call spans carry gen_ai.*
# request attributes, so an OTLP backend counts each model call once (a step is not an LLM call).
MODEL = "stakeflow.model"
ERROR_TYPE = "error.type"
# run span only
OPEN_STEPS = "stakeflow.open_steps"
FRONTIER_STEPS = "stakeflow.frontier_steps"
ESCALATIONS = "stakeflow.escalations"
STEP_COUNT = "stakeflow.steps"
ANSWER_SUPPORTED = "stakeflow.answer_supported"  # the answer check's verdict (absent: the run did not check)
UNSUPPORTED_CLAIMS = "stakeflow.unsupported_claims"  # the figures and quotations nothing the run observed holds
REPLANS = "stakeflow.replans"
MODEL_CALLS = "stakeflow.model_calls"  # run span: every model call of the run (failed attempts included)
UNPRICED_CALLS = "stakeflow.unpriced_calls"  # calls without a price: the run's cost is a lower bound, never "$0"
DOWNGRADED_BY_BUDGET = "stakeflow.downgraded_by_budget"  # run span: model calls a spent frontier budget kept open
BUDGETS = "stakeflow.budgets"  # run span: the frontier budgets its calls drew on
# step span: the budget that downgraded its model call to the open model (its reason says "downgraded: frontier budget")
BUDGET_DOWNGRADED = "stakeflow.budget.downgraded"
