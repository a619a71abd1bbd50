"""Connecting to Temporal, with the pydantic data converter and a clear error."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from stakeflow.core.errors import ServiceError
from stakeflow.telemetry import plugins
from stakeflow.settings import Settings


async def connect(settings: Settings) -> Client:
    """A client for the configured server; ServiceError naming the fix when unreachable."""
    try:
        return await Client.connect(
            settings.address,
            namespace=settings.temporal_namespace,
            data_converter=pydantic_data_converter,
            plugins=plugins(),
        )
    except RuntimeError as e:
        hint = (
            "check STAKEFLOW_TEMPORAL_ADDRESS" if settings.temporal_address else "run `stakeflow up` to start it"
        )
        raise ServiceError(f"cannot reach Temporal at {settings.address} ({_short(e)}): {hint}") from None


def _short(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:160]
