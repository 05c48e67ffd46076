"""mbtrain.runs.registry: the one list of runs. A run registered in a fixture is trained, evaluated (through
its transform), reported, swept and offered by `mb train stage2 --method`, with no other edit."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from cli.main import main
from mbdata.core.config import from_mapping
from mbtrain import api
from mbtrain.config import TrainConfig
from mbtrain.experiment import sweep
from mbtrain.runs.data import clean_examples
from mbtrain.runs.registry import BASE, RUNS, Run, sft_on_recovery

sys.path.insert(0, str(Path(__file__).parent))
from test_train_e2e import RECIPE


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def first_half(rows: Any) -> list:
    pairs = clean_examples(rows)
    return pairs[: max(1, len(pairs) // 2)]


class DropFirstWord:
    """A toy inference-time defence: the first word of every instruction is removed."""

    def __init__(self, cfg: Any, base: Any, runtime: Any):
        self.base = base

    def apply(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for r in rows:
            words = r["instruction"].split()
            out.append({**r, "instruction": " ".join(words[1:]), "removed": words[:1]})
        return out

    def record(self) -> dict[str, Any]:
        return {"drop": "first word"}


@pytest.fixture
def extra_runs():
    runs = [
        Run(
            "clean_half",
            "Attacked + Clean-FFT on half",
            parent="attacked",
            split="recovery",
            train=sft_on_recovery(first_half),
            share="baseline",
            alias="clean-half",
        ),
        Run(
            "drop_first",
            "Attacked, first word dropped",
            parent="attacked",
            split="recovery",
            train=None,
            share="baseline",
            transform=DropFirstWord,
        ),
    ]
    for run in runs:
        RUNS.register_run(run)
    yield runs
    for run in runs:
        RUNS.unregister(run.name)


def test_runs_are_listed_once_and_in_report_order():
    names = list(RUNS)
    assert names[0] == "attacked" and {"mb_stage1", "mb_defense", "clean_fft"} <= set(names)
    for run in RUNS.in_order():  # a parent is registered before its children
        assert run.parent == BASE or names.index(run.parent) < names.index(run.name)
    assert api.stage2_methods()["mb"] == "mb_defense"
    assert api.stage1_rows() == {"attacked": "attacked", "all": "mb_stage1"}


def test_a_switched_off_run_is_left_out_with_its_children():
    cfg = from_mapping(TrainConfig, {"baselines": {"clean_fft": False}}, "train")
    names = [r.name for r in RUNS.enabled(cfg)]
    assert "clean_fft" not in names and "mb_defense" in names
    child = Run(
        "after_fft", "x", parent="clean_fft", split="recovery", train=None, share="baseline"
    )
    RUNS.register_run(child)
    try:
        assert "after_fft" not in [r.name for r in RUNS.enabled(cfg)]
        on = from_mapping(TrainConfig, {}, "train")
        assert "after_fft" in [r.name for r in RUNS.enabled(on)]
    finally:
        RUNS.unregister("after_fft")


def test_a_run_must_name_a_registered_parent_and_a_real_switch():
    with pytest.raises(ValueError, match="parent 'nope' is not registered"):
        RUNS.register_run(Run("x", "x", parent="nope", split="train", train=None, share="stage1"))
    with pytest.raises(ValueError, match="its parent 'onion' trains no model"):
        RUNS.register_run(Run("x", "x", "onion", "recovery", train=None, share="baseline"))
    with pytest.raises(ValueError, match="switch 'nope' is not a train.baselines flag"):
        RUNS.register_run(
            Run("x", "x", "attacked", "recovery", train=None, share="baseline", switch="nope")
        )
    assert "x" not in RUNS


def test_the_cli_offers_a_registered_run(extra_runs, capsys):
    from cli.commands.train import train_stage2

    method = next(p for p in train_stage2.params if p.name == "method")
    assert "clean-half" in method.type.aliases()
    assert "drop_first" not in api.stage2_methods().values()  # trains nothing: no alias
    assert main(["train", "stage2", "--help"]) == 0
    assert "clean-half" in capsys.readouterr().out


@pytest.mark.slow
def test_a_registered_run_is_trained_evaluated_reported_and_swept(extra_runs, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE), encoding="utf-8")
    out = tmp_path / "sweep"

    def one_job(cfg: TrainConfig) -> TrainConfig:  # workers would not see the fixture's runs
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, jobs=1))

    doc = sweep.run_sweep(
        recipe,
        [],
        out,
        cfg_override=one_job,
        diagnostics=False,
        progress=False,
        log=lambda m: None,
    )
    point = out / doc["points"][0]["dir"]
    report = json.loads((point / "report.json").read_text())
    assert {"clean_half", "drop_first", "attacked", "mb_defense"} <= set(report["runs"])
    # trained from the attacked model on half the clean recovery pairs
    marker = json.loads((point / "models" / "clean_half" / "mbtrain_model.json").read_text())
    full = json.loads((point / "models" / "clean_fft" / "mbtrain_model.json").read_text())
    assert marker["stage"] == "clean_half" and marker["rows"] == max(1, full["rows"] // 2)
    assert not (point / "models" / "drop_first").exists()  # evaluates the attacked model
    metrics = json.loads((point / "eval" / "drop_first" / "metrics.json").read_text())
    assert metrics["transform"]["removed_clean"] == 1.0
    assert metrics["transform_settings"] == {"drop": "first word"}
    first = json.loads((point / "eval" / "drop_first" / "generations.jsonl").open().readline())
    assert first["removed"] == first["instruction"].split()[:1]
    assert first["shown_instruction"] == " ".join(first["instruction"].split()[1:])
    md = (point / "report.md").read_text()
    assert "Attacked + Clean-FFT on half" in md and "Attacked, first word dropped" in md
    assert report["timings"]["clean_half"] > 0 and "eval_drop_first" in report["timings"]
    swept = doc["points"][0]["metrics"]
    assert "clean_half.asr_mean" in swept and "drop_first.cacc" in swept
    assert "ASR clean_half" in (out / "sweep.md").read_text()


def test_an_installed_package_registers_runs_through_an_entry_point(monkeypatch):
    from mbdata.core.errors import RecipeError
    from mbtrain.runs import registry as runs

    def register(registry):
        registry.register_run(
            Run("plugged", "Plugged in", "attacked", "recovery", train=None, share="baseline")
        )

    class Point:
        name, value = "mine", "my_package.defence:register"

        def load(self):
            return register

    monkeypatch.setattr(
        "importlib.metadata.entry_points",
        lambda group: [Point()] if group == runs.RUN_PLUGINS else [],
    )
    try:
        assert runs.load_plugins() == ["mine"] and "plugged" in RUNS
    finally:
        RUNS.unregister("plugged")

    class Broken(Point):
        def load(self):
            raise ImportError("No module named 'my_package'")

    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [Broken()])
    with pytest.raises(RecipeError, match=r"mbdefense.runs entry point mine .*No module named"):
        runs.load_plugins()
