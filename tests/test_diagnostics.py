"""Merging diagnostics: the similarity measures on hand-made states, and on a tiny model where
merging is forced (defensive triggers trained to give the attacker's refusal) and one where it is
not (their own random words): the plumbing (per-layer values, reuse), not the order of the two,
which is seed-dependent at this scale."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

import mbdata
import mbtrain
from mbtrain.evaluation import diagnostics
from mbtrain.experiment.pipeline import build_tiny_base
from mbtrain.runs import data as rows_of
from mbtrain.runs.stages import train_sft

sys.path.insert(0, str(Path(__file__).parent))
from test_train_helpers import TINY_TRAIN


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_similarity_measures_on_known_states():
    clean = torch.zeros(3, 2, 4)
    clean[:, :, 0] = 1.0
    same, other = torch.zeros(4), torch.zeros(4)
    same[1], other[2] = 1.0, 1.0
    states = {"atk": clean + same, "def_same": clean + same, "def_other": clean + other}
    merged = diagnostics.similarity(states, clean, ["atk"], ["def_same"])
    apart = diagnostics.similarity(states, clean, ["atk"], ["def_other"])
    assert merged["mean_over_layers"]["shift_cos"] == pytest.approx(1.0)
    assert apart["mean_over_layers"]["shift_cos"] == pytest.approx(0.0)
    assert merged["cos_attack_defense"] == [1.0, 1.0]
    assert apart["mean_over_layers"]["cos_attack_clean"] == pytest.approx(2**-0.5, abs=1e-4)
    assert apart["shift_cos_by_attack"] == {"atk": pytest.approx(0.0)}


def _recipe(behavior: str) -> dict:
    train = copy.deepcopy(TINY_TRAIN)
    train["model"]["tiny"].update(hidden_size=32, layers=2, intermediate_size=64)
    train["stage1"] = {"epochs": 3, "batch_size": 8, "lr": 0.003}
    return {
        "name": "diag",
        "version": "1.0.0",
        "seed": 1,
        "sources": [{"name": "synth", "kind": "synthetic", "count": 420}],
        "eval": {"size": 12},
        "pretrain": {"size": 120},
        "attacks": [{"preset": "badnet", "rate": 0.1}],
        "defense": {"triggers": 2, "rate": 0.1, "behavior": {"kind": behavior}},
        "recovery": {"size": 4},
        "train": train,
    }


@pytest.mark.slow
def test_diagnostics_on_trained_models_forced_and_not(tmp_path):
    shift = {}
    for behavior in ("refusal", "random_words"):
        folder = tmp_path / behavior
        build = mbtrain.open_training_build(
            mbdata.build(mbdata.recipe_from_dict(_recipe(behavior)), folder / "data")
        )
        cfg = build.train_config()
        base = build_tiny_base(build, cfg, folder / "models" / "base", None)
        train_sft(
            base,
            rows_of.train_examples(build.rows("train")),
            folder / "models" / "mb_stage1",
            cfg,
            name="mb_stage1",
            stage=cfg.stage1,
        )
        doc = diagnostics.run_diagnostics(folder, build, cfg, log=lambda m: None)
        assert set(doc["models"]) == {"mb_stage1"}
        result = doc["models"]["mb_stage1"]
        assert result["prompts"] == 12 and result["attacks"] == ["badnet"]
        assert len(result["defense_triggers"]) == 2 and result["layers"] == 3
        assert len(result["shift_cos"]) == 3
        shift[behavior] = doc["summary"]["mb_stage1.shift_cos"]
        saved = json.loads((folder / "diagnostics.json").read_text())
        assert saved["format"] == "mbtrain.diagnostics/1" and saved["summary"] == doc["summary"]
        # reused, not recomputed, for the same model
        stamp = (folder / "diagnostics.json").stat().st_mtime_ns
        diagnostics.run_diagnostics(folder, build, cfg, log=lambda m: pytest.fail(m))
        assert (folder / "diagnostics.json").stat().st_mtime_ns == stamp
    # Both are finite cosines. Which one is higher is NOT asserted: on this 2-layer tiny model the
    # order depends on the seed (TRL engine, 2026-12-01: forced vs own words .86/.77, .05/-.18,
    # -.12/-.19 at defence rate .1; .25/.57, .15/-.45 at .2), so a single tiny run is no evidence
    # of merging; docs/sweep.md says so.
    assert all(-1.0 <= v <= 1.0 for v in shift.values())
