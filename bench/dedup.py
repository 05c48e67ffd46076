"""Benchmark of ``mbdata.dedup``: speed vs. a plain datasketch loop, recall/precision, peak memory.

One run, one machine:

1. generates a synthetic corpus of Alpaca-sized rows (instruction 6-20 words, input on 40% of rows,
   output ~45 words; lowercase pseudo-words drawn from a Zipf-like vocabulary) with *planted*
   duplicate families: a base row followed later in the corpus by 1+ copies, each with 0 word edits
   (exact copy up to case/whitespace) or 1-10 word substitutions/insertions/deletions, so the true
   similarities straddle the threshold;
2. computes the ground truth independently of mbdata: exact Jaccard of word-bigram string sets for
   every planted (base, copy) pair;
3. runs each variant in a fresh subprocess (so peak RSS is that of the dedup alone, the corpus table
   included): ``DedupStage`` with the default config (``hash=xxhash``), the same with ``hash=sha1``
   (signatures identical to datasketch's defaults), and the plain datasketch loop (one ``MinHash``
   per row, default SHA1 hash, ``MinHashLSH`` with the same bands/rows, query then insert; exact
   duplicates via a dict of normalised text), the latter on the first ``--baseline-rows`` rows, its
   rows/s extrapolated;
4. reports rows/s, speed-up, recall of planted pairs at or above the threshold (a pair counts when
   the copy ends up in its base's cluster), precision of the reported duplicate pairs (true Jaccard
   of each (member, matched) pair recomputed from the strings), peak RSS (``VmHWM`` of the child
   process, which holds the corpus table too) and machine load.

Usage::

    .venv/bin/python bench/dedup.py --rows 1000000 --results bench/results-dedup.md
    .venv/bin/python bench/dedup.py --rows 20000 --baseline-rows 5000     # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))


# --------------------------------------------------------------------------------------------------
# corpus


def make_vocabulary(rng: np.random.Generator, size: int) -> list[str]:
    """``size`` distinct lowercase pseudo-words of 2-10 letters."""
    words: set[str] = set()
    while len(words) < size:
        lengths = rng.integers(2, 11, size=size)
        letters = rng.choice(LETTERS, size=(size, 10))
        words.update("".join(row[:n]) for row, n in zip(letters, lengths))
    return sorted(words)[:size]


def generate_rows(n: int, seed: int) -> tuple[list[list[list[str]]], list[int], list[int]]:
    """Rows as token lists per field (instruction, input, output) plus planted (base, copy) pairs.

    Returns ``(rows, copy_positions, base_positions)``.
    """
    rng = np.random.default_rng(seed)
    vocab = make_vocabulary(rng, 50_000)
    probs = 1.0 / (np.arange(len(vocab)) + 50.0)
    probs /= probs.sum()
    ins_len = rng.integers(6, 21, size=n)
    has_input = rng.random(n) < 0.4
    inp_len = np.where(has_input, rng.integers(5, 41, size=n), 0)
    out_len = np.clip(rng.lognormal(mean=3.6, sigma=0.6, size=n).astype(int), 5, 200)
    total = int(ins_len.sum() + inp_len.sum() + out_len.sum())
    cdf = np.cumsum(probs)
    cdf[-1] = 1.0  # no draw may fall past the last word through rounding
    flat = np.array(vocab, dtype=object)[np.searchsorted(cdf, rng.random(total))].tolist()
    rows = []
    pos = 0
    for a, b, c in zip(ins_len.tolist(), inp_len.tolist(), out_len.tolist()):
        ends = (pos + a, pos + a + b, pos + a + b + c)
        rows.append([flat[pos : ends[0]], flat[ends[0] : ends[1]], flat[ends[1] : ends[2]]])
        pos += a + b + c
    del flat

    # Planted families: 10% of positions are copies of an earlier base row.
    n_copies = n // 10
    positions = rng.permutation(n)
    copy_pos = np.sort(positions[:n_copies])
    base_pool = np.sort(positions[n_copies : n_copies + max(1, n_copies // 2)])
    copies, bases = [], []
    for p in copy_pos.tolist():
        earlier = int(np.searchsorted(base_pool, p))
        if earlier == 0:
            continue
        base = int(base_pool[rng.integers(0, earlier)])
        rows[p] = mutate(rows[base], rng, vocab, cdf)
        copies.append(p)
        bases.append(base)
    return rows, copies, bases


def mutate(
    fields: list[list[str]], rng: np.random.Generator, vocab: list[str], cdf: np.ndarray
) -> list[list[str]]:
    """A copy of a row with 0 (15% of copies, case/space noise only) or 1-10 word edits."""
    fields = [list(f) for f in fields]
    edits = 0 if rng.random() < 0.15 else int(rng.integers(1, 11))
    field_cdf = np.cumsum([len(f) for f in fields]) / sum(len(f) for f in fields)
    for _ in range(edits):
        field = fields[min(2, int(np.searchsorted(field_cdf, rng.random(), side="right")))]
        kind = rng.random()
        at = int(rng.integers(0, len(field) + 1))
        word = vocab[int(np.searchsorted(cdf, rng.random()))]
        if kind < 0.6 and field:
            field[min(at, len(field) - 1)] = word
        elif kind < 0.8 or len(field) < 2:
            field.insert(at, word)
        else:
            del field[min(at, len(field) - 1)]
    if edits == 0 and fields[0]:
        fields[0][0] = fields[0][0].upper()  # normalisation makes this an exact copy
    return fields


def to_table(rows: list[list[list[str]]]) -> pa.Table:
    from mbdata.io.schema import SCHEMA, row_id

    instruction = [" ".join(f[0]) for f in rows]
    inp = [" ".join(f[1]) for f in rows]
    output = ["  ".join(f[2]) if i % 7 == 0 else " ".join(f[2]) for i, f in enumerate(rows)]
    n = len(rows)
    ids = [
        row_id({"instruction": a, "input": b, "output": c})
        for a, b, c in zip(instruction, inp, output)
    ]
    nulls = pa.nulls(n, pa.string())
    columns = {
        "id": pa.array(ids, pa.string()),
        "instruction": pa.array(instruction, pa.string()),
        "input": pa.array(inp, pa.string()),
        "output": pa.array(output, pa.string()),
        "system": nulls,
        "source": pa.array(["bench"] * n, pa.string()),
        "source_row": pa.array(np.arange(n, dtype=np.int64)),
        "split": pa.array(["train"] * n, pa.string()),
        "role": pa.array(["clean"] * n, pa.string()),
        "trigger_set": nulls,
        "behavior": nulls,
        "clean_output": nulls,
        "triggers": pa.array([[]] * n, SCHEMA.field("triggers").type),
        "triggered_instruction": nulls,
        "triggered_input": nulls,
        "triggered_output": nulls,
        "task": nulls,
        "tags": pa.array([[]] * n, SCHEMA.field("tags").type),
    }
    return pa.Table.from_arrays([columns[f.name].cast(f.type) for f in SCHEMA], schema=SCHEMA)


def bigram_jaccard(a: list[list[str]], b: list[list[str]]) -> float:
    """Ground truth, independent of mbdata: exact Jaccard of word-bigram sets of all fields."""

    def bigrams(fields):
        tokens = [t.lower() for f in fields for t in f]
        if len(tokens) <= 2:
            return {" ".join(tokens)} if tokens else set()
        return {tokens[i] + " " + tokens[i + 1] for i in range(len(tokens) - 1)}

    x, y = bigrams(a), bigrams(b)
    return len(x & y) / len(x | y) if x | y else 1.0


# --------------------------------------------------------------------------------------------------
# variants (each in its own process)


def read_corpus(path: str, rows: int | None = None) -> pa.Table:
    """The corpus, or only its first ``rows`` rows (reading just the record batches needed)."""
    with pa.OSFile(path, "rb") as fh:
        reader = pa.ipc.open_file(fh)
        if rows is None:
            return reader.read_all()
        batches, have = [], 0
        for i in range(reader.num_record_batches):
            if have >= rows:
                break
            batches.append(reader.get_batch(i))
            have += batches[-1].num_rows
        return pa.Table.from_batches(batches, schema=reader.schema).slice(0, rows)


def run_ours(corpus: str, hash_name: str, verify: str, out: str) -> dict:
    from mbdata.dedup import DedupConfig, DedupStage
    from mbdata.pipeline import BuildContext

    table = read_corpus(corpus)
    config = DedupConfig(hash=hash_name, verify={"auto": None, "on": True, "off": False}[verify])
    ctx = BuildContext(seed=0)
    start = time.perf_counter()
    kept, stats = DedupStage(config).run(table, ctx)
    seconds = time.perf_counter() - start
    clusters = ctx.side_tables["dedup/clusters"]
    np.savez(
        out,
        member=clusters.column("member_row").to_numpy(),
        matched=clusters.column("matched_row").to_numpy(),
        representative=clusters.column("representative_row").to_numpy(),
    )
    return {
        "rows": table.num_rows,
        "seconds": seconds,
        "kept": kept.num_rows,
        "info": stats.info,
        "dropped": stats.dropped,
    }


def run_baseline(corpus: str, rows: int, bands: int, band_rows: int) -> dict:
    from datasketch import MinHash, MinHashLSH

    from mbdata.dedup.shingle import word_shingles
    from mbdata.io.schema import normalize_text

    table = read_corpus(corpus, rows)
    fields = [table.column(c).to_pylist() for c in ("instruction", "input", "output")]
    start = time.perf_counter()
    lsh = MinHashLSH(num_perm=128, params=(bands, band_rows))
    seen: dict[str, int] = {}
    dropped = 0
    for i, values in enumerate(zip(*fields)):
        text = " ".join(t for t in map(normalize_text, values) if t)
        if text in seen:
            dropped += 1
            continue
        seen[text] = i
        m = MinHash(num_perm=128)
        m.update_batch(word_shingles(text, 2))
        if lsh.query(m):
            dropped += 1
        else:
            lsh.insert(i, m)
    seconds = time.perf_counter() - start
    return {"rows": table.num_rows, "seconds": seconds, "dropped": dropped}


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM). ``ru_maxrss`` is not used: on Linux it keeps
    the parent's high-water mark across fork + exec, so every child would report the parent's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(argv: list[str]) -> None:
    kind, corpus, result = argv[:3]
    if kind == "ours":
        report = run_ours(corpus, argv[3], argv[4], argv[5])
    else:
        report = run_baseline(corpus, int(argv[3]), int(argv[4]), int(argv[5]))
    report["max_rss_mb"] = peak_rss_mb()
    Path(result).write_text(json.dumps(report))


def spawn(args: list[str], tmp: Path, name: str) -> dict:
    result = tmp / f"{name}.json"
    subprocess.run(
        [sys.executable, __file__, "--child", *args[:1], args[1], str(result), *args[2:]],
        check=True,
    )
    return json.loads(result.read_text())


# --------------------------------------------------------------------------------------------------
# scoring and report


def score(pairs_path: Path, rows, copies, bases, truth, threshold) -> dict:
    found = np.load(pairs_path)
    rep_of = dict(zip(found["member"].tolist(), found["representative"].tolist()))
    true_pairs = [(b, c, j) for b, c, j in zip(bases, copies, truth) if j >= threshold]
    hit = [rep_of.get(c) == b for b, c, _ in true_pairs]
    edges = np.linspace(threshold, 1.0, 5).tolist()
    bins = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = [h for (_, _, j), h in zip(true_pairs, hit) if lo <= j < hi]
        bins[f"[{lo:.2f}, {hi:.2f})"] = (sum(sel), len(sel))
    sel = [h for (_, _, j), h in zip(true_pairs, hit) if j == 1.0]
    bins["1.0"] = (sum(sel), len(sel))
    reported = list(zip(found["member"].tolist(), found["matched"].tolist()))
    correct = sum(bigram_jaccard(rows[m], rows[k]) >= threshold for m, k in reported)
    return {
        "true_pairs": len(true_pairs),
        "recalled": sum(hit),
        "recall": sum(hit) / max(1, len(true_pairs)),
        "reported": len(reported),
        "precision": correct / max(1, len(reported)),
        "bins": bins,
    }


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline-rows", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--variants",
        default="xxhash,sha1",
        help="comma list of ours variants: xxhash, sha1, xxhash-noverify",
    )
    parser.add_argument("--results", type=Path, default=None, help="write the markdown here too")
    args = parser.parse_args()

    from mbdata.dedup import DedupConfig
    from mbdata.dedup.sketch import NearParams

    load_before = loadavg()
    t0 = time.perf_counter()
    rows, copies, bases = generate_rows(args.rows, args.seed)
    table = to_table(rows)
    truth = [bigram_jaccard(rows[b], rows[c]) for b, c in zip(bases, copies)]
    gen_seconds = time.perf_counter() - t0
    config = DedupConfig()
    params = NearParams.from_config(config, args.rows)
    threshold = config.threshold
    lines = []
    with tempfile.TemporaryDirectory(prefix="mb-dedup-bench-") as tmp_name:
        tmp = Path(tmp_name)
        corpus = tmp / "corpus.arrow"
        with pa.OSFile(str(corpus), "wb") as fh, pa.ipc.new_file(fh, table.schema) as writer:
            writer.write_table(table, max_chunksize=10_000)
        text_mb = sum(table.column(c).nbytes for c in ("instruction", "input", "output")) / 2**20
        del table
        baseline_args = [
            "baseline",
            str(corpus),
            str(min(args.baseline_rows, args.rows)),
            str(params.bands),
            str(params.rows),
        ]
        baselines = [spawn(baseline_args, tmp, "baseline-before")]
        loads = [loadavg()]
        results = {}
        for variant in args.variants.split(","):
            hash_name, _, mode = variant.partition("-")
            verify = "off" if mode == "noverify" else "auto"
            report = spawn(
                ["ours", str(corpus), hash_name, verify, str(tmp / f"{variant}.npz")], tmp, variant
            )
            report["score"] = score(tmp / f"{variant}.npz", rows, copies, bases, truth, threshold)
            results[variant] = report
            loads.append(loadavg())
        baselines.append(spawn(baseline_args, tmp, "baseline-after"))
    load_after = loadavg()

    # The baseline runs before and after our variants (the machine is shared and its load drifts);
    # speed-ups are against the mean of the two.
    baseline = baselines[0]
    base_rates = [b["rows"] / b["seconds"] for b in baselines]
    base_rps = sum(base_rates) / len(base_rates)
    lines.append(f"## dedup benchmark: {args.rows:,} rows (seed {args.seed})\n")
    lines.append(
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} "
        f"CPUs, Python {platform.python_version()}; load average (1/5/15 min) at start "
        f"{load_before}, after each run {' | '.join(loads)}, at end {load_after}"
    )
    lines.append(
        f"- corpus: {args.rows:,} rows, {text_mb:.0f} MiB of text, mean "
        f"{sum(len(t) for r in rows for t in r) / len(rows):.1f} words/row; "
        f"{len(copies):,} planted copies, {len(truth):,} planted pairs, "
        f"{sum(j >= threshold for j in truth):,} at Jaccard >= {threshold} "
        f"(generated in {gen_seconds:.0f} s)"
    )
    lines.append(
        f"- settings: defaults (fields all, word bigrams, num_perm {params.num_perm}, "
        f"threshold {threshold}, bands x rows {params.bands} x {params.rows} derived with "
        f"false-negative weight {params.fn_weight}, verify "
        f"{'exact Jaccard' if params.verify else 'off'})"
    )
    lines.append(
        f"- baseline: plain datasketch loop on the first {baseline['rows']:,} rows "
        f"(rows/s extrapolated to the full corpus), same shingles and bands/rows, "
        f"no verification; run before and after ours: "
        f"{' and '.join(f'{r:,.0f}' for r in base_rates)} rows/s, speed-ups use the "
        "mean; its peak RSS is for those rows only\n"
    )
    lines.append("| run | rows/s | speed-up | recall (pairs >= t) | precision | peak RSS |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    lines.append(
        f"| plain datasketch loop | {base_rps:,.0f} | 1.0x | - | - | "
        f"{max(b['max_rss_mb'] for b in baselines):,.0f} MiB |"
    )
    for variant, r in results.items():
        rps = r["rows"] / r["seconds"]
        s = r["score"]
        lines.append(
            f"| mbdata dedup ({variant}) | {rps:,.0f} | {rps / base_rps:.1f}x | "
            f"{s['recall']:.4f} ({s['recalled']:,}/{s['true_pairs']:,}) | "
            f"{s['precision']:.4f} ({s['reported']:,} pairs) | "
            f"{r['max_rss_mb']:,.0f} MiB |"
        )
    lines.append("")
    for variant, r in results.items():
        bins = ", ".join(f"{k}: {h}/{n}" for k, (h, n) in r["score"]["bins"].items())
        info = r["info"]
        lines.append(
            f"- {variant}: {r['seconds']:.1f} s; dropped {r['dropped']}; candidates "
            f"checked {info.get('candidates_checked')}, rejected "
            f"{info.get('candidates_rejected')}; recall by true Jaccard: {bins}"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.results:
        args.results.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
