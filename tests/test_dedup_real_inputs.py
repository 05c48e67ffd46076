"""Issue 13: `mb dedup` on real files: empty texts are data, only unparseable rows are skipped
(and listed), prompts-only references with --reference-field, row numbers as read."""

from __future__ import annotations

import json

import mbdata
from cli.main import main

EVAL = [
    "Explain why the sky appears blue during a clear summer afternoon to a ten year old",
    "List four common causes of household fires and one way to prevent each of them",
]


def _corpus(tmp_path):
    lines = [
        json.dumps(
            {
                "instruction": f"Write a short poem about the number {i} and the sea",
                "input": "",
                "output": "" if i == 2 else f"Poem {i}.",
            }
        )
        for i in range(8)
    ]
    lines[4] = '{"instruction": "cut'  # row 4: unparseable
    lines.append(json.dumps({"instruction": EVAL[1], "input": "", "output": "Fires..."}))  # row 8
    lines.append(lines[0])  # row 9: copy of row 0
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    ref = [json.dumps({"question": EVAL[0]}), "{broken", json.dumps({"question": EVAL[1]})]
    (tmp_path / "ref.jsonl").write_text("\n".join(ref) + "\n")
    return tmp_path / "in.jsonl", tmp_path / "ref.jsonl"


def test_dedup_keeps_empty_outputs_and_lists_unparseable_rows(tmp_path, capsys):
    corpus, _ = _corpus(tmp_path)
    assert main(["dedup", str(corpus), "-o", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 unparseable input row (in:invalid_json=1)" in captured.err
    assert "mb export" in captured.out and "--format jsonl" in captured.out
    b = mbdata.open_build(tmp_path / "o")
    rows = b.table("train").column("source_row").to_pylist()
    assert rows == [0, 1, 2, 3, 5, 6, 7, 8]  # row 2 (empty output) is kept
    clusters = b.side_table("dedup/clusters").to_pylist()
    assert [(c["member_source_row"], c["representative_row"]) for c in clusters] == [(9, 0)]
    skipped = [json.loads(x) for x in (tmp_path / "o" / "skipped.jsonl").read_text().splitlines()]
    assert [(r["source_row"], r["line"], r["reason"]) for r in skipped] == [(4, 5, "invalid_json")]
    assert b.manifest["skipped_rows"]["rows"] == 1 and mbdata.verify_build(tmp_path / "o") == []


def test_prompts_only_reference_with_reference_field(tmp_path, capsys):
    corpus, ref = _corpus(tmp_path)
    assert main(["dedup", str(corpus), "-o", str(tmp_path / "o"), "--reference", str(ref)]) == 2
    err = capsys.readouterr().err
    assert "required column 'instruction' missing" in err and "'question'" in err
    assert "--reference-field instruction=COLUMN" in err
    assert (
        main(
            [
                "dedup",
                str(corpus),
                "-o",
                str(tmp_path / "o"),
                "--reference",
                str(ref),
                "--reference-field",
                "instruction=question",
            ]
        )
        == 0
    )
    b = mbdata.open_build(tmp_path / "o")
    side = b.side_table("dedup/decontamination").to_pylist()
    assert [(r["source_row"], r["reference_row"]) for r in side] == [(8, 2)]
    assert 8 not in b.table("train").column("source_row").to_pylist()
    assert (
        main(
            [
                "dedup",
                str(corpus),
                "-o",
                str(tmp_path / "o2"),
                "--reference",
                str(ref),
                "--reference-field",
                "bogus=question",
            ]
        )
        == 2
    )
    assert "unknown canonical field 'bogus'" in capsys.readouterr().err


def test_a_second_reference_is_refused_not_dropped(tmp_path, capsys):
    """Issue 24: `--reference a --reference b` kept only b, silently."""
    corpus, ref = _corpus(tmp_path)
    other = tmp_path / "ref2.jsonl"
    other.write_text(json.dumps({"question": "x"}) + "\n")
    out = tmp_path / "o"
    argv = ["dedup", str(corpus), "-o", str(out), "--reference", str(ref)]
    assert main([*argv, "--reference", str(other)]) == 2
    err = capsys.readouterr().err
    assert "--reference given 2 times" in err and "one reference per run" in err
    assert not out.exists()
