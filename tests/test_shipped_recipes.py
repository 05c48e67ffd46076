"""Every shipped recipe validates and builds (data only; training is tested in test_train*)."""

from __future__ import annotations

import pytest

import mbdata
import recipes


@pytest.mark.parametrize("name", recipes.names())
def test_shipped_recipe_builds(name, tmp_path):
    loaded = mbdata.load_recipe(recipes.path(name))
    out = mbdata.build(loaded, tmp_path / "out")
    b = mbdata.open_build(out)
    assert b.manifest["fingerprint"] == loaded.fingerprint
    assert mbdata.verify_build(out) == []
    assert b.manifest["splits"]["train"]["rows"] > 0 and "eval_clean" in b.splits


def test_core_recipes_are_shipped():
    assert {"alpaca-json.yaml", "backdoorllm.yaml", "defend-my-corpus.yaml"} <= set(recipes.names())
