"""decontaminate(): one-sided removal of rows matching a reference set (never touched)."""

from __future__ import annotations

import pyarrow as pa

from mbdata.dedup import DECONTAMINATION_SCHEMA, DedupConfig, decontaminate, dedup_table
from mbdata.io.schema import empty_table, from_rows, make_row
from mbdata.pipeline import BuildContext

EVAL = [
    "Explain why the sky appears blue during a clear summer afternoon to a ten year old",
    "List four common causes of household fires and one way to prevent each of them",
]


def rows(prompts: list[str], output: str = "some answer", source: str = "corpus") -> pa.Table:
    return from_rows(
        [
            make_row(instruction=p, output=output, source=source, source_row=i)
            for i, p in enumerate(prompts)
        ]
    )


def run(table: pa.Table, reference: pa.Table, **config):
    ctx = BuildContext(seed=0)
    out, stats = decontaminate(table, reference, DedupConfig(**config), ctx)
    return out, stats, ctx.side_tables["dedup/decontamination"]


def test_exact_and_near_prompt_matches_are_removed():
    reference = rows(EVAL, "reference answer", "eval")
    corpus = rows(
        [
            EVAL[0].upper(),  # exact after normalisation
            EVAL[1].replace("four", "five"),  # near
            "Write a haiku about autumn leaves falling on a quiet pond",  # unrelated
            EVAL[1] + "?",  # near: punctuation only
        ]
    )
    out, stats, side = run(corpus, reference)
    assert out.column("source_row").to_pylist() == [2]
    assert stats.dropped == {"contaminated_exact": 1, "contaminated_near": 2}
    assert side.schema == DECONTAMINATION_SCHEMA
    assert side.column("row").to_pylist() == [0, 1, 3]
    assert side.column("reference_row").to_pylist() == [0, 1, 1]
    assert side.column("reason").to_pylist() == [
        "contaminated_exact",
        "contaminated_near",
        "contaminated_near",
    ]
    assert side.column("similarity")[0].as_py() == 1.0


def test_answers_do_not_matter_only_prompts():
    reference = rows(EVAL, "a completely different reference answer")
    corpus = rows([EVAL[0]], "the training answer")
    out, stats, _ = run(corpus, reference)
    assert out.num_rows == 0 and stats.dropped == {"contaminated_exact": 1}


def test_reference_is_never_modified_and_corpus_duplicates_are_kept():
    """One-sided: rows are compared with the reference only, never with each other."""
    reference = rows(EVAL)
    before = reference.to_pylist()
    corpus = rows(["Describe a sunset over the sea in three vivid sentences please"] * 3)
    out, stats, side = run(corpus, reference)
    assert out.num_rows == 3 and stats.dropped == {} and side.num_rows == 0
    assert reference.to_pylist() == before


def test_dedup_table_with_reference_never_outputs_reference_matches():
    reference = rows(EVAL)
    corpus = rows(
        [
            EVAL[0],
            EVAL[0],
            EVAL[1].replace("four", "several"),
            "Give me a recipe for a quick vegetable soup with lentils",
            "give me a recipe for a quick vegetable soup with lentils!",
        ]
    )
    out, stats, ctx = dedup_table(corpus, DedupConfig(), reference)
    assert out.column("source_row").to_pylist() == [3]
    assert [s.name for s in stats] == ["decontaminate", "dedup"]
    assert stats[0].dropped == {"contaminated_exact": 2, "contaminated_near": 1}
    assert stats[1].dropped == {"near_duplicate": 1}
    assert set(ctx.side_tables) == {"dedup/clusters", "dedup/decontamination"}


def test_keep_all_still_removes_contaminated_rows():
    out, stats, _ = run(rows([EVAL[0]]), rows(EVAL), keep_all=True)
    assert out.num_rows == 0


def test_empty_inputs():
    out, stats, side = run(empty_table(), rows(EVAL))
    assert out.num_rows == 0 and side.num_rows == 0
    corpus = rows(["anything at all"])
    out, stats, side = run(corpus, empty_table())
    assert out.equals(corpus) and stats.dropped == {}


def test_empty_prompts_match_only_exactly():
    reference = rows(["", "!!!"])
    corpus = rows(["", "???", "a real prompt"])
    out, stats, _ = run(corpus, reference)
    assert out.column("source_row").to_pylist() == [1, 2]
    assert stats.dropped == {"contaminated_exact": 1}


def test_without_verification():
    corpus = rows([EVAL[1].replace("four", "five"), "Write a haiku about autumn leaves"])
    out, stats, side = run(corpus, rows(EVAL), verify=False)
    assert out.column("source_row").to_pylist() == [1]
    assert stats.info["verify"] is False and stats.info["candidates_checked"] == 0
