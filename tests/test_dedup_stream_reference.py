"""`mb dedup --reference` streamed (reference indexed once, each input batch decontaminated before
dedup sees its remaining rows) gives the in-memory path's output byte for byte: shards, both side
tables, skipped rows, manifest and its content hash."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from test_dedup_stream import VOCAB, _files, _write_jsonl, corpus

import mbdata
from mbdata.dedup import DedupConfig
from mbdata.dedup import config as dedup_config
from mbdata.dedup.decontaminate import Decontaminator
from mbdata.dedup.standalone import dedup_path, dedup_path_streaming

REF_FIELDS = {"instruction": "behavior"}


def contaminated_corpus(seed: int = 5) -> tuple[list[dict], list[dict]]:
    """The stream test's corpus (exact copies, near copies, chains, empty rows) plus rows whose
    prompt a reference holds exactly or nearly, and the reference (prompts only, its own column
    name ``behavior``, one unparseable line)."""
    rng = random.Random(seed)
    rows = corpus(60, seed=seed)
    reference = []
    for i in (0, 4, 9):  # exact: the row, its upper-case copies and its output edits go
        reference.append({"behavior": rows[i]["instruction"].upper()})
    for i in (2, 13):  # near: one word more than the corpus prompt (bigram Jaccard 11/12)
        reference.append({"behavior": rows[i]["instruction"] + " please"})
    # A contaminated row first in its duplicate family, followed by a near copy whose prompt is
    # too different to be contaminated (one word of 12 changed: bigram Jaccard 9/13 < 0.7) but
    # whose whole row is a near duplicate: with the reference it is kept, without it dropped.
    base = {"instruction": " ".join(rng.choice(VOCAB) for _ in range(12)), "input": ""}
    base["output"] = " ".join(rng.choice(VOCAB) for _ in range(60))
    words = base["instruction"].split()
    words[6] = "changed"
    copy = {**base, "instruction": " ".join(words)}
    rows[20:20] = [base, copy, dict(copy), {**base, "instruction": base["instruction"].upper()}]
    reference.append({"behavior": base["instruction"]})
    reference.append({"behavior": ""})  # an empty prompt matches only empty prompts exactly
    reference.append({"behavior": "a prompt that appears nowhere in the corpus at all"})
    return rows, reference


def _write_reference(path: Path, reference: list[dict]) -> Path:
    lines = [json.dumps(r) for r in reference]
    lines.insert(2, "{not json")
    path.write_text("\n".join(lines) + "\n")
    return path


def _same_as_in_memory(tmp_path: Path, source: Path, ref: Path, config, batch_rows: int):
    whole = dedup_path(
        source,
        tmp_path / "whole",
        config,
        reference_path=ref,
        reference_fields=REF_FIELDS,
        stream=False,
    )
    streamed = dedup_path_streaming(
        source,
        tmp_path / "stream",
        config,
        reference_path=ref,
        reference_fields=REF_FIELDS,
        batch_rows=batch_rows,
    )
    assert _files(streamed) == _files(whole)
    manifests = [json.loads((p / "manifest.json").read_text()) for p in (whole, streamed)]
    assert manifests[0]["content_hash"] == manifests[1]["content_hash"]
    assert mbdata.verify_build(streamed) == []
    assert not list(streamed.rglob(".dedup-spill*"))
    return mbdata.open_build(streamed)


@pytest.mark.parametrize(
    "config",
    [
        DedupConfig(),
        DedupConfig(keep_all=True),
        DedupConfig(verify=False),
        DedupConfig(fields="prompt", decontaminate_threshold=0.6),
    ],
    ids=["default", "keep_all", "noverify", "prompt"],
)
def test_streamed_reference_output_is_byte_identical(tmp_path, config):
    rows, reference = contaminated_corpus()
    source = _write_jsonl(tmp_path / "in.jsonl", rows)
    ref = _write_reference(tmp_path / "ref.jsonl", reference)
    build = _same_as_in_memory(tmp_path, source, ref, config, batch_rows=7)
    decon = build.side_table("dedup/decontamination")
    reasons = decon.column("reason").to_pylist()
    assert reasons.count("contaminated_exact") > 5 and reasons.count("contaminated_near") >= 2
    assert build.manifest["stages"][0]["rows_in"] > 7  # more rows than one batch
    skipped = build.manifest["skipped_rows"]
    assert skipped["rows"] == 3  # two in the input, one in the reference
    if config == DedupConfig():
        # the contaminated family head (file row 22, after two bad lines) goes; its near copy
        # (23), too different in prompt to be contaminated, is kept and represents its exact copy
        members = build.side_table("dedup/clusters").column("member_source_row").to_pylist()
        assert 24 in members and 23 not in members
        assert {22, 25} <= set(decon.column("source_row").to_pylist())


def test_verify_auto_past_the_row_limit_restarts_when_outcomes_differ(tmp_path, monkeypatch):
    """`verify: null` for decontamination depends on rows + reference rows: both outcomes are
    matched until the limit is passed; when they removed different rows, the stream restarts
    unverified; otherwise it goes on unverified."""
    from mbdata.dedup import stream as dedup_stream

    monkeypatch.setattr(dedup_config, "VERIFY_AUTO_MAX_ROWS", 60)
    monkeypatch.setattr(dedup_stream, "VERIFY_AUTO_MAX_ROWS", 60)
    restarts = []
    real = Decontaminator.__init__

    def spy(self, *args, **kwargs):
        if kwargs.get("known_rows") is None:  # the stream's runs, not the in-memory reference
            restarts.append(kwargs.get("force_unverified", False))
        real(self, *args, **kwargs)

    monkeypatch.setattr(Decontaminator, "__init__", spy)
    rows, reference = contaminated_corpus()
    # prompts about half like a reference prompt (bigram Jaccard ~0.55): the unverified outcome
    # takes some of them as candidates, the verified one rejects them
    rng = random.Random(2)
    target = reference[-3]["behavior"].split()
    for _ in range(30):
        words = [w if rng.random() < 0.85 else rng.choice(VOCAB) for w in target]
        rows.insert(3, {"instruction": " ".join(words), "input": "", "output": "x y z"})
    source = _write_jsonl(tmp_path / "in.jsonl", rows)
    ref = _write_reference(tmp_path / "ref.jsonl", reference)
    build = _same_as_in_memory(tmp_path, source, ref, DedupConfig(), batch_rows=16)
    assert restarts == [False, True]
    assert build.manifest["stages"][0]["info"]["verify"] is False
    restarts.clear()
    monkeypatch.setattr(dedup_config, "VERIFY_AUTO_MAX_ROWS", 1000)
    monkeypatch.setattr(dedup_stream, "VERIFY_AUTO_MAX_ROWS", 1000)
    build = _same_as_in_memory(tmp_path / "s", source, ref, DedupConfig(), batch_rows=16)
    assert restarts == [False] and build.manifest["stages"][0]["info"]["verify"] is True
    restarts.clear()
    monkeypatch.setattr(dedup_config, "VERIFY_AUTO_MAX_ROWS", 5)  # the reference alone passes it
    monkeypatch.setattr(dedup_stream, "VERIFY_AUTO_MAX_ROWS", 5)
    build = _same_as_in_memory(tmp_path / "r", source, ref, DedupConfig(), batch_rows=16)
    assert restarts == [False] and build.manifest["stages"][0]["info"]["verify"] is False


def test_mb_dedup_reference_streams_the_input(tmp_path, monkeypatch):
    """The CLI reads only the reference whole, never the input."""
    import mbdata.io.readers

    rows, reference = contaminated_corpus()
    source = _write_jsonl(tmp_path / "in.jsonl", rows)
    ref = _write_reference(tmp_path / "ref.jsonl", reference)
    real = mbdata.io.readers.read_input

    def reference_only(path, *args, **kwargs):
        assert Path(path) == ref, "mb dedup read the whole input"
        return real(path, *args, **kwargs)

    monkeypatch.setattr(mbdata.io.readers, "read_input", reference_only)
    monkeypatch.setenv("MB_DEDUP_BATCH_ROWS", "8")
    from cli.main import main

    args = ["dedup", str(source), "-o", str(tmp_path / "out"), "--reference", str(ref)]
    assert main([*args, "--reference-field", "instruction=behavior"]) == 0
    stages = mbdata.open_build(tmp_path / "out").manifest["stages"]
    assert [s["name"] for s in stages] == ["decontaminate", "dedup"]
    assert stages[0]["dropped"]["contaminated_exact"] > 0


def test_streamed_reference_on_a_multi_split_build_folder(tmp_path):
    """Split codes are numbered among the rows decontamination leaves, as the in-memory path's
    filtered table numbers them (the first split read, `eval_clean`, is contaminated whole)."""
    from mbdata.io.schema import from_rows, make_row
    from mbdata.io.shards import write_build

    rows, reference = contaminated_corpus(seed=7)
    head = [{"behavior": r["instruction"]} for r in rows[:12]]
    tables = {
        split: from_rows(
            make_row(**r, source="s", source_row=i, split=split) for i, r in enumerate(part)
        )
        for split, part in (("eval_clean", rows[:12]), ("train", rows))
    }
    write_build(tmp_path / "b", tables, {"kind": "test"}, shard_rows=17)
    ref = _write_reference(tmp_path / "ref.jsonl", reference + head)
    build = _same_as_in_memory(tmp_path, tmp_path / "b", ref, DedupConfig(), batch_rows=5)
    assert set(build.manifest["splits"]) == {"train"}
    splits = build.side_table("dedup/decontamination").column("split").to_pylist()
    assert splits[:12] == ["eval_clean"] * 12 and splits.count("train") > 12
