"""Whole-corpus passes without whole-corpus copies (issue 28): the leak check and the defence's
corpus vocabulary run per batch, and tag updates touch only the tagged rows, with the same
verdicts, messages, statistics and tables as the whole-table versions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mbdata.core.errors import BuildError
from mbdata.io.schema import TRAINING_SPLITS, from_rows, make_row
from mbdata.pipeline import BuildContext, update_tags
from mbdata.stages.defense import corpus_vocabulary
from mbdata.stages.splits import LeakCheckStage, prompt_texts


def _whole_table_leak_check(table: pa.Table) -> tuple[str | None, dict]:
    """The leak check as it was before it ran per batch (filtered copies per split): the
    reference the per-batch one must agree with."""
    eval_rows = table.filter(pc.equal(table.column("split"), "eval_clean"))
    eval_texts = pc.unique(prompt_texts(eval_rows))
    checked = 0
    for split in TRAINING_SPLITS:
        rows = table.filter(pc.equal(table.column("split"), split))
        prefixes = ("", "triggered_") if split.startswith("recovery") else ("",)
        for prefix in prefixes:
            hits = pc.is_in(prompt_texts(rows, prefix), value_set=eval_texts)
            if rows.num_rows and pc.any(hits).as_py():
                row = rows.slice(pc.index(hits, True).as_py(), 1).to_pylist()[0]
                return f"{split} {row['source_row']}", {}
        checked += rows.num_rows
    return None, {"rows_checked": checked, "heldout_prompts": len(eval_texts)}


def _table(seed: int, leaks: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    splits = ["train", "pretrain", "recovery", "recovery_eval", "eval_triggered"]
    rows = [
        make_row(instruction=f"held {i}", output="o", source="s", source_row=i, split="eval_clean")
        for i in range(20)
    ]
    for i in range(20, 400):
        split = str(rng.choice(splits))
        extra = {}
        if split.startswith("recovery"):
            extra = {
                "triggered_instruction": f"x_d {i}",
                "triggered_input": "",
                "triggered_output": "y_d",
            }
        rows.append(
            make_row(
                instruction=f"q {i}", output="o", source="s", source_row=i, split=split, **extra
            )
        )
    for _ in range(leaks):  # a held-out prompt (differently spaced/cased) in x or in x_d
        i = int(rng.integers(20, 400))
        j = int(rng.integers(0, 20))
        field = (
            "triggered_instruction" if rows[i]["split"].startswith("recovery") else "instruction"
        )
        if rng.random() < 0.5:
            field = "instruction"
        fields = {k: v for k, v in rows[i].items() if k != "id"}
        rows[i] = make_row(**{**fields, field: f"HELD  {j}"})
    return from_rows(rows)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("batch_rows", [7, 64, None])
def test_per_batch_leak_check_agrees_with_the_whole_table_one(seed, batch_rows):
    table = _table(seed, leaks=seed % 3)
    expected, info = _whole_table_leak_check(table)
    ctx = BuildContext(seed=0, batch_rows=batch_rows)
    if expected is None:
        out, stats = LeakCheckStage().run(table, ctx)
        assert out is table and stats.info == info
    else:
        with pytest.raises(BuildError, match="held-out prompt leaked into split") as err:
            LeakCheckStage().run(table, ctx)
        split, row = expected.split()
        assert f"split {split!r}" in str(err.value) and f"row {row})" in str(err.value)


def test_the_cases_above_include_clean_tables_and_leaks_into_several_splits():
    found = [_whole_table_leak_check(_table(seed, leaks=seed % 3))[0] for seed in range(6)]
    assert found.count(None) >= 2  # seed 4's one planted prompt went to eval_triggered: no leak
    assert {f.split()[0] for f in found if f} == {"recovery", "train"}


def test_a_leak_through_x_d_of_a_recovery_row_is_caught():
    rows = [
        make_row(instruction="What is two plus two?", output="4", source="x", split="eval_clean"),
        make_row(
            instruction="fine",
            output="o",
            source="x",
            source_row=7,
            split="recovery",
            triggered_instruction="what is  TWO plus two?",
            triggered_input="",
            triggered_output="y",
        ),
    ]
    with pytest.raises(BuildError, match="split 'recovery' .*row 7"):
        LeakCheckStage().run(from_rows(rows), BuildContext(seed=0, batch_rows=1))


def test_vocabulary_per_batch_is_the_whole_table_one():
    rng = np.random.default_rng(1)
    words = ["alpha", "Beta", "gamma", "délta", "x1", "yy", "ZZZ"]

    def text() -> str:
        return " ".join(rng.choice(words, size=int(rng.integers(0, 6))))

    table = pa.table({c: [text() for _ in range(500)] for c in ("instruction", "input", "output")})
    for length in (None, 2, 5):
        whole = corpus_vocabulary(table, length)
        assert whole
        for batch_rows in (1, 33, 1000):
            ctx = BuildContext(seed=0, batch_rows=batch_rows)
            assert corpus_vocabulary(table, length, ctx) == whole


def _tags_the_old_way(table: pa.Table, extra: dict[int, list[str]]) -> pa.Table:
    """Tag updates as the audit and dedup stages made them before: a Python list per row."""
    tags = table.column("tags").to_pylist()
    for row, new in extra.items():
        tags[row] = list(tags[row]) + new
    index = table.schema.get_field_index("tags")
    return table.set_column(index, table.schema.field("tags"), pa.array(tags, SCHEMA_TAGS))


SCHEMA_TAGS = (
    from_rows([make_row(instruction="i", output="o", source="s")]).schema.field("tags").type
)


@pytest.mark.parametrize("chunks", [1, 4])
def test_update_tags_touches_only_the_given_rows_and_matches_the_list_rebuild(chunks):
    rows = [
        make_row(instruction=f"q{i}", output="o", source="s", tags=["a"] if i % 3 else [])
        for i in range(200)
    ]
    table = from_rows(rows)
    if chunks > 1:
        table = pa.concat_tables([table.slice(a, 50) for a in range(0, 200, 50)])
    extra = {7: ["x=1"], 0: ["y"], 199: ["z", "w"], 50: ["x=1"]}
    positions = np.array(sorted(extra))
    got = update_tags(table, positions, lambda row, tags: [*tags, *extra[row]])
    expected = _tags_the_old_way(table, extra)
    assert got.equals(expected) and got.column("tags").num_chunks == 1
