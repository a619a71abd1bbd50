"""Which signed deliveries start runs: ``ping`` never does, and a hook's ``events`` / ``actions`` filters
choose among the rest. Pure functions of a delivery's headers and parsed payload.

GitHub sends every event a hook subscribes to, and a ``ping`` when the hook is created; a goal such as
``Triage {payload.issue.title}`` is meant for some of them only (``issues`` opened or reopened, not
labeled or edited). A delivery the filters do not match is answered 202 with the reason and starts
nothing: a 2xx, so the sender does not mark the hook as failing or retry it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stakeflow.config import HookConfig

STAKEFLOW_EVENT = "x-stakeflow-event"
GITHUB_EVENT = "x-github-event"
EVENT_HEADERS = (STAKEFLOW_EVENT, GITHUB_EVENT)
PING = "ping"
_SHOWN = 100  # characters of an event or action name quoted back in a reason


def event_of(headers: Mapping[str, str]) -> str | None:
    """The delivery's event: X-Stakeflow-Event, else X-GitHub-Event, else None."""
    for h in EVENT_HEADERS:
        if value := headers.get(h, "").strip():
            return value
    return None


def is_ping(headers: Mapping[str, str]) -> bool:
    """True for the event GitHub sends when a hook is created (and a sender may send to test one)."""
    return event_of(headers) == PING


def ignored_because(hook: HookConfig, event: str | None, payload: Any) -> str | None:
    """Why the hook's filters do not start a run for this delivery; None when they do."""
    if hook.events is not None:
        if event is None:
            return (
                "no X-GitHub-Event or X-Stakeflow-Event header, and this hook starts runs only for "
                f"events {_list(hook.events)}"
            )
        if event not in hook.events:
            return f"event '{_shown(event)}' is not in events {_list(hook.events)}"
    if hook.actions is not None:
        action = payload.get("action") if isinstance(payload, dict) else None
        if not isinstance(action, str):
            return (
                f"the payload has no string 'action', and this hook starts runs only for actions {_list(hook.actions)}"
            )
        if action not in hook.actions:
            return f"action '{_shown(action)}' is not in actions {_list(hook.actions)}"
    return None


def _list(names: list[str]) -> str:
    return "[" + ", ".join(names) + "]"


def _shown(name: str) -> str:
    return name if len(name) <= _SHOWN else name[: _SHOWN - 1] + "…"
