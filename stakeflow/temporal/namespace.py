"""What a Temporal namespace needs before stakeflow's workers may poll it: the search attributes, by name and type.

Checked by workers (`stakeflow worker` refuses a namespace that lacks them: runs would hang) and by
`stakeflow doctor`; registered by `stakeflow admin setup-search-attributes` (idempotent).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stakeflow.core.contracts import ATTRIBUTES, SEARCH_ATTRIBUTES

if TYPE_CHECKING:
    from temporalio.api.enums.v1 import IndexedValueType


def _indexed_types() -> dict[str, IndexedValueType.ValueType]:
    from temporalio.api.enums.v1 import IndexedValueType

    return {
        "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
        "Double": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
        "Bool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    }


async def _registered(client, namespace: str) -> dict[str, IndexedValueType.ValueType]:
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    resp = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    return dict(resp.custom_attributes)


async def problems(client, namespace: str) -> list[str]:
    """Each of stakeflow's search attributes that is missing or mistyped, in words.

    Raises temporalio's RPCError when the server will not say (e.g. no operator permission).
    """
    from temporalio.api.enums.v1 import IndexedValueType

    have = await _registered(client, namespace)
    types = _indexed_types()
    found: list[str] = []
    for a in ATTRIBUTES:
        if a.name not in have:
            found.append(f"{a.name} is missing")
        elif have[a.name] != types[a.kind]:
            actual = IndexedValueType.Name(have[a.name]).removeprefix("INDEXED_VALUE_TYPE_").title()
            found.append(f"{a.name} is {actual}, not {a.kind}")
    return found


async def register(client, namespace: str) -> list[str]:
    """Add the missing ones (idempotent); returns what was added."""
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    types = _indexed_types()
    have = await _registered(client, namespace)
    todo = [name for name in SEARCH_ATTRIBUTES if name not in have]
    if todo:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace, search_attributes={n: types[SEARCH_ATTRIBUTES[n]] for n in todo}
            )
        )
    return todo
