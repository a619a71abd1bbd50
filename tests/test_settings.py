"""Settings: environment over file over defaults; secrets only from the environment."""

from __future__ import annotations

import pytest

from stakeflow.config import load_settings
from stakeflow.core.errors import ConfigError


def write_config(home, text):
    home.mkdir(parents=True, exist_ok=True)
    (home / "stakeflow.toml").write_text(text)


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("STAKEFLOW_HOME", str(tmp_path / "h"))
    s = load_settings()
    assert s.home == tmp_path / "h"
    assert (s.embedded, s.dialect, s.open_url) == (True, "llamacpp", "http://127.0.0.1:8765/v1")
    assert s.open_model_id == "smollm2-135m-instruct"
    assert s.frontier_configured is False
    assert s.manages_temporal and s.address == "127.0.0.1:7233"
    assert s.ui_url("task-1") == "http://127.0.0.1:8233/namespaces/default/workflows/task-1"


def test_file_then_environment(tmp_path, monkeypatch):
    home = tmp_path / "h"
    write_config(
        home,
        'open_base_url = "http://gpu:8000/v1"\nopen_model = "qwen"\nfrontier_model = "claude-a"\n'
        '[policy]\nmax_steps = 9\nprivate_tools = ["sql_query"]\n[tools.http_get]\nallow_hosts = ["x.org"]\n',
    )
    monkeypatch.setenv("STAKEFLOW_HOME", str(home))
    monkeypatch.setenv("STAKEFLOW_OPEN_MODEL", "llama-70b")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-1")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/")
    s = load_settings()
    assert (s.open_base_url, s.dialect) == ("http://gpu:8000/v1", "vllm")
    assert s.open_model_id == "llama-70b"  # environment overrides the file
    assert s.frontier_model == "claude-a"
    assert s.policy.max_steps == 9 and s.policy.private_tools == ["sql_query"]
    assert s.tools.http_get.allow_hosts == ["x.org"]
    assert s.frontier_configured and s.anthropic_base_url == "http://127.0.0.1:9/"
    assert "sk-1" not in repr(s)  # secrets stay out of reprs and logs


def test_temporal_address_means_no_local_server(tmp_path, monkeypatch):
    monkeypatch.setenv("STAKEFLOW_TEMPORAL_ADDRESS", "temporal.internal:7233")
    s = load_settings()
    assert not s.manages_temporal
    assert s.ui_url() == "http://temporal.internal:8233/namespaces/default/workflows"


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[policy\n", "is not valid TOML"),
        ('[tools]\nenabled = ["nope"]\n', "unknown tool 'nope'"),
        ("[policy]\nopen_attempts = 0\n", "bad setting 'policy.open_attempts'"),
        ("colour = 1\n", "unknown setting 'colour'"),
    ],
)
def test_bad_files(tmp_path, monkeypatch, text, needle):
    home = tmp_path / "h"
    write_config(home, text)
    monkeypatch.setenv("STAKEFLOW_HOME", str(home))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert needle in str(info.value)
