"""The write_file tool through run_tool: writes inside the workspace, exactly once per idempotency key.

The ledger is read back from disk in its on-disk format, so a change that would strand runs in
flight (a new file name, a new field) fails here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.tools.ledger import Ledger
from stakeflow.core.errors import TOOL_FAILED
from tests.tool_cases import ledger_dir, refused, run, tools_config, ws  # noqa: F401 (fixtures)


def _ledger_entry(ledger_dir: Path, key: str) -> dict:
    return json.loads((ledger_dir / f"{hashlib.sha256(key.encode()).hexdigest()}.json").read_text())


async def test_write_file_creates_parents_and_records_the_ledger(ws: Path, ledger_dir: Path) -> None:
    result = await run(
        "write_file",
        {"path": "out/report.md", "content": "# Report\n"},
        workspace=ws,
        key="run-1/2/0",
        ledger_dir=ledger_dir,
    )
    assert (result.ok, result.output, result.replayed) == (True, "wrote 9 bytes to out/report.md", False)
    assert (ws / "out" / "report.md").read_text() == "# Report\n"
    entry = _ledger_entry(ledger_dir, "run-1/2/0")
    assert (entry["key"], entry["tool"], entry["path"], entry["bytes"], entry["status"]) == (
        "run-1/2/0",
        "write_file",
        str((ws / "out" / "report.md").resolve()),
        9,
        "done",
    )
    assert entry["result"]["output"] == "wrote 9 bytes to out/report.md"
    assert [p.name for p in (ws / "out").iterdir()] == ["report.md"]  # no temporary file left behind


async def test_write_file_same_key_writes_once(ws: Path, ledger_dir: Path) -> None:
    args = {"path": "a.txt", "content": "first"}
    first = await run("write_file", args, workspace=ws, key="k1", ledger_dir=ledger_dir)
    (ws / "a.txt").write_text("changed by someone else")
    second = await run("write_file", args, workspace=ws, key="k1", ledger_dir=ledger_dir)
    assert (first.replayed, second.replayed) == (False, True)
    assert second.output == first.output == "wrote 5 bytes to a.txt"
    assert (ws / "a.txt").read_text() == "changed by someone else"  # the retry did not write again


async def test_write_file_append_same_key_appends_once(ws: Path, ledger_dir: Path) -> None:
    (ws / "log.txt").write_text("start\n")
    args = {"path": "log.txt", "content": "line\n", "append": True}
    first = await run("write_file", args, workspace=ws, key="a1", ledger_dir=ledger_dir)
    second = await run("write_file", args, workspace=ws, key="a1", ledger_dir=ledger_dir)
    third = await run("write_file", args, workspace=ws, key="a2", ledger_dir=ledger_dir)
    assert first.output == "appended 5 bytes to log.txt (now 11 bytes)"
    assert (first.replayed, second.replayed, third.replayed) == (False, True, False)
    assert (ws / "log.txt").read_text() == "start\nline\nline\n"


class Crash(Exception):
    """The worker dies here."""


@pytest.mark.parametrize("crash_after", ["pending", "done"])
async def test_write_file_append_is_exactly_once_across_a_crash(
    ws: Path, ledger_dir: Path, monkeypatch: pytest.MonkeyPatch, crash_after: str
) -> None:
    # crash_after="pending": the worker dies after recording the intent, before appending.
    # crash_after="done": it dies after appending, while recording completion.
    (ws / "log.txt").write_text("start\n")
    args = {"path": "log.txt", "content": "line\n", "append": True}
    real_record = Ledger.record

    def crashing_record(self: Ledger, entry: dict) -> None:
        if entry["status"] == "done" and crash_after == "done":
            raise Crash()
        real_record(self, entry)
        if entry["status"] == "pending" and crash_after == "pending":
            raise Crash()

    with monkeypatch.context() as patch:
        patch.setattr(Ledger, "record", crashing_record)
        with pytest.raises(Crash):
            await run("write_file", args, workspace=ws, key="a1", ledger_dir=ledger_dir)
    expected_after_crash = "start\n" if crash_after == "pending" else "start\nline\n"
    assert (ws / "log.txt").read_text() == expected_after_crash
    assert _ledger_entry(ledger_dir, "a1")["status"] == "pending"

    retry = await run("write_file", args, workspace=ws, key="a1", ledger_dir=ledger_dir)
    assert (retry.ok, retry.output) == (True, "appended 5 bytes to log.txt (now 11 bytes)")
    assert (ws / "log.txt").read_text() == "start\nline\n"
    assert _ledger_entry(ledger_dir, "a1")["status"] == "done"


async def test_write_file_replays_a_crafted_pending_entry(ws: Path, ledger_dir: Path) -> None:
    # The ledger as a crash between append and completion leaves it, written by hand.
    content = "line\n"
    (ws / "log.txt").write_text("start\n" + content)
    ledger_dir.mkdir()
    entry = {
        "key": "k",
        "tool": "write_file",
        "path": str((ws / "log.txt").resolve()),
        "append": True,
        "bytes": 5,
        "sha256": hashlib.sha256(content.encode()).hexdigest(),
        "status": "pending",
        "original_size": 6,
    }
    (ledger_dir / f"{hashlib.sha256(b'k').hexdigest()}.json").write_text(json.dumps(entry))
    args = {"path": "log.txt", "content": content, "append": True}
    assert (await run("write_file", args, workspace=ws, key="k", ledger_dir=ledger_dir)).ok
    assert (ws / "log.txt").read_text() == "start\nline\n"


async def test_write_file_key_reused_for_another_write_is_refused(ws: Path, ledger_dir: Path) -> None:
    await run("write_file", {"path": "a.txt", "content": "one"}, workspace=ws, key="k", ledger_dir=ledger_dir)
    error = refused(
        await run("write_file", {"path": "a.txt", "content": "two"}, workspace=ws, key="k", ledger_dir=ledger_dir)
    )
    assert error == (
        f"idempotency key 'k' was already used for a different write ({(ws / 'a.txt').resolve()}): "
        "every write needs its own key"
    )
    assert (ws / "a.txt").read_text() == "one"


async def test_write_file_needs_an_idempotency_key(ws: Path, ledger_dir: Path) -> None:
    error = refused(await run("write_file", {"path": "a.txt", "content": "x"}, workspace=ws, ledger_dir=ledger_dir))
    assert error == (
        "write_file needs an idempotency key so a retry cannot write twice: "
        "the workflow must set ToolRequest.idempotency_key"
    )
    assert not (ws / "a.txt").exists()


async def test_write_file_refuses_escapes(tmp_path: Path, ws: Path, ledger_dir: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws / "linked_dir").symlink_to(outside)
    (ws / "link.txt").symlink_to(outside / "target.txt")
    for n, path in enumerate(["../evil.txt", "linked_dir/evil.txt", "link.txt", "linked_dir/new/evil.txt"]):
        result = await run(
            "write_file", {"path": path, "content": "x"}, workspace=ws, key=f"k{n}", ledger_dir=ledger_dir
        )
        assert refused(result).startswith(f"'{path}' leads outside the workspace")
    error = refused(await run("write_file", {"path": "/tmp/evil.txt", "content": "x"}, workspace=ws, key="abs"))
    assert error == "'/tmp/evil.txt' is an absolute path: give a path relative to the workspace, e.g. notes.txt"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["link.txt", "linked_dir", "outside", "ws"]


async def test_write_file_refuses_content_over_the_limit(ws: Path, ledger_dir: Path) -> None:
    result = await run(
        "write_file",
        {"path": "a.txt", "content": "é" * 3},
        workspace=ws,
        key="k",
        config=tools_config(write_file=5),
        ledger_dir=ledger_dir,
    )
    assert refused(result) == (
        "content is 6 bytes, over the 5-byte limit: write less, or raise [tools.write_file] max_bytes in stakeflow.toml"
    )


async def test_write_file_unusable_ledger_is_a_non_retryable_failure(tmp_path: Path, ws: Path) -> None:
    not_a_folder = tmp_path / "ledger-file"
    not_a_folder.write_text("")
    with pytest.raises(ApplicationError) as caught:
        await run("write_file", {"path": "a.txt", "content": "x"}, workspace=ws, key="k", ledger_dir=not_a_folder)
    assert caught.value.type == TOOL_FAILED
    assert caught.value.non_retryable is True
    assert str(not_a_folder) in caught.value.message
