"""stakeflow's custom search attributes, declared once: name, Temporal type, and the key the code uses.

Registered when stakeflow starts the dev server; a workflow that upserts an unregistered attribute
(or one registered with another type) fails its workflow task again and again, so the run hangs. So
workers check them, by name *and* type, before they poll, and refuse a namespace that lacks them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from temporalio.common import SearchAttributeKey


@dataclass(frozen=True)
class Attribute:
    key: str  # what the code calls it: KEYS["stakes"]
    name: str  # what Temporal calls it
    kind: str  # Temporal's type, as `temporal server start-dev --search-attribute Name=Type` spells it


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("stakes", "StakeflowStakes", "Keyword"),
    Attribute("sensitivity", "StakeflowSensitivity", "Keyword"),
    Attribute("source", "StakeflowSource", "Keyword"),
    Attribute("open_steps", "StakeflowOpenSteps", "Int"),
    Attribute("frontier_steps", "StakeflowFrontierSteps", "Int"),
    Attribute("escalations", "StakeflowEscalations", "Int"),
    Attribute("cost_usd", "StakeflowCostUsd", "Double"),
    Attribute("awaiting_approval", "StakeflowAwaitingApproval", "Bool"),
)

# name -> type: what registration and `start-dev` need.
SEARCH_ATTRIBUTES: dict[str, str] = {a.name: a.kind for a in ATTRIBUTES}

_KEY_FACTORIES = {
    "Keyword": SearchAttributeKey.for_keyword,
    "Int": SearchAttributeKey.for_int,
    "Double": SearchAttributeKey.for_float,
    "Bool": SearchAttributeKey.for_bool,
}
KEYS: dict[str, Any] = {a.key: _KEY_FACTORIES[a.kind](a.name) for a in ATTRIBUTES}


def dev_server_flags() -> list[str]:
    flags: list[str] = []
    for name, kind in SEARCH_ATTRIBUTES.items():
        flags += ["--search-attribute", f"{name}={kind}"]
    return flags


def _indexed_types() -> dict[str, int]:
    from temporalio.api.enums.v1 import IndexedValueType

    return {
        "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
        "Double": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
        "Bool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    }


async def problems(client, namespace: str) -> list[str]:
    """What is wrong with the namespace's stakeflow search attributes: each missing or mistyped one.

    Raises temporalio's RPCError when the server will not say (e.g. no operator permission).
    """
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    resp = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    have = dict(resp.custom_attributes)
    types = _indexed_types()
    found: list[str] = []
    for a in ATTRIBUTES:
        if a.name not in have:
            found.append(f"{a.name} is missing")
        elif have[a.name] != types[a.kind]:
            actual = IndexedValueType.Name(have[a.name]).removeprefix("INDEXED_VALUE_TYPE_").title()
            found.append(f"{a.name} is {actual}, not {a.kind}")
    return found


async def missing(client, namespace: str) -> list[str]:
    """stakeflow's search attributes that the namespace does not have (by name)."""
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    resp = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    have = set(resp.custom_attributes)
    return [name for name in SEARCH_ATTRIBUTES if name not in have]


async def register(client, namespace: str) -> list[str]:
    """Add the missing ones (idempotent); returns what was added."""
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    types = _indexed_types()
    todo = await missing(client, namespace)
    if todo:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace, search_attributes={n: types[SEARCH_ATTRIBUTES[n]] for n in todo}
            )
        )
    return todo
