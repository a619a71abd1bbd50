"""A trainer command for tests of the learn loop: what deploy/finetune/train.py does, without a GPU.

Reads the training JSONL (each line must be an exported chat line), logs like a trainer, optionally takes a
while (``--seconds``) or fails the way a real one does (``--fail``: a CUDA out-of-memory traceback, exit 1),
and writes a PEFT adapter folder (adapter_config.json, adapter_model.safetensors) to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--train", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--base", required=True)
    p.add_argument("--seconds", type=float, default=0.0)
    p.add_argument("--fail", action="store_true")
    args = p.parse_args()
    lines = [json.loads(line) for line in args.train.read_text().splitlines() if line.strip()]
    assert all(line["messages"][-1]["role"] == "assistant" for line in lines), "not an exported chat dataset"
    print(f"loading {args.base}; {len(lines)} training examples", flush=True)
    if args.fail:
        print('Traceback (most recent call last):\n  File "train.py", line 80, in main', flush=True)
        print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", flush=True)
        return 1
    deadline = time.monotonic() + args.seconds
    step = 0
    while time.monotonic() < deadline:
        step += 1
        print(f"step {step} loss {1 / step:.3f}", flush=True)
        time.sleep(0.2)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": args.base, "r": 8, "peft_type": "LORA"})
    )
    (args.out / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    print(f"adapter written to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
