"""The read_file tool through run_tool: reads inside the workspace, its size limit, every way out refused.

Workspace confinement (``activities/tools/workspace.py``) is shared by the file tools; its cases are
here, with the tool that reads.
"""

from __future__ import annotations

from pathlib import Path

from tests.tool_cases import refused, run, tools_config, ws  # noqa: F401 (ws is a fixture)


async def test_read_file(ws: Path) -> None:
    (ws / "notes").mkdir()
    (ws / "notes" / "a.txt").write_text("héllo\nworld\n", encoding="utf-8")
    result = await run("read_file", {"path": "notes/a.txt"}, workspace=ws)
    assert (result.ok, result.output, result.truncated) == (True, "héllo\nworld\n", False)


async def test_read_file_truncates_at_max_bytes(ws: Path) -> None:
    (ws / "a.txt").write_text("0123456789")
    result = await run("read_file", {"path": "a.txt"}, workspace=ws, config=tools_config(read_file=4))
    assert result.ok and result.truncated
    assert result.output == (
        "0123\n[truncated: showing the first 4 of 10 bytes; raise [tools.read_file] max_bytes in stakeflow.toml "
        "to read more]"
    )


async def test_read_file_refuses_dot_dot_escape(tmp_path: Path, ws: Path) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    error = refused(await run("read_file", {"path": "../secret.txt"}, workspace=ws))
    assert error == (
        "'../secret.txt' leads outside the workspace (through '..' or a symbolic link): give a path inside the workspace"
    )


async def test_read_file_refuses_absolute_path(ws: Path) -> None:
    (ws / "a.txt").write_text("inside")
    for path in [str(ws / "a.txt"), "/etc/passwd"]:
        error = refused(await run("read_file", {"path": path}, workspace=ws))
        assert error == f"'{path}' is an absolute path: give a path relative to the workspace, e.g. notes.txt"


async def test_read_file_refuses_symlink_escapes(tmp_path: Path, ws: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("secret")
    (ws / "link.txt").symlink_to(tmp_path / "outside" / "secret.txt")
    (ws / "linked_dir").symlink_to(tmp_path / "outside")
    for path in ["link.txt", "linked_dir/secret.txt"]:
        error = refused(await run("read_file", {"path": path}, workspace=ws))
        assert error.startswith(f"'{path}' leads outside the workspace")


async def test_read_file_follows_symlinks_that_stay_inside(ws: Path) -> None:
    (ws / "real.txt").write_text("real")
    (ws / "alias.txt").symlink_to(ws / "real.txt")
    assert (await run("read_file", {"path": "alias.txt"}, workspace=ws)).output == "real"


async def test_read_file_missing_file_lists_the_folder(ws: Path) -> None:
    (ws / "a.txt").write_text("a")
    (ws / "sub").mkdir()
    error = refused(await run("read_file", {"path": "b.txt"}, workspace=ws))
    assert error == "there is no file 'b.txt' in the workspace (that folder holds: a.txt, sub/)"


async def test_file_tools_need_a_workspace(tmp_path: Path) -> None:
    error = refused(await run("read_file", {"path": "a.txt"}, workspace=""))
    assert error == "this run has no workspace folder, so file tools cannot run: start the run with a workspace"
    missing = tmp_path / "nope"
    error = refused(await run("sql_query", {"query": "SELECT 1"}, workspace=missing))
    assert error == f"the workspace {missing} is not a folder: create it (mkdir -p {missing}) or use another workspace"


async def test_read_file_refuses_a_symlink_loop_and_lists_the_folder(ws: Path) -> None:
    # a -> b -> a: resolving it raises (RuntimeError on 3.11, OSError ELOOP later); the model must
    # see a refusal naming the file, not a run failed after five retries.
    (ws / "a").symlink_to(ws / "b")
    (ws / "b").symlink_to(ws / "a")
    (ws / "notes.txt").write_text("notes")
    for path in ["a", "a/inside.txt"]:
        error = refused(await run("read_file", {"path": path}, workspace=ws))
        assert error == (
            f"'{path}' goes through a symbolic link that loops (a link that leads back to itself): "
            "remove or fix the link, or give another path"
        )
    assert (await run("read_file", {"path": "notes.txt"}, workspace=ws)).output == "notes"
