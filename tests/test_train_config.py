"""The `train:` block: strict parsing, round trip, and that it stays importable without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mbdata.core.config import from_mapping, to_mapping
from mbdata.core.errors import RecipeError
from mbtrain.config import TrainConfig


def test_defaults_round_trip():
    cfg = from_mapping(TrainConfig, None, "train")
    data = to_mapping(cfg)
    assert from_mapping(TrainConfig, data, "train") == cfg
    assert data["stage2"]["normalize"] == "mean"
    assert data["stage1"]["mode"] == "full"
    assert data["model"]["tiny"]["hidden_size"] == 256


def test_nested_values_parse():
    cfg = from_mapping(
        TrainConfig,
        {
            "stage1": {"mode": "lora", "lora": {"r": 8, "target_modules": ["q_proj", "v_proj"]}},
            "stage2": {"lam": 2, "select": "last"},
            "eval": {"judge": {"kind": "http", "url": "http://localhost:8000/v1"}},
        },
        "train",
    )
    assert cfg.stage1.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.stage2.lam == 2.0 and cfg.stage2.select == "last"
    assert cfg.eval.judge.url == "http://localhost:8000/v1"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"stage2": {"lamda": 1}}, "train.stage2: unknown key 'lamda'"),
        ({"stage1": {"mode": "qlora"}}, "train.stage1.mode: 'qlora' is not allowed"),
        ({"model": {"tiny": {"hidden_size": 30, "heads": 4}}}, "train.model.tiny.heads"),
        ({"eval": {"judge": {"kind": "http"}}}, "train.eval.judge.url: required"),
        ({"model": {"device": "gpu"}}, "train.model.device"),
        ({"stage2": {"epochs": 0}}, "train.stage2.epochs: must be >= 1"),
        ({"stage1": {"lora": {"target_modules": []}}}, "train.stage1.lora.target_modules"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(".", r"\.")):
        from_mapping(TrainConfig, data, "train")


def test_config_import_does_not_load_torch():
    code = (
        "import sys, mbtrain, mbtrain.config; "
        "from mbdata.recipe import parse_recipe; "
        "parse_recipe({'name': 'x', 'version': '1.0.0', "
        "'sources': [{'name': 's', 'kind': 'synthetic', 'count': 5}], 'train': {}}); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_build_train_block_errors_name_the_manifest_and_missing_splits_are_errors(tmp_path):
    from test_train_helpers import make_build

    from mbdata.core.errors import InputError
    from mbtrain.engine.builds import open_training_build

    build = open_training_build(
        make_build(tmp_path / "ok", n_pretrain=2, n_train=6, n_recovery=1, n_eval=1)
    )
    assert build.has("train") and not build.has("nothing")
    assert len(build.rows("train")) == 6 and build.rows("train") is not build.rows("train")
    with pytest.raises(InputError, match="build has no split 'nothing'"):
        build.table("nothing")
    bad = open_training_build(
        make_build(
            tmp_path / "bad",
            n_pretrain=2,
            n_train=6,
            n_recovery=1,
            n_eval=1,
            train={"stage2": {"lamda": 1}},
        )
    )
    with pytest.raises(InputError, match=r"manifest\.json: train\.stage2: unknown key 'lamda'"):
        bad.train_config()
    (tmp_path / "ok" / "data" / "train-00000-of-00001.arrow").unlink()
    with pytest.raises(InputError, match="shard listed in the manifest is missing"):
        open_training_build(tmp_path / "ok").table("train")
    with pytest.raises(InputError, match="no manifest.json"):
        open_training_build(tmp_path)


def test_one_optimiser_settings_block_serves_every_stage_and_the_trainer():
    """Stage 1, stage 2 (and the baselines trained with it), tiny-base pretraining and the
    trainer's FitSettings share OptimSettings: a field added there reaches every stage."""
    import dataclasses

    from mbtrain.config import OPTIM_FIELDS, OptimSettings, Stage1Settings, Stage2Settings
    from mbtrain.engine.trainer import FitSettings

    assert issubclass(Stage1Settings, OptimSettings) and issubclass(Stage2Settings, OptimSettings)
    assert issubclass(FitSettings, OptimSettings)
    for cls in (Stage1Settings, Stage2Settings, FitSettings):
        assert set(OPTIM_FIELDS) <= {f.name for f in dataclasses.fields(cls)}
    # the recipe keys and their defaults are the ones recipes were written against
    s1, s2 = Stage1Settings(), Stage2Settings()
    assert (s1.epochs, s1.lr, s1.batch_size, s1.warmup_ratio) == (3, 1e-3, 8, 0.1)
    assert (s2.epochs, s2.lr, s2.lam, s2.normalize, s2.select) == (
        5,
        2e-4,
        1.0,
        "mean",
        "eval_loss",
    )
    cfg = from_mapping(
        TrainConfig, {"stage2": {"lr": 5e-5, "grad_accum": 2, "weight_decay": 0.1}}, "train"
    )
    fit = FitSettings.from_stage(cfg.stage2, seed=7, epochs=2)
    assert (fit.lr, fit.grad_accum, fit.weight_decay, fit.epochs, fit.seed) == (5e-5, 2, 0.1, 2, 7)
    # what is logged and keyed for resuming is the loop's settings, as before the move
    assert set(fit.record()) == {
        "epochs", "lr", "batch_size", "grad_accum", "warmup_ratio", "weight_decay",
        "max_grad_norm", "seed", "checkpoint_every", "select", "trainer_args",
    }  # fmt: skip
