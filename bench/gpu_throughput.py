"""GPU throughput of mbtrain's training engine (``bench/gpu_check.sh``; ``--dry-run``: CPU).

Three figures, each a JSON line on stdout and in ``--out``:

1. ``stage1``: mbtrain stage 1 (``mbtrain.engine.trainer.fit`` → TRL ``SFTTrainer``) on a
   SmolLM2-135M-Instruct-shaped model (the real weights when ``--model`` names a local folder,
   else random init of the same shape: throughput does not depend on the weights), bf16, response
   tokens ~half of each row, rows of 64-256 tokens, global batch ``--batch``: tokens/s (non-padding
   tokens, the issue's measure) and peak memory. Needs trl + datasets; without them it is skipped
   and says so.
2. ``llama1b``: a 1B-parameter Llama shape (random init, bf16 weights, sdpa, fused AdamW) trained
   with a plain ``transformers.Trainer`` on full 2048-token rows (all positions in the loss):
   tokens/s, MFU = 6·N·tokens/s over the card's bf16 dense peak (``--peak-tflops``, default 989 for
   H100/H200 SXM), peak memory. Needs torch + transformers + accelerate only.
3. ``ddp``: figure 1 under ``torchrun --nproc_per_node 2`` when two GPUs are present (the caller
   launches it; this script only reports its rank-0 figures).

No network, no build folder: the rows are synthetic token ids (a prebuilt build is not needed for
throughput).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _rows(n: int, lo: int, hi: int, vocab: int, seed: int = 0) -> list:
    from mbtrain.engine.formatting import IGNORE, Encoded

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(lo, hi + 1, (1,), generator=g))
        ids = torch.randint(5, vocab, (length,), generator=g).tolist()
        prompt = length // 2
        out.append(Encoded(input_ids=ids, labels=[IGNORE] * prompt + ids[prompt:], truncated=False))
    return out


def _peak_gib() -> float | None:
    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def _tokenizer(vocab: int):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(
            models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0")
        )
    )
    tok.add_special_tokens({"pad_token": "t1", "eos_token": "t2", "bos_token": "t3"})
    return tok


def stage1(args: argparse.Namespace, device: torch.device) -> dict:
    try:
        import datasets  # noqa: F401
        import trl  # noqa: F401
    except ImportError as exc:
        return {"figure": "stage1", "skipped": f"needs trl and datasets ({exc.name} missing)"}
    from transformers import AutoModelForCausalLM, LlamaConfig

    from mbtrain.engine.objectives import SFTObjective
    from mbtrain.engine.trainer import FitSettings, fit

    if args.model:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
        source = args.model
    else:
        shape = (
            dict(
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                intermediate_size=128,
                vocab_size=1000,
            )
            if args.dry_run
            else dict(
                hidden_size=576,
                num_hidden_layers=30,
                num_attention_heads=9,
                num_key_value_heads=3,
                intermediate_size=1536,
                vocab_size=49152,
                tie_word_embeddings=True,
                rope_theta=100000.0,
            )
        )
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(
            LlamaConfig(max_position_embeddings=2048, attn_implementation="sdpa", **shape)
        )
        source = "random init, SmolLM2-135M shape" if not args.dry_run else "tiny (dry run)"
    vocab = model.config.vocab_size
    tok = _tokenizer(vocab)
    rows = _rows(args.rows, 64, 256, vocab)
    settings = FitSettings(
        epochs=1,
        lr=1e-4,
        batch_size=args.batch,
        warmup_ratio=0.0,
        trainer_args=(("logging_steps", 50),),
    )
    amp = torch.bfloat16 if device.type == "cuda" else None
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        result = fit(
            model,
            rows,
            SFTObjective(tok.pad_token_id),
            settings,
            Path(work),
            tokenizer=tok,
            device=device,
            amp=amp,
            progress=False,
        )
        seconds = time.perf_counter() - started
    tokens = sum(len(r.input_ids) for r in rows)
    return {
        "figure": "stage1",
        "model": source,
        "rows": len(rows),
        "batch": args.batch,
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "train_seconds": round(result.seconds, 2),
        "tokens_per_s": round(tokens / result.seconds),
        "peak_gib": _peak_gib(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "target_tokens_per_s": 150_000,
    }


def llama1b(args: argparse.Namespace, device: torch.device) -> dict:
    from transformers import (
        AutoModelForCausalLM,
        LlamaConfig,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    if args.dry_run:
        shape = dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=128,
            vocab_size=1000,
        )
        seq, batch, steps = 64, 2, 3
    else:
        shape = dict(
            hidden_size=2048,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
            intermediate_size=8192,
            vocab_size=128256,
            tie_word_embeddings=True,
        )
        seq, batch, steps = 2048, args.llama_batch, args.llama_steps
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        LlamaConfig(max_position_embeddings=seq, attn_implementation="sdpa", **shape),
        dtype=torch.bfloat16 if device.type == "cuda" else torch.float32,
    )
    n = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    data = [
        {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids)}
        for ids in torch.randint(0, shape["vocab_size"], ((steps + 2) * batch, seq), generator=g)
    ]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as work:
        targs = TrainingArguments(
            output_dir=work,
            max_steps=steps + 2,
            per_device_train_batch_size=batch,
            learning_rate=1e-4,
            optim="adamw_torch_fused" if device.type == "cuda" else "adamw_torch",
            bf16=device.type == "cuda",
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            disable_tqdm=True,
            use_cpu=device.type == "cpu",
            activation_checkpointing=args.checkpointing,
            dataloader_num_workers=0,
        )
        trainer = Trainer(
            model=model, args=targs, train_dataset=data, data_collator=default_data_collator
        )
        stamps: list[float] = []
        from transformers import TrainerCallback

        class Clock(TrainerCallback):
            def on_step_end(self, *a, **kw):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                stamps.append(time.perf_counter())

        trainer.add_callback(Clock())
        trainer.train()
    # the first two steps warm up (allocator, kernels) and are not timed
    seconds = stamps[-1] - stamps[1]
    tokens = steps * batch * seq
    tok_s = tokens / seconds
    mfu = 6 * n * tok_s / (args.peak_tflops * 1e12)
    return {
        "figure": "llama1b",
        "params": n,
        "seq": seq,
        "batch": batch,
        "steps": steps,
        "tokens_per_s": round(tok_s),
        "mfu": round(mfu, 4),
        "peak_gib": _peak_gib(),
        "activation_checkpointing": args.checkpointing,
        "target_mfu": 0.40,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU")
    parser.add_argument("--only", choices=["stage1", "llama1b"], default=None)
    parser.add_argument("--model", default=None, help="local HF folder for stage 1")
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--llama-batch", type=int, default=8)
    parser.add_argument("--llama-steps", type=int, default=10)
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--out", default=None, help="append the JSON lines here")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.rows, args.batch = min(args.rows, 32), min(args.batch, 8)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    rank0 = int(os.environ.get("RANK", "0")) == 0
    for name, fn in (("stage1", stage1), ("llama1b", llama1b)):
        if args.only and name != args.only:
            continue
        figure = fn(args, device)
        figure["device"] = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
        if rank0:
            line = json.dumps(figure)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a", encoding="utf-8") as fh:
                    fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
