"""Tokens per second of the embedded model (SmolLM2-135M, llama.cpp) for each llama.cpp build given.

The anchor is the build `pip install` makes by default (GGML_NATIVE, i.e. -march=native); the candidate is
the portable one the README installs (CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"). Each build runs
in its own child process (PYTHONPATH = a folder the wheel was installed into with
`pip install --no-deps --target DIR WHEEL`), so a build that faults on this CPU is reported as crashed,
with its signal, instead of killing the benchmark. A native build with AMX kernels runs twice: as is, and
with stakeflow's guard (``use_extra_bufts = false``, what `stakeflow.local.embedded` does).

    python bench/embedded.py                                   # the installed build only
    python bench/embedded.py --build native=/tmp/native-lib    # plus a native build, side by side
    python bench/embedded.py --build native=/tmp/native-lib --threads 1,2 --runs 5

Prompt: ~230 tokens of the README task's notes; generation: 128 tokens, greedy. Median of --runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, os, sys, time
import llama_cpp
sys.path.insert(0, os.environ["STAKEFLOW_ROOT"])
from stakeflow.local.embedded import build_info, keep_off_amx
info = build_info()
guarded = keep_off_amx(info) if os.environ.get("GUARD") == "1" else False
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=2048, n_threads=int(sys.argv[2]), verbose=False)
prompt = open(sys.argv[3]).read()
rows = []
for _ in range(int(sys.argv[4])):
    llm.reset()
    t0 = time.perf_counter()
    first = llm.create_completion(prompt, max_tokens=1, temperature=0.0, top_k=1)
    t_prompt = time.perf_counter() - t0
    llm.reset()
    t0 = time.perf_counter()
    out = llm.create_completion(prompt, max_tokens=128, temperature=0.0, top_k=1)
    t_full = time.perf_counter() - t0
    rows.append({"prompt_tokens": first["usage"]["prompt_tokens"], "prompt_s": t_prompt,
                 "completion_tokens": out["usage"]["completion_tokens"], "full_s": t_full})
print(json.dumps({"build": info.describe(), "amx": info.amx, "guarded": guarded, "rows": rows}))
"""


def _measure(lib: str | None, guard: bool, threads: int, runs: int, model: Path, prompt: Path) -> dict:
    env = {**os.environ, "STAKEFLOW_ROOT": str(ROOT), "GUARD": "1" if guard else "0"}
    if lib:
        env["PYTHONPATH"] = lib
    ran = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), str(threads), str(prompt), str(runs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if ran.returncode < 0:
        return {"crashed": signal.Signals(-ran.returncode).name}
    if ran.returncode != 0:
        return {"crashed": f"exit {ran.returncode}: {(ran.stderr.strip().splitlines() or ['?'])[-1][:120]}"}
    return json.loads(ran.stdout.strip().splitlines()[-1])


def _rates(result: dict) -> tuple[float, float]:
    """(prompt tokens/s, generated tokens/s): medians over the runs."""
    rows = result["rows"]
    prompt = statistics.median(r["prompt_tokens"] / r["prompt_s"] for r in rows)
    gen = statistics.median((r["completion_tokens"] - 1) / max(1e-9, r["full_s"] - r["prompt_s"]) for r in rows)
    return prompt, gen


def main() -> None:
    from stakeflow.local.services import embedded_model_file

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--build",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="another llama-cpp-python build, installed into DIR (repeatable)",
    )
    parser.add_argument("--threads", default="1,2", help="thread counts to try (default 1,2)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    model = embedded_model_file()
    prompt = ROOT / "bench" / ".embedded-prompt.txt"
    notes = (ROOT / "examples" / "workspace" / "notes.txt").read_text()
    prompt.write_text(f"Summarise these notes in three sentences.\n\n{notes}\n{notes}\nSummary:")
    builds: list[tuple[str, str | None]] = [("installed", None)]
    for spec in args.build:
        name, _, folder = spec.partition("=")
        builds.append((name, folder))
    print(f"{'build':<28} {'threads':>7} {'guard':>6} {'prompt tok/s':>12} {'gen tok/s':>10}  compiled with")
    for name, lib in builds:
        for threads in [int(t) for t in args.threads.split(",")]:
            first = _measure(lib, False, threads, args.runs, model, prompt)
            variants = [(False, first)]
            if first.get("amx") or "crashed" in first:
                variants.append((True, _measure(lib, True, threads, args.runs, model, prompt)))
            for guard, result in variants:
                label = "on" if guard else "off"
                if "crashed" in result:
                    print(f"{name:<28} {threads:>7} {label:>6} {'crashed: ' + result['crashed']:>23}")
                    continue
                prompt_rate, gen = _rates(result)
                print(f"{name:<28} {threads:>7} {label:>6} {prompt_rate:>12.1f} {gen:>10.1f}  {result['build']}")
    prompt.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
