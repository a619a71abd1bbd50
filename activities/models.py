"""The ``call_model`` activity: one model call on the open route (OpenAI-compatible) or the frontier (Anthropic).

pydantic-ai's models build the request for each provider (through its direct request API, not an Agent: see
model_shapes.py, which also defines the output and validates it); this module picks the provider, builds the
conversation, and converts usage and errors to stakeflow's terms. SDK clients retry nothing (``max_retries=0``):
Temporal owns retries, so every attempt is in history.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from anthropic import AsyncAnthropic
from openai import AsyncOpenAI
from pydantic_ai.direct import model_request
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import Model
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.providers.anthropic import AnthropicProvider
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.providers.openai_compatible import OpenAICompatibleProvider
from pydantic_ai.providers.vllm import VLLMProvider
from pydantic_ai.usage import RunUsage
from temporalio import activity
from temporalio.exceptions import ApplicationError

from stakeflow.activities.budgets import CallBudgets
from stakeflow.activities.capture import Capturer
from stakeflow.activities.heartbeats import heartbeating
from stakeflow.activities.model_errors import CallContext, missing_frontier_key, to_application_error
from stakeflow.activities.model_messages import conversation
from stakeflow.activities.model_outputs import to_action, to_plan
from stakeflow.activities.model_shapes import ShapeCache, parse_output
from stakeflow.activities.model_stream import answer_request
from stakeflow.activities.model_trace import model_call_span, record_call
from stakeflow.activities.open_chat import LLAMACPP_PROFILE, LlamaCppChatModel, OpenChatModel, OpenRouteClient
from stakeflow.activities.parameters import ModelParameters
from stakeflow.agents.budgets import worst_case_input_tokens
from stakeflow.agents.types import CallCostRecord, CallFailure, JudgeVerdict, ModelCallRequest, ModelCallResult, Usage
from stakeflow.core.contracts import CALL_MODEL, QueueRole
from stakeflow.core.errors import MODEL_REQUEST_REJECTED, InputError
from stakeflow.endpoints import check_base_url, same_endpoint

# A model call beats at least this often, heartbeat timeout or not: a dead worker is noticed within seconds.
HEARTBEAT_EVERY_S = 5.0


@dataclass
class _Target:
    model: Model
    context: CallContext


class ModelActivities:
    """Holds the SDK clients (created on first use, reused across calls) and the ``call_model`` activity."""

    def __init__(self, params: ModelParameters) -> None:
        self._params = params
        self._open_client: AsyncOpenAI | None = None
        self._anthropic_client: AsyncAnthropic | None = None
        self._models: dict[tuple[str, str], Model] = {}
        self._other_clients: dict[str, AsyncOpenAI] = {}
        self._prices = params.prices
        self._capture = Capturer(params.traces_path)
        self._shapes = ShapeCache()
        self._budgets = CallBudgets(params.queue_prefix)

    def activities(self, role: QueueRole) -> list[Callable[..., Any]]:
        """``call_model`` on the open and frontier queues, and on the workflows queue for local model calls."""
        serves = role in ("open", "frontier") or (role == "workflows" and self._params.local_calls)
        return [self.call_model] if serves else []

    @activity.defn(name=CALL_MODEL)
    async def call_model(self, req: ModelCallRequest) -> ModelCallResult:
        """Run one model call for a plan, a step or the final answer, traced and priced.

        Failures raise ApplicationError (types in stakeflow.core.errors; see activities/model_errors.py) whose
        details carry a ``CallFailure`` (usage, latency, cost), so a failed attempt's tokens (e.g. output
        that failed validation) still count.
        """
        provider = self._provider_name(req)
        # Before anything is sent (and before its span: a refused call was never made).
        held = await self._budgets.reserve(req, self._worst_case(req)) if req.endpoint.route == "frontier" else None
        # A private call's prompt and completion stay out of spans (which go to OTLP backends) unless asked for apart.
        content = self._params.trace_content and (not req.private or self._params.trace_private_content)
        with model_call_span(req, provider, content) as span:
            try:
                result = await self._call(req)
            except ApplicationError as e:
                failure = CallFailure.from_details(e.details) or CallFailure()
                failure.cost = self._price(req, req.endpoint.model, failure.usage, failure.latency_ms / 1000)
                record_call(span, req, failure.usage, failure.cost, None, error_type=e.type)
                await self._budgets.settle(held, failure.cost.usd or 0.0)
                raise ApplicationError(
                    e.message,
                    failure.as_details(),
                    type=e.type,
                    non_retryable=e.non_retryable,
                    next_retry_delay=e.next_retry_delay,
                ) from None
            result.cost = self._price(req, result.model, result.usage, result.latency_ms / 1000)
            record_call(span, req, result.usage, result.cost, result, content=content)
            await self._budgets.settle(held, result.cost.usd or 0.0)
            await self._capture.record(req, result, activity.info().attempt if activity.in_activity() else 1)
            return result

    def worst_case_tokens(self, req: ModelCallRequest) -> int:
        """An upper bound of a frontier call's input tokens, counted offline (agents/budgets.py): every text of the
        request, its output tool's schema included, as UTF-8 bytes, plus what Anthropic adds."""
        model = req.endpoint.model or self._params.frontier.model
        shape = self._shapes.get(req, model, self._params.open.dialect)  # the output tool this call will send
        schema = "".join(json.dumps(t.parameters_json_schema) for t in shape.params.output_tools)
        carried = req.model_dump_json(exclude={"budgets"})  # every text the request is built from, and more
        return worst_case_input_tokens([carried, schema], messages=1, tools=bool(schema))

    def _worst_case(self, req: ModelCallRequest) -> float | None:
        """The most a frontier call can cost: ``worst_case_tokens`` + ``max_output_tokens`` at the price table in
        force, all input at the dearer of the input and cache-write rates. None when the model has no price."""
        if not req.budgets:
            return None
        tokens, out = self.worst_case_tokens(req), req.max_output_tokens
        model = req.endpoint.model or self._params.frontier.model
        costs = [
            self._prices.price_call(model, Usage(input_tokens=tokens, output_tokens=out, requests=1), 0),
            self._prices.price_call(model, Usage(cache_write_tokens=tokens, output_tokens=out, requests=1), 0),
        ]
        if any(c.usd is None for c in costs):
            return None
        return max(c.usd or 0.0 for c in costs)

    def _provider_name(self, req: ModelCallRequest) -> str:
        if req.endpoint.route == "frontier":
            return "anthropic"
        return {"llamacpp": "llama.cpp", "vllm": "vllm", "openai": "openai"}[self._params.open.dialect]

    def _price(self, req: ModelCallRequest, model: str, usage: Usage, seconds: float) -> CallCostRecord:
        model = model or req.endpoint.model
        cost = self._prices.price_call(model, usage, seconds)
        if cost.usd is None and model != req.endpoint.model:
            model = req.endpoint.model  # priced by the id we asked for
            cost = self._prices.price_call(model, usage, seconds)
        equivalent = None
        if req.endpoint.route == "open" and req.frontier_model:
            equivalent = self._prices.frontier_equivalent(req.frontier_model, usage).usd
        elif cost.usd is not None:
            equivalent = cost.usd
        return CallCostRecord(
            usd=cost.usd,
            frontier_equivalent_usd=equivalent,
            price_version=cost.version,
            unpriced=cost.usd is None,
            local=cost.source == "local",
            cache_saved_usd=self._cache_saved(model, usage, seconds, cost.usd),
        )

    def _cache_saved(self, model: str, usage: Usage, seconds: float, usd: float | None) -> float:
        """The call's price with every input token uncached, less what it cost (0 when it used no cache)."""
        if usd is None or not (usage.cache_read_tokens or usage.cache_write_tokens):
            return 0.0
        whole = Usage(input_tokens=usage.total_input_tokens, output_tokens=usage.output_tokens, requests=usage.requests)
        uncached = self._prices.price_call(model, whole, seconds).usd
        return round(uncached - usd, 9) if uncached is not None else 0.0

    async def _call(self, req: ModelCallRequest) -> ModelCallResult:
        target = self._open_target(req) if req.endpoint.route == "open" else self._frontier_target(req)
        shape = self._shapes.get(req, target.model.model_name, self._params.open.dialect)  # built once per key
        started = time.monotonic()
        response: ModelResponse | None = None
        tail = ("", 0)  # what of a streamed answer's text the workflow is to publish (model_stream.py)
        try:
            if req.stream:  # the answer streams, published as the model writes it
                streamed, tail = await heartbeating(
                    answer_request(
                        target.model,
                        conversation(req),
                        shape.settings,
                        shape.params,
                        req,
                        tokenizer_url=_server_root(target.context.url) if self._counts_streams(target) else "",
                    ),
                    HEARTBEAT_EVERY_S,
                )
                response = streamed
            else:
                response = await heartbeating(
                    model_request(
                        target.model,
                        conversation(req),
                        model_settings=shape.settings,
                        model_request_parameters=shape.params,
                    ),
                    HEARTBEAT_EVERY_S,
                )
            output = parse_output(shape, response)
        except Exception as e:
            spent = CallFailure(
                usage=_usage_of_messages([response] if response is not None else []),
                latency_ms=(time.monotonic() - started) * 1000,
            )
            error = to_application_error(
                e, target.context, spent.as_details(), response=response, max_output_tokens=req.max_output_tokens
            )
            if error is None:
                raise
            # No chain: the SDK error may carry request data or an echoed key into history.
            raise error from None
        return ModelCallResult(
            route=req.endpoint.route,
            model=response.model_name or target.model.model_name,
            plan=to_plan(output) if req.purpose in ("plan", "replan") else None,
            action=to_action(output) if req.purpose == "step" else None,
            text=output if req.purpose == "answer" else None,
            verdict=JudgeVerdict.model_validate(output.model_dump()) if req.purpose == "judge" else None,
            usage=_usage_of_messages([response]),
            latency_ms=(time.monotonic() - started) * 1000,
            stream_call=tail[0],
            stream_sent=tail[1],
        )

    async def close(self) -> None:
        """Close the SDK clients' connection pools (a worker calls this on shutdown)."""
        for client in (self._open_client, self._anthropic_client, *self._other_clients.values()):
            if client is not None:
                await client.close()
        self._open_client = self._anthropic_client = None
        self._other_clients.clear()
        self._models.clear()
        self._shapes.clear()

    # --- routes -------------------------------------------------------------------------

    def _counts_streams(self, target: _Target) -> bool:
        """Whether a streamed answer's tokens must be counted apart: llama.cpp's server streams no usage."""
        return target.context.route == "open" and self._params.open.dialect == "llamacpp"

    def _open_target(self, req: ModelCallRequest) -> _Target:
        s = self._params.open
        name = req.endpoint.model or s.model
        key = s.api_key.get_secret_value() if s.api_key else ""
        url = s.url
        if req.endpoint.base_url and not same_endpoint(req.endpoint.base_url, s.url):
            url = _candidate_url(req.endpoint.base_url)  # a candidate on another server (evals replay)
        context = CallContext(
            "open",
            name,
            url,
            s.timeout_s,
            s.embedded and url == s.url,
            (key,) if key else (),
            crash_report=self._params.embedded_crash if s.embedded and url == s.url else None,
        )
        cache_key = ("open", name) if url == s.url else (f"open:{url}", name)
        if cache_key not in self._models:
            if url != s.url:
                # STAKEFLOW_OPEN_API_KEY belongs to the configured endpoint: another server never receives it.
                client = self._other_clients.get(url) or OpenRouteClient(
                    base_url=url, api_key="none", max_retries=0, timeout=s.timeout_s
                )
                self._other_clients[url] = client
            else:
                if self._open_client is None:
                    self._open_client = OpenRouteClient(
                        base_url=s.url, api_key=key or "none", max_retries=0, timeout=s.timeout_s
                    )
                client = self._open_client
            model: Model
            if s.dialect == "llamacpp":
                compatible = OpenAICompatibleProvider("llamacpp", openai_client=client, profile=LLAMACPP_PROFILE)
                model = LlamaCppChatModel(name, provider=compatible)
            elif s.dialect == "vllm":
                model = OpenChatModel(name, provider=VLLMProvider(openai_client=client))
            else:
                model = OpenChatModel(name, provider=OpenAIProvider(openai_client=client))
            self._models[cache_key] = model
        return _Target(self._models[cache_key], context)

    def _frontier_target(self, req: ModelCallRequest) -> _Target:
        s = self._params.frontier
        if s.api_key is None:  # no key here, or this worker may not call the frontier
            raise missing_frontier_key()
        name = req.endpoint.model or s.model
        key = s.api_key.get_secret_value()
        url = s.base_url or "https://api.anthropic.com"
        context = CallContext("frontier", name, url, s.timeout_s, secrets=(key,))
        if ("frontier", name) not in self._models:
            if self._anthropic_client is None:
                self._anthropic_client = AsyncAnthropic(
                    api_key=key,
                    base_url=s.base_url,
                    max_retries=0,
                    timeout=s.timeout_s,
                    # stakeflow's own call_model span is the record; the SDK's would count each call twice.
                    open_telemetry=False,
                )
            provider = AnthropicProvider(anthropic_client=self._anthropic_client)
            self._models["frontier", name] = AnthropicModel(name, provider=provider)
        return _Target(self._models["frontier", name], context)


