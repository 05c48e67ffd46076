"""Throughput of mbtrain's stage 1 (``fit`` on TRL's ``SFTTrainer``) against a plain ``SFTTrainer``
and a minimal hand-written torch loop.

All three train the same freshly initialised model on the same tokenised rows with AdamW at the
same learning rate and batch size, one epoch. ``plain SFTTrainer`` is what a TRL user writes:
``SFTTrainer(model, SFTConfig(...), train_dataset=<input_ids + completion_mask>)`` with default
sampling (random order). mbtrain's path adds its seeded length-window order, the JSONL log,
the resume key and an epoch-end checkpoint; all of that is inside its timing. The hand loop pads,
calls ``model(..., labels=...)`` and steps AdamW. Runs alternate and the median of each is
reported, which damps the noise of a shared machine. Tokens/s count non-padding tokens.

    python bench/train.py                       # tiny model (3.4M), synthetic rows, CPU
    python bench/train.py --rows 512 --repeats 3 --device cuda

Prints a Markdown table row and writes ``--json`` if given.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from mbdata.core.config import from_mapping
from mbdata.synthetic import generate as synthetic_rows
from mbtrain.config import TrainConfig
from mbtrain.engine.formatting import Formatter
from mbtrain.engine.models import autocast, autocast_dtype, quiet_transformers, resolve_device
from mbtrain.engine.objectives import SFTObjective, pad_batch
from mbtrain.engine.tiny import tiny_model, train_tokenizer
from mbtrain.engine.trainer import FitSettings, batch_order, fit, sft_dataset


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def hand_loop(model, items, batches, lr, device, amp) -> float:
    """The minimal loop: pad, forward with labels, backward, AdamW step."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    start = time.perf_counter()
    for idx in batches:
        batch = {k: v.to(device) for k, v in pad_batch([items[i] for i in idx], 0).items()}
        with autocast(device, amp):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    return time.perf_counter() - start


def plain_sft(model, items, tokenizer, settings, device, amp, work: Path) -> float:
    """What a TRL user writes (timing includes trainer construction, as ``ours`` does)."""
    from trl import SFTConfig, SFTTrainer

    start = time.perf_counter()
    args = SFTConfig(
        output_dir=str(work),
        num_train_epochs=1,
        learning_rate=settings.lr,
        per_device_train_batch_size=settings.batch_size,
        lr_scheduler_type="cosine",
        max_length=None,
        completion_only_loss=True,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=1,
        use_cpu=device.type == "cpu",
        bf16=amp == torch.bfloat16,
        seed=settings.seed,
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=sft_dataset(items), processing_class=tokenizer
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.pop_callback(PrinterCallback)
    trainer.train()
    _sync(device)
    return time.perf_counter() - start


def ours(model, items, tokenizer, settings, device, amp, work: Path) -> float:
    start = time.perf_counter()
    fit(
        model,
        items,
        SFTObjective(tokenizer.pad_token_id),
        settings,
        work,
        tokenizer=tokenizer,
        device=device,
        amp=amp,
        progress=False,
    )
    _sync(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=640, help="training rows (one epoch)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each loop")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: as the demo recipe; fair on a busy machine)",
    )
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = from_mapping(
        TrainConfig,
        {
            "model": {
                "template": "alpaca_short",
                "tiny": {
                    "hidden_size": args.hidden,
                    "layers": args.layers,
                    "vocab_size": args.vocab,
                    "intermediate_size": int(args.hidden * 2.6875),
                },
            }
        },
        "train",
    )
    device = resolve_device(args.device)
    amp = autocast_dtype(args.dtype, device)
    rows = synthetic_rows(args.rows, seed=0)
    tokenizer = train_tokenizer(
        [r["instruction"] + " " + r["input"] + " " + r["output"] for r in rows], args.vocab
    )
    fmt = Formatter(tokenizer, "alpaca_short", 256)
    items = [
        e
        for e in fmt.encode_many([(r["instruction"], r["input"], r["output"], None) for r in rows])
        if e is not None
    ]
    quiet_transformers()
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    settings = FitSettings(epochs=1, lr=5e-4, batch_size=args.batch_size, warmup_ratio=0.0)
    batches = batch_order([len(e.input_ids) for e in items], args.batch_size, 0, 0)
    tokens = sum(len(e.input_ids) for e in items)
    names = ("ours", "sft", "hand")
    times: dict[str, list[float]] = {k: [] for k in names}
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats + 1):  # the first round warms up and is dropped
            for name in names:
                model = tiny_model(cfg.model.tiny, tokenizer, seed=0).to(device)
                work = Path(tmp) / f"{name}{r}"
                if name == "ours":
                    dt = ours(model, items, tokenizer, settings, device, amp, work)
                elif name == "sft":
                    dt = plain_sft(model, items, tokenizer, settings, device, amp, work)
                else:
                    dt = hand_loop(model, items, batches, settings.lr, device, amp)
                if r:
                    times[name].append(dt)
    med = {k: statistics.median(v) for k, v in times.items()}
    tok_s = {k: tokens / med[k] for k in med}
    overhead = med["ours"] / med["sft"] - 1.0
    params = sum(p.numel() for p in tiny_model(cfg.model.tiny, tokenizer, 0).parameters())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    figures = {
        "device": str(device),
        "amp": str(amp),
        "params": params,
        "rows": len(items),
        "batch_size": args.batch_size,
        "tokens": tokens,
        "seconds": med,
        "tok_s": tok_s,
        "overhead_vs_sft": overhead,
        "runs": times,
        "load_1min": [load_start, load],
        "threads": torch.get_num_threads(),
    }
    print(
        "| device | params | tokens | ours tok/s | plain SFTTrainer tok/s | hand loop tok/s "
        "| ours vs SFTTrainer | load |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {device} {amp or 'fp32'} | {params / 1e6:.2f}M | {tokens} | {tok_s['ours']:.0f} "
        f"| {tok_s['sft']:.0f} | {tok_s['hand']:.0f} | {overhead * 100:+.1f}% "
        f"| {load_start:.2f}-{load:.2f} |"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
