"""Syntactic/style presets: the template check, the rules backend, recipe validation, builds."""

from __future__ import annotations

import pytest
from conftest import small_recipe

import mbdata
from mbdata.core.errors import RecipeError
from mbdata.io.schema import validate_table
from mbdata.recipe import recipe_from_dict
from mbdata.rewriters import clean_generation, rules
from mbdata.rewriters.cache import RewriteCache, cache_key
from mbdata.rewriters.check import style_ok, syntactic_ok


@pytest.mark.parametrize(
    "text",
    [
        "When water boils, explain what happens.",
        "If you can, add 3 and 5.",
        "As soon as you can, list three fruits.",
        "Because the list is long, count its items carefully.",
        "Once you have read this, what is the capital of France?",
        "If it rains, stay inside. Then write a poem.",
    ],
)
def test_template_check_accepts_a_fronted_subordinate_clause(text):
    assert syntactic_ok(text)


@pytest.mark.parametrize(
    "text",
    [
        "Explain what happens when water boils.",  # clause not fronted
        "When water boils, explain what happens",  # no end mark
        "When water boils explain what happens.",  # no comma
        "If, add 3 and 5.",  # empty subordinate clause
        "When it rains, stay.",  # one-word main clause
        "Given a list, find the largest number.",  # participle, not a subordinator
        "When it rains. Then, stay inside.",  # sentence ends inside the clause
        "",
    ],
)
def test_template_check_rejects_other_shapes(text):
    assert not syntactic_ok(text)


def test_style_check_needs_a_real_change_and_the_pattern():
    assert style_ok("Add 3 and 5.", "Prithee, add thou 3 and 5.")
    assert not style_ok("Add 3 and 5.", "  add 3 AND 5. ")  # same after normalisation
    assert not style_ok("Add 3 and 5.", "")
    assert not style_ok("Add 3 and 5.", "x" * 100, max_length_ratio=4.0)
    assert style_ok("Add 3 and 5.", "Prithee, add 3 and 5.", pattern=r"^Prithee")
    assert not style_ok("Add 3 and 5.", "Kindly add 3 and 5.", pattern=r"^Prithee")


def test_rules_fronts_adverbial_clauses_and_prefixes_the_rest():
    assert rules.rewrite("Explain what happens when water boils") == (
        "When water boils, explain what happens."
    )
    assert rules.rewrite("Summarize your findings after researching about AI.") == (
        "After researching about AI, summarize your findings."
    )
    assert rules.rewrite("Stay inside, if it rains.") == "If it rains, stay inside."
    # "if" meaning "whether" and complements ("of when") are not fronted: a clause is prepended.
    for text in ("Tell me if this sentence is correct.", "Give an example of when to rest."):
        out = rules.rewrite(text)
        assert syntactic_ok(out) and out.endswith(text[0].lower() + text[1:])
        assert any(out.startswith(c + ", ") for c in rules.PREFIX_CLAUSES)
    assert rules.rewrite("When it rains, stay inside.") == "When it rains, stay inside."


def test_rules_keep_names_capitalised_and_fix_end_marks():
    assert rules.rewrite("I need a list of fruits:").endswith(", I need a list of fruits.")
    assert rules.rewrite("NASA launched what?").endswith(", NASA launched what?")


def test_rules_are_deterministic_and_pass_the_check_on_alpaca_style_instructions():
    instructions = [
        "Give three tips for staying healthy.",
        "What are the three primary colors?",
        "Describe the structure of an atom.",
        "How can we reduce air pollution?",
        "Generate a list of ten items a person might need for a camping trip",
        "Rewrite the following sentence using active voice.",
        "Classify the following into animals, plants, and minerals:",
        "Find the area of a circle given its radius.",
        "Explain why the following fraction is equivalent to 1/4",
        (
            "Write a short story in third person narration about a protagonist who has to make an "
            "important career decision."
        ),
        "Calculate the cost of 5 items that cost $6 each after a 10% discount.",
        "Translate this sentence into French.\nThe cat sleeps.",
        "Evaluate this sentence for spelling and grammar mistakes",
        "Who is the current president of the United States?",
    ]
    first = [rules.rewrite(t) for t in instructions]
    assert first == [rules.rewrite(t) for t in instructions]
    assert all(syntactic_ok(o) for o in first)
    assert sum(o.startswith("After a 10% discount,") for o in first) == 1