def _candidate_url(url: str) -> str:
    """The checked URL of a candidate's server; a non-retryable rejection (naming the fix) before anything is sent."""
    try:
        return check_base_url(url)
    except InputError as e:
        raise ApplicationError(str(e), type=MODEL_REQUEST_REJECTED, non_retryable=True) from None


def to_usage(usage: RunUsage) -> Usage:
    """stakeflow's Usage from pydantic-ai's (definitions in ``stakeflow.agents.types.Usage``).

    pydantic-ai's ``input_tokens`` is the total input on every provider (it adds Anthropic's separate
    cache counts back in; OpenAI's ``prompt_tokens`` already includes ``cached_tokens``); Usage keeps the
    uncached part and the cache counts, from which the total and each route's raw figure follow.
    """
    return Usage(
        input_tokens=max(0, usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens),
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        requests=usage.requests,
    )


def _server_root(url: str) -> str:
    """An OpenAI-compatible base URL's server root (``http://host:8765/v1`` -> ``http://host:8765``)."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _usage_of_messages(messages: list[ModelMessage]) -> Usage:
    """The usage of the responses a failed run did receive (so invalid output is still counted)."""
    total = RunUsage()
    for message in messages:
        if isinstance(message, ModelResponse):
            total.incr(message.usage)
            total.requests += 1
    return to_usage(total)
