"""End to end on a very small recipe: `mb run` (build -> five runs -> eval -> report), its resume,
and the `mb train` / `mb eval` commands, with a model of a few thousand parameters."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cli.main import main
from mbtrain.engine.models import read_marker
from mbtrain.runs.registry import RUNS

sys.path.insert(0, str(Path(__file__).parent))
from test_train_helpers import TINY_TRAIN, make_build  # noqa: E402

RECIPE = {
    "name": "e2e",
    "version": "1.0.0",
    "seed": 1,
    "sources": [{"name": "synth", "kind": "synthetic", "count": 260}],
    "eval": {"size": 6},
    "pretrain": {"size": 60},
    "attacks": [{"preset": "badnet", "rate": 0.1}, {"preset": "vpi", "rate": 0.1}],
    "defense": {"triggers": 2, "rate": 0.05},
    "recovery": {"size": 10},
    "train": TINY_TRAIN,
}


@pytest.fixture(autouse=True)
def restore_threads():
    """The tiny recipe asks for one torch thread; give other tests their setting back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_mb_run_end_to_end_and_resume(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE), encoding="utf-8")
    out = tmp_path / "run"
    assert main(["run", str(recipe), "-o", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Table 1" in printed and "MB-Defense (stage 1 + 2)" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["format"] == "mbtrain.report/1"
    assert set(report["runs"]) == set(RUNS)
    assert report["attacks"] == ["badnet", "vpi"] and len(report["defense_triggers"]) == 2
    for metrics in report["runs"].values():
        assert set(metrics["asr"]) == {"badnet", "vpi"}
        assert 0.0 <= metrics["cacc"] <= 1.0 and 0.0 <= metrics["aacc"] <= 1.0
        assert set(metrics["defense_trigger_rate"]) == set(report["defense_triggers"])
    assert report["fingerprint"] and report["seeds"] == {"recipe": 1, "train": 0}
    assert report["stage2"]["epochs"] and report["timings"]["total"] > 0
    assert (out / "report.png").stat().st_size > 0 and (out / "report.md").is_file()
    assert (out / "eval" / "mb_defense" / "generations.jsonl").is_file()
    # the paper's baselines: ONION filtered the attacked model's prompts, Fine-mixing mixed
    onion = report["filtered"]["onion"]
    assert onion["settings"]["threshold"] == 0.0 and onion["removed_triggered"] is not None
    assert report["mixing"]["fine_mixing"]["keep"] == 0.5
    assert "eval_onion" in report["timings"] and report["timings"]["fine_mixing"] > 0
    assert "Attacked + ONION" in printed and "Attacked + Fine-mixing" in printed
    log = (out / "models" / "mb_defense" / "train_log.jsonl").read_text().splitlines()
    epochs = [json.loads(x) for x in log if '"event": "epoch"' in x]
    assert all({"ce", "r", "margin"} <= set(e["train"]) and "loss" in e["eval"] for e in epochs)
    # attacked: clean + attack rows only; stage 1: every train row
    rows = {name: read_marker(out / "models" / name)["rows"] for name in ("attacked", "mb_stage1")}
    assert rows["attacked"] < rows["mb_stage1"]
    # issue 22: the report and every model folder name the numeric environment
    env = report["environment"]
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["device"] == "cpu" and env["distributed"]["type"] == "none"
    assert set(env["models"]) == set(RUNS)
    for folder in (out / "models").iterdir():
        marker_env = read_marker(folder)["environment"]
        assert marker_env["cpu_capability"] == env["cpu_capability"], folder.name
        assert marker_env["versions"]["torch"] == torch.__version__
    assert "Numeric environment: cpu " in (out / "report.md").read_text()

    markers = {p: p.read_bytes() for p in (out / "models").glob("*/mbtrain_model.json")}
    assert main(["run", str(recipe), "-o", str(out), "--quiet"]) == 0  # resumes: nothing retrained
    assert {p: p.read_bytes() for p in markers} == markers
    # other evaluation settings: models reused, evaluation redone
    assert main(["run", str(recipe), "-o", str(out), "--quiet", "--limit", "2"]) == 0
    assert json.loads((out / "report.json").read_text())["eval_counts"]["eval_clean"] == 2
    assert {p: p.read_bytes() for p in markers} == markers

    from mbdata.core.atomic import written_by_us

    assert written_by_us(out) and (out / "models" / "attacked" / ".mbdefense").is_file()
    assert not list(out.glob(".*partial*")) and not list((out / "models").glob(".*"))
    changed = {**RECIPE, "seed": 2}
    recipe.write_text(yaml.safe_dump(changed), encoding="utf-8")
    assert main(["run", str(recipe), "-o", str(out), "--quiet"]) == 2
    assert "different build" in capsys.readouterr().err


@pytest.mark.slow
def test_train_and_eval_commands(tmp_path, capsys):
    build = make_build(tmp_path / "build", train=TINY_TRAIN)
    base, s1, s2 = tmp_path / "base", tmp_path / "s1", tmp_path / "s2"
    assert main(["train", "stage1", str(build), "-o", str(s1), "--quiet"]) == 2
    assert "mb train base" in capsys.readouterr().err
    assert main(["train", "base", str(build), "-o", str(base), "--quiet"]) == 0
    assert (
        main(
            [
                "train",
                "stage1",
                str(build),
                "-o",
                str(s1),
                "--base",
                str(base),
                "--epochs",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    assert read_marker(s1)["fit"]["epochs"] == 2
    assert (
        main(
            [
                "train",
                "stage2",
                str(build),
                "--model",
                str(s1),
                "-o",
                str(s2),
                "--lam",
                "0.5",
                "--quiet",
            ]
        )
        == 0
    )
    assert read_marker(s2)["lam"] == 0.5 and read_marker(s2)["parent"] == {"path": "../s1"}
    assert (
        main(
            [
                "train",
                "stage2",
                str(build),
                "--model",
                str(s1),
                "-o",
                str(tmp_path / "cf"),
                "--method",
                "clean-fft",
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                str(s2),
                str(build),
                "--json",
                "--limit",
                "3",
                "--quiet",
                "-o",
                str(tmp_path / "ev"),
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["counts"] == {"eval_clean": 3, "badnet": 3, "defense/mn": 3}
    assert (tmp_path / "ev" / "metrics.json").is_file()
    assert main(["eval", str(tmp_path / "nothing"), str(build)]) == 2
    assert "not a model folder" in capsys.readouterr().err


def _foreign_folder(path: Path) -> Path:
    path.mkdir()
    (path / "thesis.tex").write_text("keep me", encoding="utf-8")
    return path


@pytest.mark.parametrize("overwrite", [True, False])
def test_run_never_writes_into_or_deletes_a_folder_mbdefense_did_not_write(
    tmp_path, capsys, overwrite
):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE), encoding="utf-8")
    mine = _foreign_folder(tmp_path / "mine")
    args = ["run", str(recipe), "-o", str(mine), "--quiet"] + (["--overwrite"] if overwrite else [])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mbdefense did not write" in err
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]


def test_train_overwrite_refuses_a_foreign_folder(tmp_path, capsys):
    build = make_build(
        tmp_path / "build", train=TINY_TRAIN, n_pretrain=2, n_train=6, n_recovery=1, n_eval=1
    )
    mine = _foreign_folder(tmp_path / "mine")
    assert (
        main(
            [
                "train",
                "stage1",
                str(build),
                "-o",
                str(mine),
                "--base",
                str(tmp_path / "b"),
                "--overwrite",
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mbdefense did not write" in err
    assert main(["train", "base", str(build), "-o", str(mine), "--overwrite", "--quiet"]) == 2
    assert "mbdefense did not write" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "CPU"])
def test_an_unknown_device_is_a_one_line_error_naming_the_allowed_ones(tmp_path, capsys, device):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE), encoding="utf-8")
    assert main(["run", str(recipe), "-o", str(tmp_path / "run"), "--device", device]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"error: --device: {device!r} is not a device; allowed: auto, cpu, mps, cuda "
        "or cuda:N\n"
    )
    assert not (tmp_path / "run").exists()


def test_resolve_device_checks_names_and_availability():
    from mbdata.core.errors import MBError
    from mbtrain.engine.models import resolve_device

    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(MBError, match="allowed: auto, cpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(MBError, match="no CUDA device"):
            resolve_device("cuda:0")
