"""Every ApplicationError type stakeflow raises or matches is a name in stakeflow/core/errors.py, never a string typed
again: a retry policy that spells a type its raiser spells otherwise retries what it meant to stop, silently.

Text, not ast.parse (see tests/test_layers.py): a ``type=`` or ``non_retryable_error_types=`` with a string
literal in it is what this looks for.
"""

from __future__ import annotations

import re

from stakeflow.core import errors
from tests.test_layers import modules

# `type="TrainerFailed"`, `type=kind or "LearnFailed"`: an error type spelled as a literal where it is raised.
RAISED_AS_TEXT = re.compile(r"\btype=[^,\n)]*\"([A-Z]\w+)\"")
# `non_retryable_error_types=["ModelOutputInvalid", ...]`: a retry policy spelling the types again.
MATCHED_AS_TEXT = re.compile(r"non_retryable_error_types=\[\s*\"")


def test_no_error_type_is_spelled_as_a_string_outside_the_registry():
    found = []
    for name, path in modules().items():
        if name == "stakeflow.core.errors":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if RAISED_AS_TEXT.search(line) or MATCHED_AS_TEXT.search(line):
                found.append(f"{name}:{n}: {line.strip()}")
    assert not found, "use the names in stakeflow/core/errors.py:\n" + "\n".join(found)


def test_the_registry_holds_every_type_and_says_which_no_retry_can_fix():
    names = {v for k, v in vars(errors).items() if k.isupper() and isinstance(v, str)}
    assert set(errors.ERROR_TYPES) == names  # every type constant is registered, and only those
    assert {"TrainerFailed", "AdapterRefused", "NotEnoughData", "LearnFailed"} <= set(errors.NON_RETRYABLE)
    assert set(errors.NON_RETRYABLE_MODEL_ERRORS) <= set(errors.NON_RETRYABLE)
    assert errors.MODEL_UNAVAILABLE not in errors.NON_RETRYABLE  # an endpoint that comes back: retried
    assert errors.TOOL_SERVER_UNAVAILABLE not in errors.NON_RETRYABLE
