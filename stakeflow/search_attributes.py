"""stakeflow's custom search attributes, in one place.

Registered when stakeflow starts the dev server; a workflow that upserts an unregistered
attribute would retry its task forever, so they must exist before the first run.
"""

from __future__ import annotations

# name -> Temporal type (as `temporal server start-dev --search-attribute Name=Type` spells it)
SEARCH_ATTRIBUTES: dict[str, str] = {
    "StakeflowStakes": "Keyword",
    "StakeflowSensitivity": "Keyword",
    "StakeflowSource": "Keyword",
    "StakeflowOpenSteps": "Int",
    "StakeflowFrontierSteps": "Int",
    "StakeflowEscalations": "Int",
    "StakeflowCostUsd": "Double",
    "StakeflowAwaitingApproval": "Bool",
}


def dev_server_flags() -> list[str]:
    flags: list[str] = []
    for name, kind in SEARCH_ATTRIBUTES.items():
        flags += ["--search-attribute", f"{name}={kind}"]
    return flags


def _keys():
    from temporalio.common import SearchAttributeKey as K

    return {
        "stakes": K.for_keyword("StakeflowStakes"),
        "sensitivity": K.for_keyword("StakeflowSensitivity"),
        "source": K.for_keyword("StakeflowSource"),
        "open_steps": K.for_int("StakeflowOpenSteps"),
        "frontier_steps": K.for_int("StakeflowFrontierSteps"),
        "escalations": K.for_int("StakeflowEscalations"),
        "cost_usd": K.for_float("StakeflowCostUsd"),
        "awaiting_approval": K.for_bool("StakeflowAwaitingApproval"),
    }


KEYS = _keys()


async def missing(client, namespace: str) -> list[str]:
    """stakeflow's search attributes that the namespace does not have."""
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    resp = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    have = set(resp.custom_attributes)
    return [name for name in SEARCH_ATTRIBUTES if name not in have]


async def register(client, namespace: str) -> list[str]:
    """Add the missing ones (idempotent); returns what was added."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    types = {
        "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
        "Double": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
        "Bool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    }
    todo = await missing(client, namespace)
    if todo:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace, search_attributes={n: types[SEARCH_ATTRIBUTES[n]] for n in todo}
            )
        )
    return todo
