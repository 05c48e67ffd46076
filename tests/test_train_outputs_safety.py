"""mb train / mb eval refuse an output that is, holds or lies inside the build or the input model
(issue 14: `--overwrite` would otherwise destroy the input)."""

from __future__ import annotations

from conftest import small_recipe

import mbdata
from cli.main import main
from mbdata.recipe import recipe_from_dict


def _build(tmp_path):
    return mbdata.build(recipe_from_dict(small_recipe()), tmp_path / "bld")


def test_stage1_into_the_build_is_refused(tmp_path, capsys):
    build = _build(tmp_path)
    code = main(["train", "stage1", str(build), "-o", str(build), "--overwrite", "--quiet"])
    assert code == 2
    assert "the output is the input" in capsys.readouterr().err
    assert (build / "manifest.json").exists()
    code = main(["train", "stage1", str(build), "-o", str(build / "m"), "--quiet"])
    assert code == 2 and "inside the input" in capsys.readouterr().err


def test_stage2_over_its_own_model_and_eval_into_the_model_are_refused(tmp_path, capsys):
    build = _build(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    (model / "keep.txt").write_text("precious")
    argv = ["train", "stage2", str(build), "--model", str(model), "-o", str(model), "--overwrite"]
    assert main(argv) == 2
    assert "the output is the input" in capsys.readouterr().err
    assert main(["eval", str(model), str(build), "-o", str(model / "ev")]) == 2
    assert "inside the input" in capsys.readouterr().err
    assert (model / "keep.txt").read_text() == "precious"
