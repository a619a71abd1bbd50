"""A server that behaves like vLLM's OpenAI-compatible API with LoRA adapters, for tests.

Built on tests/fakes' FakeOpenAIServer (chat completions, scripted), plus what vLLM adds for adapters:
``GET /v1/models`` lists the base model and each loaded adapter (``parent`` = the base), and
``POST /v1/load_lora_adapter`` / ``POST /v1/unload_lora_adapter`` exist only when runtime updating is on
(``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``); otherwise they are 404, as in vLLM, where the routes are not
registered. Loading checks that the adapter folder exists and holds ``adapter_config.json``; a chat completion
for a model that is neither the base nor a loaded adapter is vLLM's 404.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.fakes import FakeOpenAIServer


class FakeVLLMServer(FakeOpenAIServer):
    name = "fake-vllm"

    def __init__(self, *, base_model: str = "Qwen/Qwen2.5-7B-Instruct", runtime_lora: bool = True, **kwargs: Any):
        super().__init__(model=base_model, **kwargs)
        self.base_model = base_model
        self.runtime_lora = runtime_lora
        self.adapters: dict[str, str] = {}  # name -> path

    @property  # type: ignore[override]  # vLLM serves the base model and the loaded adapters, nothing else
    def models(self) -> list[str]:
        return [self.base_model, *self.adapters]

    @models.setter
    def models(self, value: list[str] | None) -> None:
        pass

    def handle_get(self, path: str) -> tuple[int, dict[str, str], Any]:
        if path.rstrip("/") == "/v1/models":
            data = [
                {"id": self.base_model, "object": "model", "owned_by": "vllm", "root": self.base_model, "parent": None}
            ]
            data += [
                {"id": name, "object": "model", "owned_by": "vllm", "root": where, "parent": self.base_model}
                for name, where in self.adapters.items()
            ]
            return 200, {}, {"object": "list", "data": data}
        return super().handle_get(path)

    def handle_post(self, path: str, body: Any) -> tuple[int, dict[str, str], Any] | None:
        """LoRA management; None for anything else (chat completions go to the scripted machinery)."""
        route = path.rstrip("/")
        if route not in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
            return None
        if not self.runtime_lora:
            return 404, {}, {"detail": "Not Found"}
        name = (body or {}).get("lora_name", "")
        if route == "/v1/unload_lora_adapter":
            if name not in self.adapters:
                return (
                    404,
                    {},
                    {
                        "object": "error",
                        "message": f"The lora adapter '{name}' cannot be found.",
                        "type": "NotFoundError",
                        "code": 404,
                    },
                )
            del self.adapters[name]
            return 200, {}, f"Success: LoRA adapter '{name}' removed successfully."
        where = (body or {}).get("lora_path", "")
        if name in self.adapters:
            return (
                400,
                {},
                {
                    "object": "error",
                    "message": f"The lora adapter '{name}' has already been loaded.",
                    "type": "InvalidUserInput",
                    "code": 400,
                },
            )
        if not (Path(where) / "adapter_config.json").is_file():
            return (
                400,
                {},
                {"object": "error", "message": f"No adapter found for {where}", "type": "BadRequestError", "code": 400},
            )
        self.adapters[name] = where
        return 200, {}, f"Success: LoRA adapter '{name}' added successfully."

    @staticmethod
    def adapter_folder(path: Path, base_model: str) -> Path:
        """What a trainer leaves: a PEFT adapter folder."""
        path.mkdir(parents=True, exist_ok=True)
        (path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base_model, "r": 8}))
        (path / "adapter_model.safetensors").write_bytes(b"\0" * 16)
        return path
