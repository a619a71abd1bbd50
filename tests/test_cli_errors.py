"""Bad input at the CLI: one line naming the fix, a non-zero exit, never a traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from stakeflow.cli import cli
from tests.support import free_port


def invoke(*args: str):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def assert_one_line_error(code: int, output: str, *needles: str) -> None:
    assert code != 0
    assert "Traceback" not in output
    error_lines = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(error_lines) == 1, output
    for needle in needles:
        assert needle in error_lines[0], output


@pytest.fixture
def home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("STAKEFLOW_HOME", str(path))
    return path


@pytest.fixture
def temporal_address(env, monkeypatch):
    address = env.client.service_client.config.target_host
    monkeypatch.setenv("STAKEFLOW_TEMPORAL_ADDRESS", address)
    return address


def test_empty_goal(home):
    assert_one_line_error(*invoke("run", "   "), "the goal is empty")


def test_bad_toml(home):
    (home / "stakeflow.toml").write_text("[policy\nmax_steps = 3\n")
    assert_one_line_error(*invoke("run", "hello"), "stakeflow.toml is not valid TOML", "fix the file")


def test_unknown_tool_in_config(home):
    (home / "stakeflow.toml").write_text('[tools]\nenabled = ["read_file", "shell"]\n')
    assert_one_line_error(*invoke("run", "hello"), "unknown tool 'shell'", "known tools are calculator")


def test_unknown_setting_in_config(home):
    (home / "stakeflow.toml").write_text("[policy]\nescalate = true\n")
    assert_one_line_error(*invoke("run", "hello"), "unknown setting 'policy.escalate'")


def test_bad_value_in_environment(home, monkeypatch):
    monkeypatch.setenv("STAKEFLOW_OPEN_DIALECT", "tgi")
    assert_one_line_error(*invoke("models"), "bad setting 'open_dialect'")


def test_unknown_tool_on_the_command_line(home):
    assert_one_line_error(*invoke("run", "hello", "--tools", "calculator,shell"), "unknown tool 'shell'")


def test_missing_workspace(home, tmp_path):
    assert_one_line_error(*invoke("run", "hello", "--workspace", str(tmp_path / "nope")), "is not a folder")


def test_frontier_required_but_no_key(home):
    (home / "stakeflow.toml").write_text('[policy]\non_frontier_missing = "fail"\n')
    assert_one_line_error(*invoke("run", "hello", "--stakes", "high"), "ANTHROPIC_API_KEY is not set", "--stakes low")


def test_unreachable_open_endpoint(home, temporal_address, monkeypatch):
    monkeypatch.setenv("STAKEFLOW_OPEN_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
    assert_one_line_error(*invoke("run", "hello"), "open model endpoint", "is unreachable", "STAKEFLOW_OPEN_BASE_URL")


def test_unreachable_temporal_is_never_started(home, monkeypatch):
    monkeypatch.setenv("STAKEFLOW_TEMPORAL_ADDRESS", f"127.0.0.1:{free_port()}")
    assert_one_line_error(*invoke("run", "hello"), "cannot reach Temporal", "STAKEFLOW_TEMPORAL_ADDRESS")
    assert not (home / "run" / "temporal.pid").exists()


def test_status_of_unknown_run(home, temporal_address):
    assert_one_line_error(*invoke("status", "task-doesnotexist"), "no run 'task-doesnotexist'")


def test_unknown_queue_role(home):
    assert_one_line_error(*invoke("worker", "--queues", "open,gpu"), "unknown queue role(s) gpu")


def test_debug_shows_the_traceback(home, monkeypatch):
    monkeypatch.setenv("STAKEFLOW_DEBUG", "1")
    from stakeflow.core.errors import InputError

    with pytest.raises(InputError):
        CliRunner().invoke(cli, ["run", " "], catch_exceptions=False)


def test_models_reports_endpoints_without_secrets(home, monkeypatch):
    monkeypatch.setenv("STAKEFLOW_OPEN_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
    monkeypatch.setenv("STAKEFLOW_OPEN_API_KEY", "open-secret-123")
    code, out = invoke("models", "--json")
    assert code == 0
    assert "open-secret-123" not in out
    import json

    report = {e["route"]: e for e in json.loads(out)}
    assert report["open"]["reachable"] is False and report["open"]["dialect"] == "vllm"
    assert report["frontier"]["configured"] is False
    assert "ANTHROPIC_API_KEY is not set" in report["frontier"]["detail"]
