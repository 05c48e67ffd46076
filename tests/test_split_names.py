"""Split names live in one place (issue 28): ``mbdata.io.schema.SPLITS`` (pipeline order) and
``TRAINING_SPLITS``. Three modules had their own tuple, one in another order; this fails if a
literal list of split names appears again anywhere in mbdata or mbtrain."""

from __future__ import annotations

import ast
from pathlib import Path

from mbdata.io import schema, shards
from mbdata.stages import splits

ROOT = Path(__file__).resolve().parents[1]


def test_one_authority_in_pipeline_order():
    assert schema.SPLITS == (
        "pretrain",
        "train",
        "recovery",
        "recovery_eval",
        "eval_clean",
        "eval_triggered",
    )
    assert schema.TRAINING_SPLITS == ("pretrain", "train", "recovery", "recovery_eval")
    assert splits.TRAINING_SPLITS is schema.TRAINING_SPLITS
    assert shards.ordered_splits(["zz", "eval_clean", "train", "pretrain"]) == [
        "pretrain",
        "train",
        "eval_clean",
        "zz",
    ]


def test_no_module_spells_the_split_list_again():
    names = set(schema.SPLITS)
    copies = []
    for path in sorted([*(ROOT / "mbdata").rglob("*.py"), *(ROOT / "mbtrain").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                values = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                if len(values & names) >= 3:
                    copies.append(str(path.relative_to(ROOT)))
    assert copies == ["mbdata/io/schema.py"], copies  # SPLITS itself, once
