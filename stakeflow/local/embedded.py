"""The embedded open model: llama-cpp-python's server with SmolLM2-135M, started safely on any x86-64 CPU.

Why a launcher of our own around ``python -m llama_cpp.server``: llama-cpp-python builds llama.cpp from
source, natively (``-march=native``) unless told otherwise. On a CPU that advertises AMX (recent Xeons,
often under a hypervisor that does not really enable it), such a build faults on its first completion
(general protection fault at ``ldtilecfg`` in ``ggml_backend_amx_mul_mat``) and the server just vanishes.
The README installs a portable build (``CMAKE_ARGS="-DGGML_NATIVE=OFF"``), but pip's wheel cache ignores
CMAKE_ARGS, so a machine that once built the native wheel keeps reinstalling it. So the launcher looks at
what the library was compiled with and, when AMX kernels are in it, keeps llama.cpp from using them:
its AMX kernels run only on weights placed in the AMX "extra buffer type", and
``llama_model_params.use_extra_bufts = false`` places none there. It says so in the log, and
`stakeflow doctor` says so too, with the reinstall command.

``python -m stakeflow.local.embedded serve ARGS...``  the server (ARGS as for ``llama_cpp.server``)
``python -m stakeflow.local.embedded check MODEL``    load MODEL, generate one token, print JSON facts
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import time
from dataclasses import asdict, dataclass

PORTABLE_CMAKE_ARGS = "-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"
REINSTALL = (
    f'CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" pip install --force-reinstall --no-cache-dir --no-deps '
    "'llama-cpp-python[server]'"
)
_AMX_FEATURES = ("AMX_INT8", "AMX_TILE", "AMX_BF16")


@dataclass(frozen=True)
class BuildInfo:
    """What the installed llama.cpp library was compiled with (``llama_print_system_info``)."""

    version: str
    features: tuple[str, ...]  # e.g. ("AVX", "AVX2", "FMA", ...): the CPU features compiled in

    @property
    def amx(self) -> bool:
        return any(f in self.features for f in _AMX_FEATURES)

    @property
    def portable(self) -> bool:
        """True when nothing beyond AVX2-class features is compiled in (what GGML_NATIVE=OFF gives)."""
        return not any(f.startswith(("AVX512", "AMX", "AVX_VNNI")) for f in self.features)

    def describe(self) -> str:
        kind = "portable build" if self.portable else "native build"
        simd = ", ".join(f for f in self.features if f.startswith(("AVX", "AMX", "SSE", "FMA", "F16C")))
        return f"llama-cpp-python {self.version}, {kind} ({simd or 'no SIMD'})"


def parse_system_info(text: str) -> tuple[str, ...]:
    """The CPU features set to 1 in ``llama_print_system_info()``'s ``CPU : AVX = 1 | ...`` text."""
    found: list[str] = []
    for part in text.replace("\n", "|").split("|"):
        name, _, value = part.rpartition("=")
        name = name.split(":")[-1].strip()
        if name and value.strip() == "1" and name not in found:
            found.append(name)
    return tuple(found)


def build_info() -> BuildInfo:
    """Inspect the installed llama.cpp library (loads it into this process)."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info()
    text = info.decode(errors="replace") if isinstance(info, bytes) else str(info)
    return BuildInfo(importlib.metadata.version("llama_cpp_python"), parse_system_info(text))


def keep_off_amx(info: BuildInfo) -> bool:
    """Make every model load with ``use_extra_bufts = false`` when the library has AMX kernels.

    Returns True when it did. Must run before the first model is loaded.
    """
    if not info.amx:
        return False
    import llama_cpp.llama_cpp as lib

    if "use_extra_bufts" not in {name for name, *_ in lib.llama_model_params._fields_}:
        return False  # an older binding: nothing to switch off (pyproject asks for one that has it)

    default_params = lib.llama_model_default_params

    def without_extra_buffers():
        params = default_params()
        params.use_extra_bufts = False
        return params

    lib.llama_model_default_params = without_extra_buffers  # Llama.__init__ looks it up here
    return True


def _announce(info: BuildInfo) -> None:
    print(f"stakeflow: {info.describe()}", file=sys.stderr, flush=True)
    if keep_off_amx(info):
        print(
            "stakeflow: this native build has AMX kernels, which fault on some CPUs: they are kept off "
            f"(use_extra_bufts=false). For the portable build: {REINSTALL}",
            file=sys.stderr,
            flush=True,
        )


def serve(args: list[str]) -> None:
    """llama-cpp-python's own server, after the AMX guard."""
    _announce(build_info())
    from llama_cpp.server.__main__ import main as server_main

    sys.argv = ["llama_cpp.server", *args]
    server_main()


@dataclass(frozen=True)
class CheckResult:
    build: str
    amx_kept_off: bool
    load_s: float
    completion_s: float
    text: str


def check(model_path: str) -> CheckResult:
    """Load the model and generate one token: proves the build runs on this CPU (a crash kills the process)."""
    info = build_info()
    guarded = keep_off_amx(info)
    import llama_cpp

    started = time.monotonic()
    llm = llama_cpp.Llama(model_path=model_path, n_ctx=256, verbose=False)
    loaded = time.monotonic()
    out = llm.create_completion("The capital of France is", max_tokens=1, temperature=0.0)
    done = time.monotonic()
    if not isinstance(out, dict):  # a stream only with stream=True
        raise TypeError(f"llama-cpp-python returned a {type(out).__name__} for a completion without stream=True")
    return CheckResult(info.describe(), guarded, loaded - started, done - loaded, out["choices"][0]["text"])


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        serve(argv[1:])
        return 0
    if argv[:1] == ["check"] and len(argv) == 2:
        print(json.dumps(asdict(check(argv[1]))))
        return 0
    print("usage: python -m stakeflow.local.embedded serve ARGS... | check MODEL.gguf", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