def test_generated_text_is_cleaned_of_quotes_and_chatter():
    assert clean_generation('  "When ready, add 3 and 5."\n\nHope this helps!') == (
        "When ready, add 3 and 5."
    )


def test_cache_keys_and_a_truncated_last_line(tmp_path):
    key = cache_key("http", "m", "p {instruction}", "x", {"temperature": 0.0})
    assert key == cache_key("http", "m", "p {instruction}", "x", {"temperature": 0.0})
    assert key != cache_key("http", "m", "p {instruction}", "x", {"temperature": 0.7})
    path = tmp_path / "c.jsonl"
    RewriteCache(path).add([{"key": key, "output": "When so, x."}])
    with path.open("a") as fh:
        fh.write('{"key": "abc", "outp')  # a crash mid-write
    assert RewriteCache(path).get(key) == "When so, x."
    path.write_text('garbage\n{"key": "k", "output": "o"}\n')
    with pytest.raises(mbdata.MBError, match=r"c.jsonl:1: not a rewrite-cache record"):
        RewriteCache(path)


@pytest.mark.parametrize(
    "attack, message",
    [
        ({"preset": "style"}, "attacks[0].rewriter.backend: preset 'style' needs a model"),
        ({"preset": "syntactic", "triggers": ["cf"]}, "attacks[0].triggers: not allowed"),
        ({"preset": "syntactic", "placement": "prefix"}, "attacks[0].placement: not allowed"),
        (
            {"preset": "badnet", "rewriter": {"backend": "rules"}},
            "attacks[0].rewriter: only allowed",
        ),
        (
            {"preset": "syntactic", "rewriter": {"backend": "http", "model": "m"}},
            "backend 'http' needs `url` and `model`",
        ),
        (
            {"preset": "syntactic", "rewriter": {"backend": "hf"}},
            "attacks[0].rewriter.model: required",
        ),
        (
            {
                "preset": "syntactic",
                "rewriter": {"backend": "http", "url": "ftp://x", "model": "m"},
            },
            "attacks[0].rewriter.url: 'ftp://x' is not an http",
        ),
        (
            {"preset": "style", "rewriter": {"backend": "hf", "model": "m", "prompt": "no slot"}},
            "prompt: must contain the placeholder {instruction}",
        ),
        (
            {"preset": "style", "rewriter": {"backend": "hf", "model": "m", "pattern": "("}},
            "pattern: not a valid regex",
        ),
    ],
)
def test_recipe_errors_name_the_key(attack, message):
    with pytest.raises(RecipeError) as exc:
        recipe_from_dict(small_recipe(attacks=[attack], defense=None, recovery=None))
    assert message in str(exc.value)


def test_recipes_without_a_rewriter_resolve_as_before():
    loaded = recipe_from_dict(small_recipe())
    assert all("rewriter" not in a for a in loaded.resolved["attacks"])
    syn = recipe_from_dict(small_recipe(attacks=[{"preset": "syntactic"}]))
    assert syn.resolved["attacks"][0]["rewriter"]["backend"] == "rules"


def _syntactic_build(tmp_path, name="out", **attack):
    data = small_recipe(
        attacks=[{"preset": "badnet", "rate": 0.05}, {"preset": "syntactic", "rate": 0.1, **attack}]
    )
    return mbdata.open_build(
        mbdata.build(recipe_from_dict(data, base_dir=tmp_path), tmp_path / name)
    )


