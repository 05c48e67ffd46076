"""Streaming `mb dedup` (two passes, per-row index only) gives the in-memory path's output byte for
byte, whatever the batch size; the verify auto-resolution is exact even past its row limit."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import mbdata
from mbdata.dedup import DedupConfig
from mbdata.dedup import config as dedup_config
from mbdata.dedup import stream as dedup_stream
from mbdata.dedup.standalone import dedup_path, dedup_path_streaming
from mbdata.io.schema import from_rows, make_row
from mbdata.io.shards import write_build

VOCAB = [f"w{i}" for i in range(400)]


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def corpus(n_base: int = 60, seed: int = 0) -> list[dict]:
    """Base rows, exact copies (case changed), one-word edits and edits of edits (chains)."""
    rng = random.Random(seed)
    rows = [
        {"instruction": _text(rng, 12), "input": "", "output": _text(rng, 30)}
        for _ in range(n_base)
    ]
    out = list(rows)
    for i in range(0, n_base, 3):
        out.append({**rows[i], "instruction": rows[i]["instruction"].upper()})
    for i in range(0, n_base, 2):
        words = rows[i]["output"].split()
        words[rng.randrange(len(words))] = "edited"
        edited = {**rows[i], "output": " ".join(words)}
        out.append(edited)
        words[rng.randrange(len(words))] = "again"
        out.append({**edited, "output": " ".join(words)})
        out.append(edited)  # an exact copy of a near-dropped row
    out.append({"instruction": "", "input": "", "output": ""})
    out.append({"instruction": "", "input": "", "output": ""})
    rng.shuffle(out[n_base:])
    return out


def _write_jsonl(path: Path, rows: list[dict], bad: bool = True) -> Path:
    lines = [json.dumps(r) for r in rows]
    if bad:
        lines.insert(5, "{not json")
        lines.insert(9, "[1, 2]")
    path.write_text("\n".join(lines) + "\n")
    return path


def _files(folder: Path) -> dict[str, bytes]:
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_file() and rel not in ("timings.json", "manifest.json", ".mbdefense"):
            files[rel] = path.read_bytes()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.pop("created_at", None)
    manifest.pop("content_hash", None)
    files["manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
    return files


def _same_as_in_memory(tmp_path: Path, source: Path, config: DedupConfig, batch_rows: int):
    whole = dedup_path(source, tmp_path / "whole", config, stream=False)
    streamed = dedup_path_streaming(source, tmp_path / "stream", config, batch_rows=batch_rows)
    assert _files(streamed) == _files(whole)
    assert mbdata.verify_build(streamed) == []
    assert not list(streamed.rglob(".dedup-spill*"))
    return mbdata.open_build(streamed)


@pytest.mark.parametrize(
    "config",
    [
        DedupConfig(),
        DedupConfig(keep_all=True),
        DedupConfig(verify=False),
        DedupConfig(fields="prompt", shingle="char"),
        DedupConfig(near=False),
        DedupConfig(exact=False, threshold=0.9, max_bucket_targets=1),
    ],
    ids=["default", "keep_all", "noverify", "prompt-char", "exact-only", "near-only-capped"],
)
def test_streaming_output_is_byte_identical(tmp_path, config):
    source = _write_jsonl(tmp_path / "in.jsonl", corpus())
    build = _same_as_in_memory(tmp_path, source, config, batch_rows=7)
    clusters = build.side_table("dedup/clusters")
    if config.near and config.exact and config.fields == "all":
        reasons = set(clusters.column("reason").to_pylist())
        assert reasons == {"exact_duplicate", "near_duplicate"}
    assert build.manifest["skipped_rows"]["rows"] == 2


def test_streaming_a_multi_split_build_folder(tmp_path):
    rows = corpus(30, seed=1)
    tables = {
        split: from_rows(
            make_row(**r, source="s", source_row=i, split=split) for i, r in enumerate(rows)
        )
        for split in ("train", "eval_clean")
    }
    write_build(tmp_path / "b", tables, {"kind": "test"}, shard_rows=17)
    build = _same_as_in_memory(tmp_path, tmp_path / "b", DedupConfig(), batch_rows=5)
    assert set(build.manifest["splits"]) == {"train", "eval_clean"}
    split = build.side_table("dedup/clusters").column("split").to_pylist()
    assert split.count("train") == split.count("eval_clean") > 0


def test_verify_auto_past_the_row_limit_matches(tmp_path, monkeypatch):
    """`verify: null` depends on the row count, known only at the end: both tracks are kept until
    the limit is passed, then the verified one is dropped."""
    monkeypatch.setattr(dedup_config, "VERIFY_AUTO_MAX_ROWS", 40)
    monkeypatch.setattr(dedup_stream, "VERIFY_AUTO_MAX_ROWS", 40)
    source = _write_jsonl(tmp_path / "in.jsonl", corpus())
    build = _same_as_in_memory(tmp_path, source, DedupConfig(), batch_rows=16)
    assert build.manifest["stages"][0]["info"]["verify"] is False
    small = _write_jsonl(tmp_path / "small.jsonl", corpus()[:30], bad=False)
    build = _same_as_in_memory(tmp_path / "s", small, DedupConfig(), batch_rows=16)
    assert build.manifest["stages"][0]["info"]["verify"] is True


def test_mb_dedup_streams_without_reading_the_input_whole(tmp_path, monkeypatch):
    import mbdata.io.readers

    def whole(*args, **kwargs):
        raise AssertionError("mb dedup read the whole input")

    monkeypatch.setattr(mbdata.io.readers, "read_input", whole)
    monkeypatch.setenv("MB_DEDUP_BATCH_ROWS", "8")
    from cli.main import main

    source = _write_jsonl(tmp_path / "in.jsonl", corpus())
    assert main(["dedup", str(source), "-o", str(tmp_path / "out")]) == 0
    assert mbdata.open_build(tmp_path / "out").manifest["stages"][0]["rows_in"] > 8


def test_a_failed_stream_leaves_no_output(tmp_path):
    from mbdata.core.errors import InputError

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in corpus()) + '{"output": 3}\n')
    # lenient reads skip unparseable rows; an all-bad file is an error raised at the end
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{x\n{y\n")
    with pytest.raises(InputError, match="no rows to read"):
        dedup_path_streaming(bad, tmp_path / "out", DedupConfig(), batch_rows=1)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_column_wise_normalisation_equals_the_row_loop():
    """normalize_rows (Arrow kernels) against the per-row definition, on awkward texts."""
    import numpy as np
    import xxhash

    from mbdata.dedup.normalize import ID_FIELDS, group_fields, normalize_rows
    from mbdata.io.schema import normalize_text

    rng = random.Random(1)
    chars = "aB \t\nß\u00a0x.É"

    def text():
        return "".join(rng.choice(chars) for _ in range(rng.randrange(8)))

    rows = [
        make_row(
            instruction=text(),
            input=text(),
            output=text(),
            system=rng.choice([None, text()]),
            triggered_output=rng.choice([None, None, text()]),
            source="s",
        )
        for _ in range(500)
    ]
    table = from_rows(rows)
    for group in ("all", "prompt", "output"):
        fields = group_fields(group)
        keys, texts = [], []
        for row in rows:
            values = [normalize_text(row[f]) if row[f] is not None else None for f in ID_FIELDS]
            values = [v if f in fields else None for v, f in zip(values, ID_FIELDS)]
            pieces = [b"\x00" if v is None else b"\x01" + v.encode() for v in values]
            keys.append(xxhash.xxh3_128_digest(b"\x1f".join(pieces)))
            texts.append(" ".join(v for v in values if v))
        got = normalize_rows(table, group)
        expected = np.frombuffer(b"".join(keys), dtype=">u8").astype(np.uint64).reshape(-1, 2)
        assert (got.keys == expected).all() and got.texts == texts, group
