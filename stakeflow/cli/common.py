"""What every CLI command shares: settings, the Temporal client, error handling, output helpers."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import click

from stakeflow.config import Settings, load_settings
from stakeflow.core.errors import StakeflowError
from stakeflow.services import runs

if TYPE_CHECKING:
    from temporalio.client import Client

T = TypeVar("T")


class Failed(click.ClickException):
    """A run that failed: exit code 1 and the reason, already printed as wanted."""


class Unsupported(click.ClickException):
    """`run --strict`: the run completed, but its answer gives figures nothing it observed supports: exit code 3."""

    exit_code = 3


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn stakeflow errors into one-line messages; STAKEFLOW_DEBUG=1 shows the traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (StakeflowError, runs.RunFailed) as e:
            if os.environ.get("STAKEFLOW_DEBUG") == "1":
                raise
            raise click.ClickException(str(e)) from None

    return wrapper


def current_settings() -> Settings:
    return load_settings()


async def temporal_client(settings: Settings) -> Client:
    """A Temporal client for the configured server (ServiceError naming the fix when unreachable)."""
    from stakeflow.temporal.connection import connect

    return await connect(settings)


async def open_run(settings: Settings, ident: str) -> tuple[Client, runs.ResolvedRun]:
    """A client and the run ``ident`` names (workflow id or Temporal run id); InputError when none."""
    client = await temporal_client(settings)
    return client, await runs.resolve_run(client, ident)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine to completion from click's synchronous code.

    A command may be invoked from code that already runs an event loop (a notebook, an async
    program driving click): ``asyncio.run`` refuses there, so the coroutine then gets a thread and
    a loop of its own.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def err(text: str) -> None:
    click.echo(text, err=True)
