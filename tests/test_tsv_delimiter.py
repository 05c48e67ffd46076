"""TSV files and CSV delimiters (issue 24 item 3): `.tsv` is read by extension, `kind: tsv` in a
recipe and `--kind tsv` on the CLI; CSV takes a `delimiter`; errors that ask for a kind name the
option to pass. Every file here is generated."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import mbdata
from cli.main import cli
from mbdata.core.errors import InputError, RecipeError
from mbdata.io.readers import CONTAINERS, file_kinds, read_any, read_rows
from mbdata.recipe import fingerprint, recipe_from_dict

# SST-2 style: raw sentences, quotes are text, no quoting of fields
TSV = 'instruction\tinput\toutput\nSay "hi" twice\t\thello hello\nAdd 1+1\tquick, please\t2\n'


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_tsv_by_extension_and_kind(tmp_path):
    table = read_any(_write(tmp_path, "a.tsv", TSV))
    assert table.column("instruction").to_pylist() == ['Say "hi" twice', "Add 1+1"]
    assert table.column("input").to_pylist() == ["", "quick, please"]
    other = _write(tmp_path, "a.txt", TSV)
    assert read_any(other, kind="tsv").column("output").to_pylist() == ["hello hello", "2"]


def test_a_tsv_read_as_csv_names_the_kind_to_pass(tmp_path):
    with pytest.raises(InputError, match=r"--kind tsv on the command line, `kind: tsv`"):
        read_any(_write(tmp_path, "a.txt", TSV), kind="csv")
    ragged = "instruction\tinput\toutput\na\tb\tc,d,e\n"  # "Expected 1 columns, got 3"
    with pytest.raises(InputError, match=r"read it as TSV \(--kind tsv"):
        read_any(_write(tmp_path, "b.csv", ragged))


def test_unknown_extension_names_the_option(tmp_path):
    with pytest.raises(InputError, match=r"--kind NAME on the command line.*\btsv\b"):
        read_any(_write(tmp_path, "a.txt", TSV))


def test_cli_kind_choices_come_from_the_registry(tmp_path):
    assert "tsv" in CONTAINERS and "tsv" in file_kinds() and "build" in file_kinds()
    src = _write(tmp_path, "a.txt", TSV)
    runner = CliRunner()
    ok = runner.invoke(
        cli, ["audit", str(src), "-o", str(tmp_path / "o"), "--kind", "tsv", "--quiet"]
    )
    assert ok.exit_code == 0, ok.output
    typo = runner.invoke(cli, ["audit", str(src), "-o", str(tmp_path / "p"), "--kind", "tvs"])
    assert typo.exit_code == 2 and "did you mean 'tsv'?" in typo.output


def _recipe(tmp_path, source):
    return {
        "version": "1.0.0",
        "name": "t",
        "sources": [{"name": "s", **source}],
    }


def test_recipe_kind_tsv_and_csv_delimiter_read(tmp_path):
    _write(tmp_path, "a.tsv", TSV)
    _write(tmp_path, "b.csv", 'instruction;input;output\n"Say ""hi""; twice";;hello\nAdd;x;2\n')
    for source, first in [
        ({"kind": "tsv", "path": "a.tsv"}, 'Say "hi" twice'),
        ({"kind": "csv", "path": "b.csv", "delimiter": ";"}, 'Say "hi"; twice'),
    ]:
        spec = recipe_from_dict(_recipe(tmp_path, source), base_dir=tmp_path).recipe.sources[0]
        table = read_rows(spec, tmp_path / source["path"]).table
        rows = table.column("instruction").to_pylist()
        assert rows[0] == first and rows[1].startswith("Add"), rows


def test_recipe_delimiter_is_checked_and_absent_keeps_the_fingerprint(tmp_path):
    _write(tmp_path, "a.tsv", TSV)
    _write(tmp_path, "a.csv", "instruction,input,output\nq,,a\n")
    with pytest.raises(RecipeError, match=r"delimiter: only allowed for kind 'csv'"):
        recipe_from_dict(
            _recipe(tmp_path, {"kind": "tsv", "path": "a.tsv", "delimiter": ","}), tmp_path
        )
    with pytest.raises(RecipeError, match=r"delimiter: must be one character"):
        recipe_from_dict(
            _recipe(tmp_path, {"kind": "csv", "path": "a.tsv", "delimiter": ";;"}), tmp_path
        )
    plain = recipe_from_dict(_recipe(tmp_path, {"kind": "csv", "path": "a.csv"}), tmp_path)
    comma = recipe_from_dict(
        _recipe(tmp_path, {"kind": "csv", "path": "a.csv", "delimiter": ","}), tmp_path
    )
    assert "delimiter" not in mbdata.recipe.resolved_mapping(plain.recipe)["sources"][0]
    assert fingerprint(plain.recipe) != fingerprint(comma.recipe)


def test_recipe_kind_typo_suggests_tsv(tmp_path):
    with pytest.raises(RecipeError, match=r"did you mean 'tsv'\?"):
        recipe_from_dict(_recipe(tmp_path, {"kind": "tsvv", "path": "a.tsv"}), tmp_path, False)
