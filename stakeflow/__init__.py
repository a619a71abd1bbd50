"""stakeflow: durable, accountable hybrid agents on Temporal.

The one import package stakeflow installs. Its subpackages stand on floors, each importing only its own and
those below: contracts (``core``), agents, workflows, configuration (``config``), libraries (``temporal``,
``traces``, ``prices``, ``stores``, ``endpoints``, ``local``), activities, workers, services, the Python client
(``client``), and the entry points (``cli``, ``webhooks``, ``codec_server``). README, "Layout", has the map;
tests/test_layers.py holds it.

``from stakeflow import Client`` is the Python client (``stakeflow.client``). It pulls in Temporal, so it is
loaded when first asked for, never by ``import stakeflow``: the CLI imports this package for every command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stakeflow.client import Client, RunHandle

__version__ = "0.3.0"
__all__ = ["Client", "RunHandle", "__version__"]
_CLIENT = ("Client", "RunHandle")


def __getattr__(name: str) -> Any:
    if name in _CLIENT:
        from stakeflow import client

        return getattr(client, name)
    raise AttributeError(f"module 'stakeflow' has no attribute '{name}'")
