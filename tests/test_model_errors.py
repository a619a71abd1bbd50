"""call_model's provider errors, against scripted OpenAI-compatible and Anthropic servers: which are retried (and
after how long), and which name the setting to fix without showing a key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from stakeflow.config import Settings
from stakeflow.core.errors import MODEL_AUTH, MODEL_REQUEST_REJECTED, MODEL_UNAVAILABLE
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, Reply
from tests.test_model_activity import (  # noqa: F401 (fixtures)
    FRONTIER_KEY,
    OPEN_KEY,
    PLAN,
    anthropic_server,
    call_error,
    frontier_settings,
    no_model_env,
    open_server,
    open_settings,
    request,
    unused_port,
)


@pytest.mark.parametrize("status", [429, 529])
async def test_frontier_overload_retries_after_header(
    tmp_path: Path, anthropic_server: FakeAnthropicServer, status: int
) -> None:
    anthropic_server.fail_next(status, headers={"retry-after": "7"})

    error = await call_error(frontier_settings(tmp_path, anthropic_server), request("plan", route="frontier"))

    assert (error.type, error.non_retryable) == (MODEL_UNAVAILABLE, False)
    assert error.next_retry_delay == timedelta(seconds=7)
    assert len(anthropic_server.calls) == 1


async def test_open_rate_limit_retries_after_http_date(tmp_path: Path, open_server: FakeOpenAIServer) -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    open_server.fail_next(429, headers={"retry-after": format_datetime(when, usegmt=True)})

    error = await call_error(open_settings(tmp_path, open_server), request("plan"))

    assert (error.type, error.non_retryable) == (MODEL_UNAVAILABLE, False)
    assert error.next_retry_delay is not None
    assert timedelta(seconds=20) < error.next_retry_delay <= timedelta(seconds=30)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_plain_retryable(tmp_path: Path, open_server: FakeOpenAIServer, status: int) -> None:
    open_server.fail_next(status)

    error = await call_error(open_settings(tmp_path, open_server), request("plan"))

    assert (error.type, error.non_retryable, error.next_retry_delay) == (MODEL_UNAVAILABLE, False, None)


async def test_frontier_401_names_variable_and_hides_key(tmp_path: Path, anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.fail_next(401, message=f"invalid x-api-key {FRONTIER_KEY}")  # a provider echoing the key

    error = await call_error(frontier_settings(tmp_path, anthropic_server), request("plan", route="frontier"))

    assert (error.type, error.non_retryable) == (MODEL_AUTH, True)
    assert error.message.startswith("ANTHROPIC_API_KEY was rejected (401")
    assert "run with --stakes low" in error.message
    assert FRONTIER_KEY not in error.message and FRONTIER_KEY not in repr(error.details)
    assert error.__cause__ is None


async def test_open_401_names_open_api_key(tmp_path: Path, open_server: FakeOpenAIServer) -> None:
    open_server.fail_next(401, message=f"Incorrect API key provided: {OPEN_KEY}")

    error = await call_error(open_settings(tmp_path, open_server, open_api_key=OPEN_KEY), request("plan"))

    assert (error.type, error.non_retryable) == (MODEL_AUTH, True)
    assert "STAKEFLOW_OPEN_API_KEY" in error.message and OPEN_KEY not in error.message


async def test_unknown_open_model_names_variable(tmp_path: Path) -> None:
    with FakeOpenAIServer(models=["served-model"]) as server:
        settings = open_settings(tmp_path, server, open_model="no-such-model")
        error = await call_error(settings, request("plan"))

    assert (error.type, error.non_retryable) == (MODEL_REQUEST_REJECTED, True)
    assert "STAKEFLOW_OPEN_MODEL" in error.message
    assert "The model `no-such-model` does not exist." in error.message


async def test_unknown_frontier_model_names_variable(tmp_path: Path) -> None:
    with FakeAnthropicServer(models=["claude-test-1"]) as server:
        settings = frontier_settings(tmp_path, server, frontier_model="claude-nope")
        error = await call_error(settings, request("plan", route="frontier"))

    assert (error.type, error.non_retryable) == (MODEL_REQUEST_REJECTED, True)
    assert "STAKEFLOW_FRONTIER_MODEL" in error.message and "claude-nope" in error.message


@pytest.mark.parametrize("status", [400, 422])
async def test_rejected_request_carries_provider_message(
    tmp_path: Path, open_server: FakeOpenAIServer, status: int
) -> None:
    open_server.fail_next(status, message="max_tokens is too large: 999999")

    error = await call_error(open_settings(tmp_path, open_server), request("plan"))

    assert (error.type, error.non_retryable) == (MODEL_REQUEST_REJECTED, True)
    assert f"({status}: max_tokens is too large: 999999)" in error.message


async def test_connection_refused_on_open_names_the_fix(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{unused_port()}/v1"
    error = await call_error(Settings(home=tmp_path, open_base_url=url), request("plan"))

    assert (error.type, error.non_retryable) == (MODEL_UNAVAILABLE, False)
    assert "connection refused" in error.message and url in error.message
    assert "STAKEFLOW_OPEN_BASE_URL" in error.message and "`stakeflow up`" in error.message


async def test_embedded_model_not_running_says_stakeflow_up(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, embedded_port=unused_port())
    assert settings.embedded

    error = await call_error(settings, request("plan"))

    assert (error.type, error.non_retryable) == (MODEL_UNAVAILABLE, False)
    assert "`stakeflow up`" in error.message and "STAKEFLOW_OPEN_BASE_URL" in error.message


async def test_open_timeout_is_retryable(tmp_path: Path, open_server: FakeOpenAIServer) -> None:
    open_server.enqueue(Reply.delayed(2.0, PLAN))
    settings = open_settings(tmp_path, open_server, open_timeout_s=0.3)

    error = await call_error(settings, request("plan"))

    assert (error.type, error.non_retryable) == (MODEL_UNAVAILABLE, False)
    assert "STAKEFLOW_OPEN_TIMEOUT_S" in error.message
