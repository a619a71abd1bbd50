"""The habits CI keeps: ruff's lint and format, mypy on the app code, and test helpers out of conftest.

Each runs the real tool on the checkout, as a developer would before committing (pyproject.toml configures
all three): `ruff check . && ruff format --check . && mypy`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is missing: pip install -e '.[test]' (the test extra has it)")
    return str(path)


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_lint_passes():
    out = run(tool("ruff"), "check", "--output-format", "concise", ".")
    assert out.returncode == 0, "ruff check . (fix: ruff check --fix .)\n" + out.stdout + out.stderr


def test_ruff_format_is_applied():
    out = run(tool("ruff"), "format", "--check", ".")
    assert out.returncode == 0, "ruff format --check . (fix: ruff format .)\n" + out.stdout + out.stderr


def test_mypy_passes_on_the_app_code():
    out = run(tool("mypy"))
    assert out.returncode == 0, "mypy (files: pyproject.toml [tool.mypy])\n" + out.stdout + out.stderr


def test_every_type_ignore_names_its_code_and_reason():
    bare = []
    for root in ("stakeflow", "agents", "activities", "workflows", "workers"):
        for path in (REPO / root).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if "# type: ignore" not in line:
                    continue
                after = line.split("# type: ignore", 1)[1]
                if not after.startswith("[") or "#" not in after.split("]", 1)[1]:
                    bare.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not bare, "say which error and why: # type: ignore[code]  # reason\n" + "\n".join(bare)


def test_test_helpers_are_not_imported_from_conftest():
    # Text, not ast.parse: CPython 3.11.7's AST constructor is not safe while other threads run Python code
    # (SystemError "AST constructor recursion depth mismatch", seen in CI), and workers from earlier tests may.
    importing = re.compile(r"^\s*(from\s+(tests\.)?conftest\s+import\b|import\s+(tests\.)?conftest\b)", re.M)
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("*.py") if importing.search(p.read_text())]
    assert not offenders, "import helpers from tests/support.py (conftest.py holds fixtures and hooks): " + ", ".join(
        offenders
    )
