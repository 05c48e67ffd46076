"""mbtrain.api: one function per training command; the CLI only parses and calls it."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from mbdata.core.config import from_mapping
from mbdata.core.errors import MBError
from mbtrain import api
from mbtrain.config import TrainConfig
from mbtrain.experiment.overrides import with_overrides
from mbtrain.experiment.pipeline import train_run
from mbtrain.runs.registry import RUNS

ROOT = Path(__file__).resolve().parents[1]


def test_cli_choices_name_exactly_the_runs_the_api_trains():
    from cli.commands.train import train_stage1, train_stage2

    rows = next(p for p in train_stage1.params if p.name == "rows")
    method = next(p for p in train_stage2.params if p.name == "method")
    assert list(rows.type.aliases()) == list(api.stage1_rows())
    assert list(method.type.aliases()) == list(api.stage2_methods())
    trainable = [r for r in RUNS.in_order() if r.train is not None]
    assert set(api.stage1_rows().values()) == {r.name for r in trainable if r.split == "train"}
    assert set(api.stage2_methods().values()) == {
        r.name for r in trainable if r.split == "recovery"
    }


def test_an_unknown_run_is_refused_before_any_training():
    cfg = from_mapping(TrainConfig, {}, "train")
    with pytest.raises(ValueError, match="unknown run 'mb_stage3'"):
        train_run("mb_stage3", "parent", [], "out", cfg, runtime=None)  # type: ignore[arg-type]


def test_the_tiny_model_must_be_built_before_stage1():
    cfg = from_mapping(TrainConfig, {"model": {"name": "tiny"}}, "train")
    with pytest.raises(MBError, match="mb train base BUILD -o DIR"):
        api.start_model(cfg, None)
    assert api.start_model(cfg, "models/base") == "models/base"
    named = from_mapping(TrainConfig, {"model": {"name": "some/model"}}, "train")
    assert api.start_model(named, None) is named.model


def test_overrides_replace_only_what_is_given():
    cfg = from_mapping(TrainConfig, {}, "train")
    new = with_overrides(cfg, pretrain_epochs=7, lam=0.25, stage2_epochs=3)
    assert new.model.tiny.pretrain_epochs == 7
    assert (new.stage2.lam, new.stage2.epochs) == (0.25, 3)
    assert new.stage1 == cfg.stage1 and with_overrides(cfg) == cfg


def _commands(module: str) -> list[ast.FunctionDef]:
    tree = ast.parse((ROOT / "cli" / "commands" / f"{module}.py").read_text(encoding="utf-8"))
    return [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any(
            isinstance(d, ast.Call)
            and isinstance(d.func, ast.Attribute)
            and d.func.attr == "command"
            for d in node.decorator_list
        )
    ]


@pytest.mark.parametrize("module", ["train", "sweep"])
def test_each_training_command_calls_the_api_and_nothing_of_mbtrain_besides(module):
    """Thin commands: every mbtrain call in a command body goes through mbtrain.api."""
    commands = _commands(module)
    assert commands
    for fn in commands:
        imports = [
            n
            for n in ast.walk(fn)
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("mbtrain")
        ]
        assert imports, fn.name
        for node in imports:
            assert node.module == "mbtrain" and [a.name for a in node.names] == ["api"], (
                f"{fn.name} imports {node.module}: {[a.name for a in node.names]}"
            )
        calls = {
            n.func.attr
            for n in ast.walk(fn)
            if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)
            and isinstance(n.func.value, ast.Name)
            and n.func.value.id == "api"
        }
        assert 1 <= len(calls) <= 2, (fn.name, calls)  # sweep: the plan or the run


def test_api_functions_take_the_commands_options_as_keywords():
    for name in ("train_base", "train_stage1", "train_stage2", "evaluate_model", "run", "sweep"):
        params = inspect.signature(getattr(api, name)).parameters
        assert {"device", "threads", "progress"} <= set(params), name
