"""A delivery's JSON body, parsed with a nesting limit.

``json.loads`` recurses once per nested array or object: 100,000 ``[`` in a 200 kB body (well under
``max_body_bytes``) raise RecursionError, which would be a 500. Anything nested deeper than
``MAX_DEPTH`` is refused with a 400 instead, whether the parser gave up or not, so that what is parsed
can also be walked and re-encoded (``render_goal`` dumps a sub-object as JSON) without recursing too
far. Real senders' payloads (GitHub's events, for one) are objects a few levels deep.
"""

from __future__ import annotations

import json
from typing import Any

from stakeflow.webhooks.refused import Refused

MAX_DEPTH = 100


def parse_payload(body: bytes) -> Any:
    """The parsed body; Refused(400) when it is not JSON or nests deeper than MAX_DEPTH."""
    too_deep = Refused(
        400, f"the JSON body nests deeper than {MAX_DEPTH} levels of arrays and objects: send a flatter payload"
    )
    try:
        payload = json.loads(body)
    except RecursionError:
        raise too_deep from None
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "the body is not valid JSON") from None
    if _deeper_than(payload, MAX_DEPTH):
        raise too_deep
    return payload


def _deeper_than(value: Any, limit: int) -> bool:
    """True when arrays and objects nest more than ``limit`` levels; iterative, so it cannot recurse."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False
