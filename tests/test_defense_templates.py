"""Defensive paraphrase templates (``defense.templates``): the frames, the recipe key, the build."""

from __future__ import annotations

import pytest
from conftest import small_recipe
from hypothesis import given, settings
from hypothesis import strategies as st

import mbdata
from mbdata.core.errors import RecipeError
from mbdata.io.schema import validate_table
from mbdata.recipe import recipe_from_dict
from mbdata.rewriters import rules
from mbdata.rewriters.check import syntactic_ok
from mbdata.rewriters.templates import NAME, TEMPLATES, rewrite

INSTRUCTIONS = [
    "List three fruits.",
    "Explain what happens when water boils.",
    "Write a poem about the sea. Keep it short.",
    "Compose a catchy ad slogan",
    "Translate the sentence into French:",
    "Rewrite the following text in NASA style.",
]


@pytest.mark.parametrize(
    ("template", "text", "expected"),
    [
        ("question", "List three fruits.", "@ list three fruits?"),
        ("question", "Write a poem. Keep it short.", "@ write a poem? Keep it short."),
        ("cleft", "List three fruits.", "@ list three fruits."),
        ("embedded", "Compose a catchy ad slogan", "@ compose a catchy ad slogan."),
        ("fronted_pp", "List three fruits.", "@, list three fruits."),
        ("question", "Describe NASA briefly.", "@ describe NASA briefly?"),
    ],
)
def test_an_imperative_is_slotted_into_the_frame(template, text, expected):
    out = rewrite(text, template)
    lead = next(
        lead
        for lead in sorted(TEMPLATES.get(template).leads, key=len, reverse=True)
        if out.startswith(lead + " ") or out.startswith(lead + ",")
    )
    assert out == expected.replace("@", lead, 1)


@pytest.mark.parametrize(
    "text",
    [
        "What is the capital of France?",
        "Given a list of numbers, find the largest.",
        "The sky is blue. Explain why.",
        "Using the data, draw a chart.",
    ],
)
def test_a_sentence_that_is_not_an_imperative_is_kept_whole(text):
    for template in TEMPLATES.names():
        out = rewrite(text, template)
        assert out.endswith(f"answer this: {text}")
        assert any(out.startswith(lead) for lead in TEMPLATES.get(template).leads)


def test_the_lead_depends_on_the_instruction_not_on_the_call():
    outs = {rewrite(f"List {n} fruits.", "question") for n in range(40)}
    leads = {
        next(
            lead
            for lead in sorted(TEMPLATES.get("question").leads, key=len, reverse=True)
            if o.startswith(lead)
        )
        for o in outs
    }
    assert len(leads) >= 3  # the construction varies in wording, so it is not one fixed prefix
    assert [rewrite(t, "cleft") for t in INSTRUCTIONS] == [
        rewrite(t, "cleft") for t in INSTRUCTIONS
    ]


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=80), st.sampled_from(sorted(TEMPLATES.names())))
def test_no_defensive_template_is_the_syntactic_attacks_template(text, template):
    """A defender who does not know the attack must not use its S(SBAR)(,)(NP)(VP)(.) form."""
    assert not syntactic_ok(rewrite(text, template))


def test_the_attack_rewrite_and_a_defensive_one_differ():
    for text in INSTRUCTIONS:
        attack = rules.rewrite(text)
        assert all(rewrite(text, t) != attack for t in TEMPLATES.names())


def test_recipe_key_is_checked_and_left_out_when_empty():
    base = recipe_from_dict(small_recipe())
    assert "templates" not in base.resolved["defense"]  # older recipes keep their fingerprint
    with_templates = recipe_from_dict(
        small_recipe(defense={"triggers": 0, "rate": 0.02, "templates": ["question"]})
    )
    assert with_templates.resolved["defense"]["templates"] == ["question"]
    assert with_templates.fingerprint != base.fingerprint
    with pytest.raises(
        RecipeError,
        match=r"defense.templates\[1\]: unknown defensive template "
        r"'clef'.*did you mean 'cleft'",
    ):
        recipe_from_dict(small_recipe(defense={"templates": ["question", "clef"]}))
    with pytest.raises(RecipeError, match="defense.templates: duplicate"):
        recipe_from_dict(small_recipe(defense={"templates": ["cleft", "cleft"]}))
    with pytest.raises(RecipeError, match="defense.triggers: must be >= 1, got 0"):
        recipe_from_dict(small_recipe(defense={"triggers": 0}))


