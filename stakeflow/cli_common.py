"""What every CLI command shares: settings, error handling, output helpers."""

from __future__ import annotations

import json
import os
from functools import wraps
from typing import Any, Callable

import click

from stakeflow import tasks
from stakeflow.core.errors import StakeflowError
from stakeflow.settings import Settings, load_settings


class Failed(click.ClickException):
    """A run that failed: exit code 1 and the reason, already printed as wanted."""


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn stakeflow errors into one-line messages; STAKEFLOW_DEBUG=1 shows the traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (StakeflowError, tasks.RunFailed) as e:
            if os.environ.get("STAKEFLOW_DEBUG") == "1":
                raise
            raise click.ClickException(str(e)) from None

    return wrapper


def current_settings() -> Settings:
    return load_settings()


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def err(text: str) -> None:
    click.echo(text, err=True)


