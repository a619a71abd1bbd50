#!/usr/bin/env python3
"""Train a LoRA adapter on a stakeflow dataset with TRL (supervised fine-tuning), for vLLM to serve.

    python deploy/finetune/train.py --train D.train.jsonl --test D.test.jsonl --out ADAPTER --base Qwen/Qwen2.5-7B-Instruct

The dataset is `stakeflow dataset export` output (OpenAI chat lines: ``messages`` ending with the frontier's
answer). Each line becomes a conversational prompt-completion pair, so the loss is on the answer only (TRL's
default for prompt-completion data). The adapter (``adapter_config.json`` + ``adapter_model.safetensors``) is
written to --out, ready for ``stakeflow models lora load NAME OUT`` or vLLM's ``--lora-modules NAME=OUT``; its
rank must be at most the server's ``--max-lora-rank`` (deploy/vllm-serve.sh: 64).

`stakeflow learn` runs this on a `stakeflow worker --queues train` ([learn] trainer). A real base model needs a
GPU and ``pip install -r deploy/finetune/requirements.txt``; it is not run in CI. ``--gguf-file NAME`` loads the
base from a GGUF file in the --base folder instead (dequantized to float32; needs ``pip install gguf``): that is
how the recipe was run end to end on a CPU, with SmolLM2-135M-Instruct (deploy/finetune/README.md says what was
checked). An adapter is only valid on the base it was trained on: for vLLM, train on the model vLLM serves.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def to_prompt_completion(line: dict[str, Any]) -> dict[str, Any]:
    """One exported line as TRL's conversational prompt-completion: everything up to the last assistant turn."""
    messages = line.get("messages")
    if not isinstance(messages, list) or len(messages) < 2 or messages[-1].get("role") != "assistant":
        raise ValueError(
            "a line needs 'messages' ending with an assistant turn (stakeflow dataset export --format openai)"
        )
    row: dict[str, Any] = {"prompt": messages[:-1], "completion": messages[-1:]}
    if line.get("tools"):
        # As a JSON string (TRL decodes it): as nested data, Arrow would merge every line's tool schemas into one
        # struct and fill the keys a line lacks with nulls, which the chat template would then render.
        row["tools"] = json.dumps(line["tools"], ensure_ascii=False)
    return row


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, text in enumerate(path.read_text().splitlines(), 1):
        if not text.strip():
            continue
        try:
            rows.append(to_prompt_completion(json.loads(text)))
        except ValueError as e:
            raise SystemExit(f"{path}:{n}: {e}") from None
    return rows


def require_chat_template(tokenizer: Any, base: str) -> None:
    """Conversational data is rendered with the tokenizer's chat template: without one there is nothing to train."""
    if not getattr(tokenizer, "chat_template", None):
        raise SystemExit(
            f"{base}: the tokenizer has no chat template, so the chat examples cannot be rendered; "
            "use an instruct/chat model (the one the open route serves), not a base model"
        )


def load_gguf(folder: str, name: str, torch: Any) -> Any:
    """A GGUF checkpoint as a plain float32 model that can be trained.

    The weights are unpacked at load time (``GgufConfig(dequantize=True)``): otherwise transformers 5 keeps a GGUF
    quantizer on the model, even when it unpacked every weight anyway (llama, without the ``kernels`` package), and
    Trainer refuses it ("quantized with QuantizationMethod.GGUF ... do not support training").
    """
    from transformers import AutoModelForCausalLM

    try:
        from transformers import GgufConfig
    except ImportError:  # before the GGUF quantizer: GGUF weights were always unpacked, with no quantizer kept
        extra: dict[str, Any] = {}
    else:
        extra = {"quantization_config": GgufConfig(dequantize=True)}
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, **extra)
    if getattr(model, "is_quantized", False):
        raise SystemExit(f"{folder}/{name}: transformers kept the GGUF weights quantized, which cannot be trained")
    return model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True, type=Path, help="training JSONL (stakeflow dataset export)")
    p.add_argument("--test", type=Path, help="held-out JSONL, for the eval loss")
    p.add_argument("--out", required=True, type=Path, help="where the adapter goes")
    p.add_argument("--base", required=True, help="the base model the open route serves (a HF id or a local folder)")
    p.add_argument(
        "--gguf-file",
        metavar="NAME",
        help="load the base from the GGUF file NAME inside the --base folder (dequantized to float32)",
    )
    p.add_argument("--rank", type=int, default=16, help="LoRA rank (<= vLLM --max-lora-rank)")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=4)
    p.add_argument("--max-length", type=int, default=4096, help="longer examples are truncated")
    args = p.parse_args(argv)

    train = read_jsonl(args.train)
    test = read_jsonl(args.test) if args.test and args.test.is_file() else []
    if not train:
        raise SystemExit(f"{args.train} has no examples: capture more runs ([dataset] capture = true)")
    print(f"training on {len(train)} examples ({len(test)} held out) from {args.base}", flush=True)

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    if not torch.cuda.is_available():
        print("warning: no CUDA device; training on the CPU will be very slow", file=sys.stderr, flush=True)
    gguf = {"gguf_file": args.gguf_file} if args.gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(args.base, **gguf)
    require_chat_template(tokenizer, args.base + (f"/{args.gguf_file}" if args.gguf_file else ""))
    # A HF id or folder is loaded by SFTTrainer itself (float32, autocast to bf16 where the GPU has it); a GGUF
    # file is loaded here the same way, since SFTTrainer cannot pass gguf_file on.
    model: Any = load_gguf(args.base, args.gguf_file, torch) if args.gguf_file else args.base
    config = SFTConfig(
        output_dir=str(args.out / "checkpoints"),
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,  # below 1: a share of the steps (transformers >= 5 dropped warmup_ratio for this)
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        gradient_checkpointing=True,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        max_length=args.max_length,
        eval_strategy="epoch" if test else "no",
        save_strategy="no",
        logging_steps=10,
        report_to="none",
    )
    lora = LoraConfig(
        r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        peft_config=lora,
        processing_class=tokenizer,
        train_dataset=Dataset.from_list(train),
        eval_dataset=Dataset.from_list(test) if test else None,
    )
    result = trainer.train()
    # The adapter (adapter_config.json, adapter_model.safetensors; no base weights), with the tokenizer files,
    # a model card and training_args.bin beside it.
    trainer.save_model(str(args.out))
    evals = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e]
    print(
        f"train loss {result.training_loss:.4f}"
        + (f", eval loss {evals[-1]:.4f}" if evals else "")
        + f" after {result.global_step} steps in {result.metrics['train_runtime']:.0f} s",
        flush=True,
    )
    print(f"adapter written to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
