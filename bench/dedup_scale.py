"""End-to-end benchmark of ``mb dedup`` (issue 16): the CLI from JSONL to output folder.

One run, one machine:

1. **200k Alpaca-sized rows** (``--rows``) with planted near-duplicate families (bench/dedup.py's
   generator: copies with 0-10 word edits), written as JSONL. ``mb dedup IN.jsonl -o OUT`` runs
   in its own process under ``/usr/bin/time -v`` (wall time and peak RSS of the whole command:
   read, hash, cluster, write). A plain datasketch loop runs in the same session, before and after
   ours, on the first ``--baseline-rows`` rows of the same file (read + parse each line,
   normalise, ``MinHash`` with datasketch's default hash, ``MinHashLSH`` query then insert, exact
   copies by a dict of the normalised text; it writes nothing), its rows/s extrapolated. Recall
   and precision are scored on the planted pairs against exact bigram Jaccard (as bench/dedup.py).
2. **Ray engine** on the same file: ``ray.init(num_cpus=2)`` then the same command with
   ``engine="ray"``; its shards and side table must have the same sha256 as the local engine's.
3. **Scale** (``--scale 1000000,2000000``): synthetic JSONL generated in chunks (no ground truth
   needed: rows/s and peak RSS only), ``mb dedup`` under ``/usr/bin/time -v``.
4. **Reference** (``--reference N``, alone): ``mb dedup --reference`` on ``--rows`` synthetic
   rows with ``N`` of their prompts as the reference (half with a word appended), against the
   same command without a reference and the in-memory path; CPU seconds and peak RSS.

Usage::

    .venv/bin/python bench/dedup_scale.py --rows 200000 --scale 1000000,2000000 \\
        --results bench/results-dedup-scale.md
    .venv/bin/python bench/dedup_scale.py --scale-only --scale 1000000,10000000   # memory only
    .venv/bin/python bench/dedup_scale.py --rows 100000 --reference 1000 \\
        --results bench/results-dedup.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from dedup import bigram_jaccard, generate_rows, loadavg, score  # noqa: E402


def write_jsonl(rows, path: Path) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i, f in enumerate(rows):
            output = ("  " if i % 7 == 0 else " ").join(f[2])
            record = {"instruction": " ".join(f[0]), "input": " ".join(f[1]), "output": output}
            fh.write(json.dumps(record) + "\n")


def synthetic_jsonl(n: int, path: Path, seed: int = 0, chunk: int = 100_000) -> None:
    """``n`` Alpaca-sized rows written chunk by chunk (bounded memory); 10% of the rows of each
    chunk copy an earlier row of the chunk with one word changed."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i:05d}" for i in range(50_000)])
    with path.open("w", encoding="utf-8") as fh:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            lengths = rng.integers(6, 21, m), rng.integers(0, 30, m), rng.integers(20, 80, m)
            words = vocab[rng.zipf(1.3, size=int(sum(x.sum() for x in lengths))) % len(vocab)]
            pos, rows = 0, []
            for a, b, c in zip(*(x.tolist() for x in lengths)):
                rows.append([words[pos : pos + a], words[pos + a : pos + a + b]])
                rows[-1].append(words[pos + a + b : pos + a + b + c])
                pos += a + b + c
            copies = rng.choice(np.arange(1, m), size=m // 10, replace=False)
            for k in copies.tolist():
                base = rows[int(rng.integers(0, k))]
                out = base[2].copy()
                out[int(rng.integers(0, len(out)))] = "edited"
                rows[k] = [base[0], base[1], out]
            for f in rows:
                record = {
                    "instruction": " ".join(f[0]),
                    "input": " ".join(f[1]),
                    "output": " ".join(f[2]),
                }
                fh.write(json.dumps(record) + "\n")


def timed(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd`` under /usr/bin/time -v: wall seconds and peak RSS (MiB)."""
    start = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env, check=False
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    cpu = sum(
        float(m) for m in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", proc.stderr)
    )
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rss_mib": int(rss.group(1)) / 1024 if rss else float("nan"),
    }


def mb_dedup(src: Path, out: Path, extra: list[str] | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "cli.main", "dedup", str(src), "-o", str(out), "--quiet"]
    return timed(cmd + (extra or []), env)


BASELINE = r"""
import json, sys, time
from datasketch import MinHash, MinHashLSH
from mbdata.dedup.shingle import word_shingles
from mbdata.io.schema import normalize_text
path, rows, bands, band_rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
start = time.perf_counter()
lsh = MinHashLSH(num_perm=128, params=(bands, band_rows))
seen, dropped = {}, 0
with open(path, "rb") as fh:
    for i, line in enumerate(fh):
        if i >= rows:
            break
        r = json.loads(line)
        text = " ".join(t for t in map(normalize_text, (r["instruction"], r["input"], r["output"])) if t)
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
print(json.dumps({"rows": min(rows, i + 1), "seconds": time.perf_counter() - start}))
"""


def baseline(src: Path, rows: int, bands: int, band_rows: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", BASELINE, str(src), str(rows), str(bands), str(band_rows)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout)


RAY_CHILD = r"""
import json, sys, time, ray
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
import ray.data
ray.data.DataContext.get_current().enable_progress_bars = False
from mbdata.dedup import DedupConfig
from mbdata.dedup.standalone import dedup_path_streaming
start = time.perf_counter()
dedup_path_streaming(sys.argv[1], sys.argv[2], DedupConfig(), engine="ray")
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


RAY_TIMEOUT = 1200


def ray_run(src: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", RAY_CHILD, str(src), str(out)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=RAY_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"not finished within {RAY_TIMEOUT} s (stopped)"}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1][:300]}
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    report["process_seconds"] = time.perf_counter() - start
    return report


def file_hashes(out: Path) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    shards = {s["path"]: s["sha256"] for v in manifest["splits"].values() for s in v["shards"]}
    sides = {k: v["sha256"] for k, v in manifest["side_tables"].items()}
    return {**shards, **sides, "content_hash": manifest["content_hash"]}


def clusters_npz(out: Path, path: Path) -> None:
    import pyarrow as pa

    with pa.memory_map(str(out / "dedup" / "clusters.arrow")) as source:
        table = pa.ipc.open_file(source).read_all()
    np.savez(
        path,
        member=table.column("member_row").to_numpy(),
        matched=table.column("matched_row").to_numpy(),
        representative=table.column("representative_row").to_numpy(),
    )


def compare(args: argparse.Namespace, tmp: Path) -> list[str]:
    """Part 1 and 2 of the docstring: the --rows corpus against the datasketch loop, then Ray."""
    from mbdata.dedup import DedupConfig
    from mbdata.dedup.sketch import NearParams

    lines: list[str] = []
    t0 = time.perf_counter()
    rows, copies, bases = generate_rows(args.rows, 0)
    truth = [bigram_jaccard(rows[b], rows[c]) for b, c in zip(bases, copies)]
    src = tmp / "corpus.jsonl"
    write_jsonl(rows, src)
    gen = time.perf_counter() - t0
    params = NearParams.from_config(DedupConfig(), args.rows)
    base_args = (src, min(args.baseline_rows, args.rows), params.bands, params.rows)
    base = [baseline(*base_args)]
    loads = [loadavg()]
    ours = mb_dedup(src, tmp / "out-local")
    loads.append(loadavg())
    base.append(baseline(*base_args))
    loads.append(loadavg())
    clusters_npz(tmp / "out-local", tmp / "pairs.npz")
    s = score(tmp / "pairs.npz", rows, copies, bases, truth, 0.8)
    base_rps = float(np.mean([b["rows"] / b["seconds"] for b in base]))
    rps = args.rows / ours["seconds"]
    mib = src.stat().st_size / 2**20
    lines.append(
        f"- corpus: {args.rows:,} rows, {mib:.0f} MiB JSONL, {len(truth):,} planted pairs, "
        f"{s['true_pairs']:,} at bigram Jaccard >= 0.8 (generated in {gen:.0f} s)"
    )
    rates = " and ".join(f"{b['rows'] / b['seconds']:,.0f}" for b in base)
    lines.append(
        f"- baseline: plain datasketch loop on the first {base[0]['rows']:,} rows (reads and "
        f"parses the JSONL too, writes nothing), before and after ours: {rates} rows/s "
        f"(speed-up against the mean); load after each run: {' | '.join(loads)}\n"
    )
    lines.append("| run | seconds | rows/s | speed-up | recall | precision | peak RSS |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    lines.append(f"| plain datasketch loop | - | {base_rps:,.0f} | 1.0x | - | - | - |")
    lines.append(
        f"| `mb dedup` (local) | {ours['seconds']:.1f} | {rps:,.0f} | "
        f"{rps / base_rps:.1f}x | {s['recall']:.4f} ({s['recalled']:,}/{s['true_pairs']:,}) "
        f"| {s['precision']:.4f} ({s['reported']:,} pairs) | {ours['rss_mib']:,.0f} MiB |"
    )
    bins = ", ".join(f"{k}: {h}/{n}" for k, (h, n) in s["bins"].items())
    notes = [f"- recall by true Jaccard (local): {bins}"]
    if not args.no_ray:
        r = ray_run(src, tmp / "out-ray")
        loads.append(loadavg())
        if "error" in r:
            notes.append(f"- ray engine: failed: {r['error']}")
        else:
            same = file_hashes(tmp / "out-ray") == file_hashes(tmp / "out-local")
            lines.append(
                f"| `mb dedup --engine ray` (num_cpus=2) | {r['seconds']:.1f} | "
                f"{args.rows / r['seconds']:,.0f} | {args.rows / r['seconds'] / base_rps:.1f}x"
                f" | same output: {same} | | |"
            )
            notes.append(
                f"- ray engine: {r['seconds']:.1f} s inside the process after `ray.init` "
                f"({r['process_seconds']:.1f} s with interpreter and Ray start); shards, "
                f"clusters and content hash identical to the local engine: {same}; load "
                f"after: {loads[-1]}"
            )
    lines.append("")
    lines += notes
    return lines


IN_MEMORY = r"""
import sys
from mbdata.dedup.standalone import dedup_path
dedup_path(sys.argv[1], sys.argv[2], reference_path=sys.argv[3], stream=False)
"""


def reference_bench(n: int, ref_rows: int, tmp: Path) -> list[str]:
    """``mb dedup --reference`` (streamed) against the same command without a reference and
    against the in-memory path (``dedup_path(..., stream=False)``) on a synthetic corpus; the
    reference holds ``ref_rows`` of its prompts, every second one with a word appended (near)."""
    src, ref = tmp / "ref-corpus.jsonl", tmp / "reference.jsonl"
    synthetic_jsonl(n, src)
    step = max(1, n // ref_rows)
    with src.open(encoding="utf-8") as fh, ref.open("w", encoding="utf-8") as out:
        for i, line in enumerate(fh):
            if i % step or i // step >= ref_rows:
                continue
            row = json.loads(line)
            prompt = row["instruction"] + (" please" if (i // step) % 2 else "")
            out.write(json.dumps({"behavior": prompt, "input": row["input"]}) + "\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = {
        "no reference": mb_dedup(src, tmp / "o-noref"),
        "--reference (streamed)": mb_dedup(
            src,
            tmp / "o-ref",
            ["--reference", str(ref), "--reference-field", "instruction=behavior"],
        ),
    }
    # the in-memory path maps no reference field: give it the reference with canonical names
    canon = tmp / "reference-canonical.jsonl"
    canon.write_text(ref.read_text(encoding="utf-8").replace('"behavior"', '"instruction"'))
    runs["--reference (in memory)"] = timed(
        [sys.executable, "-c", IN_MEMORY, str(src), str(tmp / "o-mem"), str(canon)], env
    )
    stages = json.loads((tmp / "o-ref" / "manifest.json").read_text())["stages"]
    # the manifests differ by design (reference path and field mapping): compare the files
    hashes = [file_hashes(tmp / o) for o in ("o-ref", "o-mem")]
    files = [{k: v for k, v in h.items() if k != "content_hash"} for h in hashes]
    same = files[0] == files[1]
    lines = [
        f"## mb dedup --reference: {n:,} rows, {ref_rows:,} reference prompts\n",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, shared with other jobs (load "
        f"{loadavg()}); CPU seconds = user + sys of the whole command (/usr/bin/time -v); wall "
        "time is not comparable on this loaded machine",
        f"- decontamination dropped {stages[0]['dropped']}, dedup dropped {stages[1]['dropped']};"
        f" streamed output identical to the in-memory path's (shards, side tables): {same}\n",
        "| run | CPU seconds | peak RSS |",
        "|---|---:|---:|",
    ]
    for name, run in runs.items():
        lines.append(f"| {name} | {run['cpu_seconds']:.1f} | {run['rss_mib']:,.0f} MiB |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--baseline-rows", type=int, default=30_000)
    parser.add_argument("--scale", default="", help="comma list of synthetic sizes, e.g. 1000000")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument(
        "--scale-only", action="store_true", help="skip the --rows comparison; run --scale only"
    )
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument(
        "--reference",
        type=int,
        default=0,
        help="only run `mb dedup --reference` with this many reference prompts on --rows rows",
    )
    args = parser.parse_args()
    if args.reference:
        with tempfile.TemporaryDirectory(prefix="mb-dedup-ref-") as tmp_name:
            text = "\n".join(reference_bench(args.rows, args.reference, Path(tmp_name)))
        print(text)
        if args.results:
            with args.results.open("a", encoding="utf-8") as fh:
                fh.write("\n" + text)
        return

    sys.path.insert(0, str(ROOT))
    title = f"scale {args.scale}" if args.scale_only else f"{args.rows:,} rows"
    lines = [f"## mb dedup end to end: {title}\n"]
    lines.append(
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, shared with other jobs; load average (1/5/15 min) "
        f"at start {loadavg()}"
    )
    with tempfile.TemporaryDirectory(prefix="mb-dedup-scale-") as tmp_name:
        tmp = Path(tmp_name)
        if not args.scale_only:
            lines += compare(args, tmp)
        for n in [int(x) for x in args.scale.split(",") if x]:
            path = tmp / f"scale-{n}.jsonl"
            t1 = time.perf_counter()
            synthetic_jsonl(n, path)
            gen = time.perf_counter() - t1
            run = mb_dedup(path, tmp / f"out-{n}")
            manifest = json.loads((tmp / f"out-{n}" / "manifest.json").read_text())
            info = manifest["stages"][0]
            lines.append(
                f"- scale {n:,} rows ({path.stat().st_size / 2**20:,.0f} MiB JSONL, generated in "
                f"{gen:.0f} s): {run['seconds']:.1f} s, {n / run['seconds']:,.0f} rows/s, peak "
                f"RSS {run['rss_mib']:,.0f} MiB; verify {info['info'].get('verify')}, dropped "
                f"{info['dropped']}; load after {loadavg()}"
            )
            path.unlink()
            subprocess.run(["rm", "-rf", str(tmp / f"out-{n}")], check=False)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.results:
        args.results.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
