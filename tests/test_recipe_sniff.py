"""`mb recipe validate` checks each local source's first bytes against its kind (issue 24 item 4):
`kind: jsonl` on a JSON array was `ok` and only the build failed. Files are generated."""

from __future__ import annotations

import contextlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from cli.main import main
from mbdata.io import sniff
from mbdata.io.sniff import kind_mismatch

ROWS = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(3)]


def _files(tmp_path):
    (tmp_path / "array.jsonl").write_text(json.dumps(ROWS, indent=1), encoding="utf-8")
    (tmp_path / "lines.json").write_text(
        "".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8"
    )
    (tmp_path / "tabs.csv").write_text("instruction\tinput\toutput\nq\t\ta\n", encoding="utf-8")
    (tmp_path / "commas.tsv").write_text("instruction,input,output\nq,,a\n", encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "real.parquet")
    (tmp_path / "real.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8"
    )


def _validate(tmp_path, capsys, kind, name, **extra):
    recipe = {
        "version": "1.0.0",
        "name": "t",
        "sources": [{"name": "s", "kind": kind, "path": name, **extra}],
    }
    path = tmp_path / f"r-{kind}-{name}.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    code = main(["recipe", "validate", str(path)])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize(
    ("kind", "name", "expected"),
    [
        ("jsonl", "array.jsonl", "looks like a JSON array: use kind: json"),
        ("json", "lines.json", "looks like JSON Lines (one object per line): use kind: jsonl"),
        ("csv", "tabs.csv", "looks tab-separated"),
        (
            "tsv",
            "commas.tsv",
            "looks comma-separated (its first line has commas and no tabs): use kind: csv",
        ),
        ("jsonl", "real.parquet", "is a Parquet file (it starts with PAR1): use kind: parquet"),
        ("parquet", "real.jsonl", "use kind: jsonl"),
    ],
)
def test_validate_reports_a_kind_mismatch(tmp_path, capsys, kind, name, expected):
    _files(tmp_path)
    code, output = _validate(tmp_path, capsys, kind, name)
    assert code == 2, output
    assert "sources[0].kind:" in output and expected in output, output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("kind", "name", "extra"),
    [
        ("jsonl", "real.jsonl", {}),
        ("json", "array.jsonl", {}),
        ("parquet", "real.parquet", {}),
        ("csv", "tabs.csv", {"delimiter": "\t"}),
        ("tsv", "tabs.csv", {}),
        ("csv", "commas.tsv", {}),
    ],
)
def test_validate_accepts_a_matching_kind(tmp_path, capsys, kind, name, extra):
    _files(tmp_path)
    code, output = _validate(tmp_path, capsys, kind, name, **extra)
    assert code == 0 and output.startswith("ok:"), output


def test_only_the_first_bytes_are_read(tmp_path, monkeypatch):
    """A file whose valid JSON array start is followed by bytes no reader accepts: the sniff
    decides from the head alone (and a large file costs one small read)."""
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"[" + b" " * (sniff.SNIFF_BYTES * 4) + b"\xff\xfe garbage")
    reads = []
    real_open = sniff.open_regular

    @contextlib.contextmanager
    def spy(p):
        with real_open(p) as fh:
            original = fh.read

            def read(n=-1):
                reads.append(n)
                return original(n)

            fh.read = read
            yield fh

    monkeypatch.setattr(sniff, "open_regular", spy)
    assert kind_mismatch(path, "jsonl") == "looks like a JSON array: use kind: json"
    assert reads == [sniff.SNIFF_BYTES]
