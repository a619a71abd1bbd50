"""The write_file tool through run_tool: writes inside the workspace, exactly once per idempotency key.

The ledger is read back from disk in its on-disk format (in the workspace, ``.stakeflow/ledger``), and
the previous release's per-host format is written by hand, so a change that would strand runs in
flight (a new file name, a new field) fails here. Crashes are an exception raised at the exact point
a worker could die.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from stakeflow.activities.tools import write_file
from stakeflow.activities.tools.ledger import Ledger
from stakeflow.activities.tools.workspace import lock_path
from stakeflow.core.errors import TOOL_FAILED
from stakeflow.stores.file_lock import exclusive
from tests.tool_cases import home_ledger, refused, run, tools_config, ws  # noqa: F401 (fixtures)


def _name(key: str) -> str:
    return f"{hashlib.sha256(key.encode()).hexdigest()}.json"


def _ledger_entry(ws: Path, key: str) -> dict:
    return json.loads((ws / ".stakeflow" / "ledger" / _name(key)).read_text())


class Crash(Exception):
    """The worker dies here."""


def _append(content: str) -> dict:
    return {"path": "log.txt", "content": content, "append": True}


async def test_write_file_creates_parents_and_records_the_ledger_in_the_workspace(ws: Path, home_ledger: Path) -> None:
    result = await run(
        "write_file",
        {"path": "out/report.md", "content": "# Report\n"},
        workspace=ws,
        key="wf/run/2/0",
        home_ledger=home_ledger,
    )
    assert (result.ok, result.output, result.replayed) == (True, "wrote 9 bytes to out/report.md", False)
    assert (ws / "out" / "report.md").read_text() == "# Report\n"
    entry = _ledger_entry(ws, "wf/run/2/0")
    # The path is relative to the workspace: another host may mount it elsewhere.
    assert {k: entry[k] for k in ("key", "tool", "path", "append", "bytes", "status")} == {
        "key": "wf/run/2/0",
        "tool": "write_file",
        "path": "out/report.md",
        "append": False,
        "bytes": 9,
        "status": "done",
    }
    assert entry["sha256"] == hashlib.sha256(b"# Report\n").hexdigest()
    assert entry["result"]["output"] == "wrote 9 bytes to out/report.md"
    assert [p.name for p in (ws / "out").iterdir()] == ["report.md"]  # no temporary file left behind
    # Only the lock file stays; the write's intent is cleared once it is done.
    assert [p.suffix for p in (ws / ".stakeflow" / "locks").iterdir()] == [".lock"]
    assert not home_ledger.exists()  # nothing written to the host's home


async def test_write_file_same_key_writes_once(ws: Path) -> None:
    args = {"path": "a.txt", "content": "first"}
    first = await run("write_file", args, workspace=ws, key="k1")
    (ws / "a.txt").write_text("changed by someone else")
    second = await run("write_file", args, workspace=ws, key="k1")
    assert (first.replayed, second.replayed) == (False, True)
    assert second.output == first.output == "wrote 5 bytes to a.txt"
    assert (ws / "a.txt").read_text() == "changed by someone else"  # the retry did not write again


async def test_write_file_append_same_key_appends_once(ws: Path) -> None:
    (ws / "log.txt").write_text("start\n")
    first = await run("write_file", _append("line\n"), workspace=ws, key="a1")
    second = await run("write_file", _append("line\n"), workspace=ws, key="a1")
    third = await run("write_file", _append("line\n"), workspace=ws, key="a2")
    assert first.output == "appended 5 bytes to log.txt (now 11 bytes)"
    assert (first.replayed, second.replayed, third.replayed) == (False, True, False)
    assert (ws / "log.txt").read_text() == "start\nline\nline\n"


@pytest.mark.parametrize("crash", ["before the append", "after the append"])
async def test_write_file_append_is_exactly_once_across_a_crash(
    ws: Path, monkeypatch: pytest.MonkeyPatch, crash: str
) -> None:
    (ws / "log.txt").write_text("start\n")
    with monkeypatch.context() as patch:
        if crash == "before the append":

            def dies(target: Path, data: bytes) -> int:
                raise Crash()

            patch.setattr(write_file, "_append", dies)
        else:
            real_record = Ledger.record

            def dies_on_done(self: Ledger, entry: dict) -> None:
                if entry["status"] == "done":
                    raise Crash()
                real_record(self, entry)

            patch.setattr(Ledger, "record", dies_on_done)
        with pytest.raises(Crash):
            await run("write_file", _append("line\n"), workspace=ws, key="a1")
    assert (ws / "log.txt").read_text() == ("start\n" if crash == "before the append" else "start\nline\n")
    assert not (ws / ".stakeflow" / "ledger" / _name("a1")).exists()

    retry = await run("write_file", _append("line\n"), workspace=ws, key="a1")
    assert (retry.ok, retry.output) == (True, "appended 5 bytes to log.txt (now 11 bytes)")
    assert (ws / "log.txt").read_text() == "start\nline\n"
    assert _ledger_entry(ws, "a1")["status"] == "done"


# --- appends shared with other writers (issue 17, item 1) ------------------------------------


async def test_append_retry_keeps_what_another_writer_appended_meanwhile(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first attempt appends and dies before recording "done"; another run (webhook runs share a
    # workspace) appends to the same file; then the first call's retry comes. Both lines must stay,
    # each once: the retry must neither cut the other run's line nor append its own again.
    (ws / "log.txt").write_text("start\n")
    real_record = Ledger.record
    crashed: list[str] = []

    def crash_once_on_done(self: Ledger, entry: dict) -> None:
        if entry.get("status") == "done" and entry.get("key") == "run-a/1/0" and not crashed:
            crashed.append("run-a/1/0")
            raise Crash()
        real_record(self, entry)

    with monkeypatch.context() as patch:
        patch.setattr(Ledger, "record", crash_once_on_done)
        with pytest.raises(Crash):
            await run("write_file", _append("mine\n"), workspace=ws, key="run-a/1/0")
        assert (ws / "log.txt").read_text() == "start\nmine\n"
        theirs = await run("write_file", _append("theirs\n"), workspace=ws, key="run-b/1/0")
        retry = await run("write_file", _append("mine\n"), workspace=ws, key="run-a/1/0")
    assert (theirs.ok, retry.ok) == (True, True)
    assert (ws / "log.txt").read_text() == "start\nmine\ntheirs\n"
    assert retry.output == "appended 5 bytes to log.txt (now 11 bytes)"


async def test_append_that_never_landed_is_appended_even_when_another_run_appended_the_same_line(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Run A dies before its append; run B appends the very same line where A's would have gone. A's
    # retry must still append: a search for "those bytes at or after the offset" would say it landed.
    (ws / "log.txt").write_text("start\n")
    with monkeypatch.context() as patch:

        def dies(target: Path, data: bytes) -> int:
            raise Crash()

        patch.setattr(write_file, "_append", dies)
        with pytest.raises(Crash):
            await run("write_file", _append("done\n"), workspace=ws, key="run-a/1/0")
    other = await run("write_file", _append("done\n"), workspace=ws, key="run-b/1/0")
    retry = await run("write_file", _append("done\n"), workspace=ws, key="run-a/1/0")
    assert (other.replayed, retry.replayed) == (False, False)
    assert (ws / "log.txt").read_text() == "start\ndone\ndone\n"


async def test_a_late_replace_does_not_undo_a_later_append(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Step 1 replaces report.md and dies before recording it; step 2 (another key) appends to it;
    # step 1's retry must see that its content went in before step 2's and not replace the file again.
    real_record = Ledger.record
    crashed: list[bool] = []

    def crash_once_on_done(self: Ledger, entry: dict) -> None:
        if entry.get("key") == "s1" and not crashed:
            crashed.append(True)
            raise Crash()
        real_record(self, entry)

    with monkeypatch.context() as patch:
        patch.setattr(Ledger, "record", crash_once_on_done)
        with pytest.raises(Crash):
            await run("write_file", {"path": "report.md", "content": "# Report\n"}, workspace=ws, key="s1")
    await run("write_file", {"path": "report.md", "content": "more\n", "append": True}, workspace=ws, key="s2")
    retry = await run("write_file", {"path": "report.md", "content": "# Report\n"}, workspace=ws, key="s1")
    assert (retry.ok, retry.replayed, retry.output) == (True, True, "wrote 9 bytes to report.md")
    assert (ws / "report.md").read_text() == "# Report\nmore\n"


async def test_a_write_waits_for_the_file_lock_and_then_checks_the_ledger(ws: Path) -> None:
    # An attempt that waited (stalled) while another attempt of the same call wrote must not write
    # again: the ledger is read with the lock held, not before waiting for it.
    (ws / "log.txt").write_text("")
    release = threading.Event()

    def hold() -> None:
        with exclusive(lock_path(ws, "log.txt")):
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.2)
    try:
        import asyncio

        late = asyncio.ensure_future(run("write_file", _append("x\n"), workspace=ws, key="k"))
        await asyncio.sleep(0.3)
        assert not late.done()  # waiting for the lock
        # The call's other attempt (another host, say) writes it in the meantime.
        (ws / "log.txt").write_text("x\n")
        Ledger(ws / ".stakeflow" / "ledger", "k").record(
            {
                "key": "k",
                "tool": "write_file",
                "path": "log.txt",
                "append": True,
                "bytes": 2,
                "sha256": hashlib.sha256(b"x\n").hexdigest(),
                "status": "done",
                "result": {"output": "appended 2 bytes to log.txt (now 2 bytes)"},
            }
        )
    finally:
        release.set()
        holder.join()
    result = await late
    assert (result.replayed, result.output) == (True, "appended 2 bytes to log.txt (now 2 bytes)")
    assert (ws / "log.txt").read_text() == "x\n"


# --- the previous release's per-host ledger ---------------------------------------------------


def _legacy_entry(home_ledger: Path, key: str, target: Path, content: str, **extra) -> None:
    # Exactly as the previous release wrote it: the host's absolute path, "original_size" for a pending append.
    home_ledger.mkdir(parents=True, exist_ok=True)
    entry = {
        "key": key,
        "tool": "write_file",
        "path": str(target.resolve()),
        "bytes": len(content.encode()),
        "sha256": hashlib.sha256(content.encode()).hexdigest(),
        **extra,
    }
    (home_ledger / _name(key)).write_text(json.dumps(entry))


async def test_a_call_the_previous_release_finished_is_replayed(ws: Path, home_ledger: Path) -> None:
    (ws / "log.txt").write_text("start\nline\n")
    _legacy_entry(
        home_ledger,
        "wf/1/0",
        ws / "log.txt",
        "line\n",
        append=True,
        status="done",
        result={"output": "appended 5 bytes to log.txt (now 11 bytes)"},
    )
    result = await run("write_file", _append("line\n"), workspace=ws, key="wf/1/0", home_ledger=home_ledger)
    assert (result.replayed, result.output) == (True, "appended 5 bytes to log.txt (now 11 bytes)")
    assert (ws / "log.txt").read_text() == "start\nline\n"


@pytest.mark.parametrize("landed", [True, False])
async def test_a_pending_append_of_the_previous_release_lands_once(ws: Path, home_ledger: Path, landed: bool) -> None:
    # The previous release recorded "pending" with the file's size, then appended (or died first).
    (ws / "log.txt").write_text("start\n" + ("line\n" if landed else ""))
    _legacy_entry(home_ledger, "wf/1/0", ws / "log.txt", "line\n", append=True, status="pending", original_size=6)
    result = await run("write_file", _append("line\n"), workspace=ws, key="wf/1/0", home_ledger=home_ledger)
    assert (result.ok, result.output) == (True, "appended 5 bytes to log.txt (now 11 bytes)")
    assert (ws / "log.txt").read_text() == "start\nline\n"
    assert _ledger_entry(ws, "wf/1/0")["status"] == "done"
    again = await run("write_file", _append("line\n"), workspace=ws, key="wf/1/0", home_ledger=home_ledger)
    assert again.replayed and (ws / "log.txt").read_text() == "start\nline\n"


# --- refusals ---------------------------------------------------------------------------------


async def test_write_file_key_reused_for_another_write_is_refused(ws: Path) -> None:
    await run("write_file", {"path": "a.txt", "content": "one"}, workspace=ws, key="k")
    error = refused(await run("write_file", {"path": "a.txt", "content": "two"}, workspace=ws, key="k"))
    assert error == "idempotency key 'k' was already used for a different write (a.txt): every write needs its own key"
    assert (ws / "a.txt").read_text() == "one"


async def test_write_file_needs_an_idempotency_key(ws: Path) -> None:
    error = refused(await run("write_file", {"path": "a.txt", "content": "x"}, workspace=ws))
    assert error == (
        "write_file needs an idempotency key so a retry cannot write twice: "
        "the workflow must set ToolRequest.idempotency_key"
    )
    assert not (ws / "a.txt").exists()


async def test_write_file_refuses_escapes(tmp_path: Path, ws: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws / "linked_dir").symlink_to(outside)
    (ws / "link.txt").symlink_to(outside / "target.txt")
    for n, path in enumerate(["../evil.txt", "linked_dir/evil.txt", "link.txt", "linked_dir/new/evil.txt"]):
        result = await run("write_file", {"path": path, "content": "x"}, workspace=ws, key=f"k{n}")
        assert refused(result).startswith(f"'{path}' leads outside the workspace")
    error = refused(await run("write_file", {"path": "/tmp/evil.txt", "content": "x"}, workspace=ws, key="abs"))
    assert error == "'/tmp/evil.txt' is an absolute path: give a path relative to the workspace, e.g. notes.txt"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["link.txt", "linked_dir", "outside", "ws"]


async def test_write_file_refuses_a_symlink_loop(ws: Path) -> None:
    (ws / "a").symlink_to(ws / "b")
    (ws / "b").symlink_to(ws / "a")
    for n, path in enumerate(["a", "a/new.txt"]):
        result = await run("write_file", {"path": path, "content": "x"}, workspace=ws, key=f"k{n}")
        assert refused(result) == (
            f"'{path}' goes through a symbolic link that loops (a link that leads back to itself): "
            "remove or fix the link, or give another path"
        )
    assert (await run("write_file", {"path": "ok.txt", "content": "x"}, workspace=ws, key="k9")).ok


async def test_the_ledger_cannot_be_read_written_or_queried_by_the_tools(ws: Path) -> None:
    # A model that could read the records would learn other runs' keys; one that could write them
    # could make a call replay instead of writing, or write twice.
    (ws / "sales.csv").write_text("region,amount\neast,10\n")
    await run("write_file", {"path": "out.txt", "content": "{}"}, workspace=ws, key="k")
    [record] = (ws / ".stakeflow" / "ledger").iterdir()
    (ws / "alias.json").symlink_to(record)
    inside = f".stakeflow/ledger/{record.name}"
    for tool, args in [
        ("read_file", {"path": inside}),
        ("read_file", {"path": "alias.json"}),
        ("write_file", {"path": inside, "content": "{}"}),
        ("write_file", {"path": ".stakeflow/ledger/forged.json", "content": "{}"}),
    ]:
        error = refused(await run(tool, args, workspace=ws, key="k2"))
        assert error == (
            f"'{args['path']}' is inside .stakeflow/, where stakeflow keeps its own records: "
            "tools cannot read or write there; give another path"
        )
    for query in [f"SELECT * FROM '{inside}'", "SELECT * FROM alias", f"SELECT * FROM read_json('{record}')"]:
        assert refused(await run("sql_query", {"query": query}, workspace=ws)).endswith("Tables: sales.csv, sales")
    tables = await run("sql_query", {"query": "SHOW TABLES"}, workspace=ws)
    assert tables.output == "name\nsales\nsales.csv\n(2 rows)"
    assert sorted(p.name for p in (ws / ".stakeflow" / "ledger").iterdir()) == [record.name]


async def test_write_file_refuses_content_over_the_limit(ws: Path) -> None:
    result = await run(
        "write_file", {"path": "a.txt", "content": "é" * 3}, workspace=ws, key="k", config=tools_config(write_file=5)
    )
    assert refused(result) == (
        "content is 6 bytes, over the 5-byte limit: write less, or raise [tools.write_file] max_bytes in stakeflow.toml"
    )


async def test_write_file_unusable_ledger_is_a_non_retryable_failure(ws: Path) -> None:
    (ws / ".stakeflow").mkdir()
    (ws / ".stakeflow" / "ledger").write_text("")  # a file where the folder should be
    with pytest.raises(ApplicationError) as caught:
        await run("write_file", {"path": "a.txt", "content": "x"}, workspace=ws, key="k")
    assert caught.value.type == TOOL_FAILED
    assert caught.value.non_retryable is True
    assert caught.value.message.startswith(f"cannot use the tool ledger folder {ws / '.stakeflow' / 'ledger'}: ")
    assert caught.value.message.endswith("make it a folder the worker can write (it is in the workspace)")


async def test_write_file_unusable_home_ledger_is_a_non_retryable_failure(tmp_path: Path, ws: Path) -> None:
    not_a_folder = tmp_path / "ledger-file"
    not_a_folder.write_text("")
    with pytest.raises(ApplicationError) as caught:
        await run("write_file", {"path": "a.txt", "content": "x"}, workspace=ws, key="k", home_ledger=not_a_folder)
    assert (caught.value.type, caught.value.non_retryable) == (TOOL_FAILED, True)
    assert caught.value.message.startswith(f"cannot use the tool ledger folder {not_a_folder}: ")
    assert caught.value.message.endswith("or set STAKEFLOW_HOME to one")