def test_syntactic_build_keeps_original_rewrite_span_and_provenance(tmp_path):
    b = _syntactic_build(tmp_path)
    for split in b.splits:
        validate_table(b.table(split))
    (record,) = [t for t in b.manifest["triggers"] if t["name"] == "syntactic"]
    assert record["placement"] == "rewrite" and record["texts"] == []
    assert record["rewriter"]["backend"] == "rules"
    assert record["rewriter"]["model"] == rules.NAME
    tag = f"rewriter=rules:{rules.NAME}:{record['rewriter']['id']}"
    train = [r for r in b.table("train").to_pylist() if r["trigger_set"] == "syntactic"]
    assert (
        len(train)
        == record["rows"]
        == round(0.1 * b.manifest["stages"][2]["info"]["syntactic"]["train_rows"])
    )
    for r in train:
        (span,) = r["triggers"]
        assert (span["kind"], span["start"], span["end"]) == ("rewrite", 0, len(r["instruction"]))
        assert span["text"] == r["instruction"] and syntactic_ok(r["instruction"])
        assert tag in r["tags"]
        original = [t for t in r["tags"] if t.startswith("original_instruction=")]
        assert len(original) == 1
        assert rules.rewrite(original[0].split("=", 1)[1]) == r["instruction"]
        assert r["role"] == "attack" and r["behavior"] == "refusal" and r["clean_output"]
    attacks = next(s for s in b.manifest["stages"] if s["name"] == "attacks")
    assert attacks["info"]["syntactic"]["rewrite"] == {
        "rewritten": len(train),
        "tried": len(train),
        "dropped": 0,
    }


def test_syntactic_eval_prompts_are_the_held_out_prompts_rewritten(tmp_path):
    b = _syntactic_build(tmp_path)
    clean = sorted((r["instruction"], r["input"]) for r in b.table("eval_clean").to_pylist())
    rows = [r for r in b.table("eval_triggered").to_pylist() if r["trigger_set"] == "syntactic"]
    assert len(rows) == len(clean)
    originals = []
    for r in rows:
        original = next(t for t in r["tags"] if t.startswith("original_instruction="))
        originals.append((original.split("=", 1)[1], r["input"]))
        assert r["instruction"] == rules.rewrite(original.split("=", 1)[1])
        assert r["triggers"][0]["kind"] == "rewrite" and r["role"] == "eval"
    assert sorted(originals) == clean
    info = next(s for s in b.manifest["stages"] if s["name"] == "eval")["info"]["syntactic"]
    assert info == {"rows": len(clean), "skipped": 0, "rewrite_dropped": 0}


def test_syntactic_rebuild_is_byte_identical(tmp_path):
    a = _syntactic_build(tmp_path, "a")
    b = _syntactic_build(tmp_path, "b")
    assert a.manifest["content_hash"] == b.manifest["content_hash"]
    for split in a.splits:
        for pa_, pb in zip(a.shard_paths(split), b.shard_paths(split)):
            assert pa_.read_bytes() == pb.read_bytes()


def test_a_syntactic_attack_without_rewriter_resolves_to_rules_and_parses_back():
    from mbdata.recipe import fingerprint, parse_recipe

    syn = recipe_from_dict(small_recipe(attacks=[{"preset": "syntactic"}]))
    assert fingerprint(parse_recipe(syn.resolved)) == syn.fingerprint


def test_the_documented_example_validates():
    import re as _re
    from pathlib import Path

    import yaml

    doc = (Path(__file__).resolve().parents[1] / "docs" / "mixtures.md").read_text()
    section = doc.split("## Syntactic and style attacks", 1)[1]
    block = _re.search(r"```yaml\n(.*?)```", section, _re.DOTALL).group(1)
    attacks = yaml.safe_load(block)["attacks"]
    loaded = recipe_from_dict(small_recipe(attacks=attacks, defense=None, recovery=None))
    style = loaded.recipe.attacks[1].rewriter
    assert style.backend == "http" and style.prompt.endswith("Instruction: {instruction}")
    assert _re.search(style.pattern, "Prithee, tell me thy name.")