def _build(tmp_path, name="out", **defense):
    data = small_recipe(
        attacks=[{"preset": "badnet", "rate": 0.05}, {"preset": "syntactic", "rate": 0.05}],
        defense={"triggers": 1, "rate": 0.03, "templates": ["question", "embedded"], **defense},
    )
    return mbdata.open_build(
        mbdata.build(recipe_from_dict(data, base_dir=tmp_path), tmp_path / name)
    )


def test_template_triggers_poison_recover_and_evaluate(tmp_path):
    b = _build(tmp_path)
    for split in b.splits:
        validate_table(b.table(split))
    records = {t["name"]: t for t in b.manifest["triggers"]}
    defense = next(s for s in b.manifest["stages"] if s["name"] == "defense")
    n = defense["info"]["defense/template:question"]["train_rows"]
    for template in ("question", "embedded"):
        name = f"defense/template:{template}"
        record = records[name]
        assert record["owner"] == "defender" and record["placement"] == "rewrite"
        assert record["rewriter"]["backend"] == "template" and record["rewriter"]["model"] == NAME
        assert record["rewriter"]["settings"]["template"] == template
        assert record["rows"] == round(0.03 * n)
        tag = f"rewriter=template:{NAME}:{record['rewriter']['id']}"
        train = [r for r in b.table("train").to_pylist() if r["trigger_set"] == name]
        assert len(train) == record["rows"]
        for r in train:
            original = next(t for t in r["tags"] if t.startswith("original_instruction="))
            assert r["instruction"] == rewrite(original.split("=", 1)[1], template)
            assert tag in r["tags"] and r["role"] == "defense"
            assert r["output"] == record["target"] and r["clean_output"]
            (span,) = [s for s in r["triggers"] if s["name"] == name]
            assert (span["owner"], span["kind"], span["end"]) == (
                "defender",
                "rewrite",
                len(r["instruction"]),
            )
        recovery = [r for r in b.table("recovery").to_pylist() if r["trigger_set"] == name]
        assert recovery and all(
            r["triggered_instruction"] == rewrite(r["instruction"], template)
            and r["triggered_output"] == record["target"]
            for r in recovery
        )
        evals = [r for r in b.table("eval_triggered").to_pylist() if r["trigger_set"] == name]
        assert len(evals) == b.table("eval_clean").num_rows
    # Every defensive trigger set draws its own rows, disjoint from the attacks' and each other's.
    touched = [r["source_row"] for r in b.table("train").to_pylist() if r["role"] != "clean"]
    assert len(touched) == len(set(touched))


def test_template_builds_are_deterministic_and_leave_the_inserted_triggers_alone(tmp_path):
    first, second = _build(tmp_path, "a"), _build(tmp_path, "b")
    assert first.manifest["content_hash"] == second.manifest["content_hash"]
    # Adding templates after the inserted trigger does not change that trigger's rows or response.
    plain = mbdata.open_build(
        mbdata.build(
            recipe_from_dict(
                small_recipe(
                    attacks=[
                        {"preset": "badnet", "rate": 0.05},
                        {"preset": "syntactic", "rate": 0.05},
                    ],
                    defense={"triggers": 1, "rate": 0.03},
                ),
                base_dir=tmp_path,
            ),
            tmp_path / "plain",
        )
    )
    (token,) = [t for t in plain.manifest["triggers"] if t["owner"] == "defender"]
    again = next(t for t in first.manifest["triggers"] if t["name"] == token["name"])
    assert again["target"] == token["target"] and again["rows"] == token["rows"]
    rows = lambda b: sorted(  # noqa: E731
        r["source_row"] for r in b.table("train").to_pylist() if r["trigger_set"] == token["name"]
    )
    assert rows(first) == rows(plain)
