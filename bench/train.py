"""Throughput of mbtrain's stage-1 training step against a minimal hand-written torch loop.

Both loops train the same freshly initialised model on the same rows, in the same micro-batches
(mbtrain's length-grouped order), with AdamW at the same learning rate. The hand-written loop is
what a user would write without mbtrain: pad, ``model(input_ids, attention_mask, labels)``,
``loss.backward()``, ``optimizer.step()``. mbtrain's loop adds response-only loss normalisation,
the cosine schedule, clipping, the JSONL log, progress accounting and an epoch-end checkpoint;
all of that is inside its timing. Runs alternate (ours, hand, ours, hand, ...) and the median of
each is reported, which damps the noise of a shared machine.

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

from mbdata.config import from_mapping
from mbdata.synthetic import generate as synthetic_rows
from mbtrain.config import TrainConfig
from mbtrain.formatting import Formatter
from mbtrain.models import autocast, autocast_dtype, resolve_device
from mbtrain.objectives import SFTObjective, pad_batch
from mbtrain.tiny import tiny_model, train_tokenizer
from mbtrain.trainer import FitSettings, fit, micro_batches


def hand_loop(model, items, batches, lr, device, amp) -> tuple[float, int]:
    """The minimal loop: pad, forward with labels, backward, AdamW step."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    tokens = 0
    start = time.perf_counter()
    for idx in batches:
        batch = {k: v.to(device) for k, v in pad_batch([items[i] for i in idx], 0).items()}
        tokens += int(batch["attention_mask"].sum())
        with autocast(device, amp):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, tokens


def ours(model, items, settings, device, amp, work: Path) -> tuple[float, int]:
    objective = SFTObjective(0)
    start = time.perf_counter()
    result = fit(model, items, objective, settings, work, device=device, amp=amp, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result.tokens


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
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)

    cfg = from_mapping(TrainConfig, {"model": {
        "template": "alpaca_short", "tiny": {"hidden_size": args.hidden, "layers": args.layers,
                                             "vocab_size": args.vocab,
                                             "intermediate_size": int(args.hidden * 2.6875)}}},
        "train")
    device = resolve_device(args.device)
    amp = autocast_dtype(args.dtype, device)
    rows = synthetic_rows(args.rows, seed=0)
    tokenizer = train_tokenizer([r["instruction"] + " " + r["input"] + " " + r["output"]
                                 for r in rows], args.vocab)
    fmt = Formatter(tokenizer, "alpaca_short", 256)
    items = [e for e in fmt.encode_many([(r["instruction"], r["input"], r["output"], None)
                                         for r in rows]) if e is not None]
    settings = FitSettings(epochs=1, lr=5e-4, batch_size=args.batch_size, warmup_ratio=0.0)
    batches = micro_batches([len(e.input_ids) for e in items], args.batch_size, 0, 0)
    times: dict[str, list[float]] = {"ours": [], "hand": []}
    tokens = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats + 1):  # the first pair warms up and is dropped
            for name in ("ours", "hand"):
                model = tiny_model(cfg.model.tiny, tokenizer, seed=0).to(device)
                if name == "ours":
                    dt, n = ours(model, items, settings, device, amp, Path(tmp) / f"r{r}")
                else:
                    dt, n = hand_loop(model, items, batches, settings.lr, device, amp)
                if r:
                    times[name].append(dt)
                tokens[name] = n
    assert tokens["ours"] == tokens["hand"], tokens
    med = {k: statistics.median(v) for k, v in times.items()}
    tok_s = {k: tokens[k] / med[k] for k in med}
    overhead = med["ours"] / med["hand"] - 1.0
    params = sum(p.numel() for p in tiny_model(cfg.model.tiny, tokenizer, 0).parameters())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    figures = {"device": str(device), "amp": str(amp), "params": params, "rows": len(items),
               "batch_size": args.batch_size, "tokens": tokens["ours"],
               "ours_s": med["ours"], "hand_s": med["hand"], "ours_tok_s": tok_s["ours"],
               "hand_tok_s": tok_s["hand"], "overhead": overhead, "runs": times,
               "load_1min": load, "threads": torch.get_num_threads()}
    print("| device | params | tokens | ours tok/s | hand loop tok/s | overhead | load |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {device} {amp or 'fp32'} | {params / 1e6:.2f}M | {tokens['ours']} | "
          f"{tok_s['ours']:.0f} | {tok_s['hand']:.0f} | {overhead * 100:+.1f}% | {load:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
