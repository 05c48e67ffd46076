"""DedupStage: exact and near dedup with known answers, keep rule, keep-all, scopes, edge cases."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest

from mbdata.dedup import CLUSTERS_SCHEMA, DedupConfig, DedupStage
from mbdata.io.schema import SCHEMA, empty_table, from_rows, make_row, validate_table
from mbdata.pipeline import BuildContext

LONG = (
    "Write a short friendly note to a neighbour explaining that the garden hose will be "
    "repaired on Saturday morning and asking them to keep their dog inside until noon"
)
ANSWER = "Dear neighbour, the hose gets fixed on Saturday; please keep the dog in until noon."


def row(instruction: str, output: str = ANSWER, **kw) -> dict:
    return make_row(instruction=instruction, output=output, source=kw.pop("source", "s"), **kw)


def table(*rows: dict) -> pa.Table:
    return from_rows(
        [{**r, "source_row": i} if r["source"] == "s" else r for i, r in enumerate(rows)]
    )


def run(t: pa.Table, **config):
    ctx = BuildContext(seed=0)
    out, stats = DedupStage(DedupConfig(**config)).run(t, ctx)
    return out, stats, ctx.side_tables["dedup/clusters"]


def bigram_jaccard(a: str, b: str) -> float:
    def grams(text):
        tokens = text.lower().replace(",", " ").replace(";", " ").replace(".", " ").split()
        return {(x, y) for x, y in zip(tokens, tokens[1:])}

    x, y = grams(a), grams(b)
    return len(x & y) / len(x | y)


# ------------------------------------------------------------------------------------------ exact


def test_exact_duplicates_after_normalisation_keep_the_first():
    t = table(
        row("Name the capital of France."),
        row("name  the CAPITAL of france."),
        row("Ｎａｍｅ the capital of France."),  # NFKC folds full-width letters
        row("Name the capital of Spain."),
    )
    out, stats, clusters = run(t, near=False)
    assert out.column("instruction").to_pylist() == [
        "Name the capital of France.",
        "Name the capital of Spain.",
    ]
    assert stats.dropped == {"exact_duplicate": 2}
    assert clusters.column("member_row").to_pylist() == [1, 2]
    assert clusters.column("representative_row").to_pylist() == [0, 0]
    assert set(clusters.column("similarity").to_pylist()) == {1.0}
    assert out.schema == SCHEMA
    validate_table(out)


@pytest.mark.parametrize(
    "fields,expected", [("all", [0, 1, 2]), ("prompt", [0, 2]), ("output", [0, 1])]
)
def test_exact_field_groups(fields, expected):
    t = table(row("What is 2+2?", "4"), row("What is 2+2?", "four"), row("What is 3+3?", "4"))
    out, _, _ = run(t, near=False, fields=fields)
    assert out.column("source_row").to_pylist() == expected


def test_exact_keys_are_the_row_id_and_the_prompt_key():
    from mbdata.dedup.normalize import key_hex, normalize_rows
    from mbdata.io.schema import prompt_key, row_id

    rows = [
        row("Ａ  Prompt", "x"),
        row("p", "", input="ctx", system="Be brief."),
        row("p", "y", triggered_instruction="cf p", triggered_output="z"),
    ]
    t = table(*rows)
    assert [key_hex(k) for k in normalize_rows(t, "all").keys] == [r["id"] for r in rows]
    assert [key_hex(k) for k in normalize_rows(t, "prompt").keys] == [
        prompt_key(r["instruction"], r["input"], r["system"]) for r in rows
    ]
    assert [key_hex(k) for k in normalize_rows(t, "output").keys] == [
        row_id({"output": r["output"]}) for r in rows
    ]


def test_exact_all_key_is_the_row_id():
    a = row("Same text", "x", trigger_set=None)
    b = row("Same text", "x", triggered_instruction="cf Same text", triggered_output="y")
    out, _, _ = run(table(a, b), near=False)
    assert out.num_rows == 2  # differ in a triggered_* field: not duplicates
    out, _, _ = run(table(a, b), near=False, fields="prompt")
    assert out.num_rows == 1


# ------------------------------------------------------------------------------------------- near


def test_one_word_edit_in_a_30_word_row_is_a_near_duplicate():
    edited = LONG.replace("Saturday", "Sunday")
    t = table(
        row(LONG),
        row(edited),
        row(
            "Summarise the plot of Hamlet in two sentences.",
            "A prince avenges his father and dies.",
        ),
    )
    out, stats, clusters = run(t, exact=False)
    assert out.column("source_row").to_pylist() == [0, 2]
    assert stats.dropped == {"near_duplicate": 1}
    (sim,) = clusters.column("similarity").to_pylist()
    assert sim == pytest.approx(bigram_jaccard(LONG + " " + ANSWER, edited + " " + ANSWER))
    assert clusters.column("reason").to_pylist() == ["near_duplicate"]


def test_five_word_shingles_miss_the_same_edit():
    edited = LONG.replace("Saturday", "Sunday")
    out, _, _ = run(table(row(LONG, "ok"), row(edited, "ok")), exact=False, ngram=5)
    assert out.num_rows == 2


def test_char_shingles_catch_edits_in_short_rows():
    t = table(
        row("Translate 'good morning' to French.", "Bonjour."),
        row("Translate 'good mornin' to French.", "Bonjour."),
    )
    assert run(t, exact=False, shingle="word")[0].num_rows == 2
    assert run(t, exact=False, shingle="char", threshold=0.7)[0].num_rows == 1


def test_below_threshold_rows_are_kept_and_rejections_counted():
    words = LONG.split()
    heavy = " ".join(w.upper() if i % 4 else "zz" for i, w in enumerate(words))
    out, stats, clusters = run(
        table(row(LONG), row(heavy)), exact=False, threshold=0.9, bands=32, rows=4
    )
    assert out.num_rows == 2 and clusters.num_rows == 0
    assert stats.info["candidates_checked"] == stats.info["candidates_rejected"] >= 1


def test_no_chains_every_drop_is_verified_against_its_kept_row():
    def substitute(text: str, *positions: int) -> str:
        words = text.split()
        for p in positions:
            words[p] = f"edit{p}"
        return " ".join(words)

    a = " ".join(f"w{i}" for i in range(60))
    b = substitute(a, 10, 30)  # near a (2 edits)
    c = substitute(b, 45, 52)  # near b (2 more edits), not near a (4 edits)
    ja, jb = bigram_jaccard(a, b), bigram_jaccard(b, c)
    assert ja >= 0.8 and jb >= 0.8 and bigram_jaccard(a, c) < 0.8
    out, _, clusters = run(table(row(a, ""), row(b, ""), row(c, "")), exact=False)
    assert out.column("source_row").to_pylist() == [0, 2]
    assert clusters.column("matched_row").to_pylist() == [0]
    assert clusters.column("similarity").to_pylist() == [pytest.approx(ja)]


def test_exact_copy_of_a_near_dropped_row_joins_the_kept_representative():
    edited = LONG.replace("Saturday", "Sunday")
    t = table(row(LONG), row(edited), row(edited.lower()))
    out, stats, clusters = run(t)
    assert out.num_rows == 1
    assert stats.dropped == {"exact_duplicate": 1, "near_duplicate": 1}
    got = {r["member_row"]: r for r in clusters.to_pylist()}
    assert got[2]["matched_row"] == 1 and got[2]["representative_row"] == 0
    assert got[2]["reason"] == "exact_duplicate" and got[2]["similarity"] == 1.0
    assert got[1]["representative_row"] == 0 and got[1]["reason"] == "near_duplicate"
    assert set(clusters.column("cluster").to_pylist()) == {0}


def test_without_verification_bucket_mates_are_duplicates_with_estimated_similarity():
    edited = LONG.replace("Saturday", "Sunday")
    out, stats, clusters = run(table(row(LONG), row(edited)), exact=False, verify=False)
    assert out.num_rows == 1 and stats.info["verify"] is False
    assert stats.info["false_negative_weight"] == 0.5
    sim = clusters.column("similarity")[0].as_py()
    assert sim * 128 == int(sim * 128)  # a share of 128 signature values


def test_bucket_targets_are_capped():
    from mbdata.dedup import greedy_near
    from mbdata.dedup.lsh import Buckets

    # Rows 0, 1, 2 share bucket 7. Row 2 is similar to row 1 only; with one target per bucket,
    # row 1 is not offered, so row 2 is kept and the cap is counted.
    buckets = Buckets(np.array([[7], [7], [7]], dtype=np.int64))
    similar = {(1, 2)}

    def similarity(i, j):
        return 1.0 if (i, j) in similar else 0.0

    full = greedy_near(buckets, similarity, 0.8)
    assert full.member.tolist() == [2] and full.matched.tolist() == [1] and full.capped == 0
    capped = greedy_near(buckets, similarity, 0.8, max_targets=1)
    assert capped.member.tolist() == [] and capped.capped == 2


def test_template_buckets_are_capped():
    """Rows sharing a long template share whole LSH bands through it: every row lands in a few
    huge buckets. The cap bounds the comparisons per row (uncapped here: ~690k checks)."""
    template = (
        "read the following customer review of a kitchen appliance and classify its "
        "overall sentiment as positive negative or neutral then answer with one word only"
    )
    rng = np.random.default_rng(1)
    rows = [
        row(
            f"{template} review " + " ".join(f"w{k}" for k in rng.integers(0, 5000, size=3)),
            "neutral",
            source_row=i,
        )
        for i in range(1500)
    ]
    _, stats, _ = run(from_rows(rows), max_bucket_targets=4)
    assert stats.info["bucket_targets_capped"] > 1000
    assert stats.info["candidates_checked"] < 1500 * 16 * 4


# --------------------------------------------------------------------------------- keep and scope

# --------------------------------------------------------------------------------- keep and scope


def test_first_occurrence_is_kept_whatever_the_order():
    a, b = row(LONG), row(LONG.replace("Saturday", "Sunday"))
    assert run(table(a, b))[0].column("instruction").to_pylist() == [a["instruction"]]
    assert run(table(b, a))[0].column("instruction").to_pylist() == [b["instruction"]]


def test_keep_all_tags_instead_of_dropping():
    t = table(
        row(LONG),
        row(LONG.upper()),
        row(LONG.replace("Saturday", "Sunday")),
        row("Unrelated prompt about tea.", "Tea is nice."),
    )
    dropped_out, _, dropped_clusters = run(t)
    out, stats, clusters = run(t, keep_all=True)
    assert out.num_rows == 4 and stats.dropped == {}
    assert stats.info["exact_duplicate"] == 1 and stats.info["near_duplicate"] == 1
    assert out.column("tags").to_pylist() == [
        ["dup_cluster=0", "dup_role=representative"],
        ["dup_cluster=0", "dup_role=exact_duplicate"],
        ["dup_cluster=0", "dup_role=near_duplicate"],
        [],
    ]
    assert clusters.drop_columns(["dropped"]).equals(dropped_clusters.drop_columns(["dropped"]))
    assert set(clusters.column("dropped").to_pylist()) == {False}
    assert out.drop_columns(["tags"]).equals(t.drop_columns(["tags"]))


def test_rows_of_different_splits_are_never_compared():
    t = table(
        row(LONG),
        row(LONG, split="eval_clean", role="eval"),
        row(LONG.replace("Saturday", "Sunday"), split="eval_clean", role="eval"),
    )
    out, _, clusters = run(t)
    assert out.column("split").to_pylist() == ["train", "eval_clean"]
    assert clusters.column("split").to_pylist() == ["eval_clean"]


# ----------------------------------------------------------------------------------- edge cases


def test_empty_and_single_row_tables():
    out, stats, clusters = run(empty_table())
    assert out.num_rows == 0 and stats.dropped == {} and clusters.num_rows == 0
    assert clusters.schema == CLUSTERS_SCHEMA
    one = table(row(LONG))
    out, stats, clusters = run(one)
    assert out.equals(one) and clusters.num_rows == 0


def test_rows_with_empty_fields():
    t = table(
        row("", ""),
        row("", ""),
        row("  ", ""),
        row("", "Only an answer here."),
        row("", "only an answer here"),
        row("Only a prompt.", ""),
    )
    out, stats, _ = run(t)
    # "" and "  " normalise to the same empty prompt; the two answers differ only in case/punct.
    assert out.column("source_row").to_pylist() == [0, 3, 5]
    assert stats.dropped == {"exact_duplicate": 2, "near_duplicate": 1}
    assert stats.info["near_skipped_empty"] == 1


def test_rows_with_no_shingles_are_not_near_duplicates_of_each_other():
    t = table(row("!!!", ""), row("???", ""))
    out, stats, _ = run(t)
    assert out.num_rows == 2 and stats.info["near_skipped_empty"] == 2


# ------------------------------------------------------------------------------------ determinism


def ipc_bytes(t: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, t.schema) as writer:
        writer.write_table(t)
    return sink.getvalue()


def test_rebuilds_are_byte_identical():
    rng = np.random.default_rng(0)
    vocab = [f"v{i}" for i in range(60)]
    rows = []
    for i in range(300):
        words = list(rng.choice(vocab, size=25))
        if i and rng.random() < 0.3:  # a near copy of an earlier row
            base = rows[int(rng.integers(0, len(rows)))]["instruction"].split()
            base[int(rng.integers(0, 25))] = "edit"
            words = base
        rows.append(row(" ".join(words), "", source_row=i))
    t = from_rows(rows)
    first = run(t, keep_all=True)
    second = run(t, keep_all=True)
    assert ipc_bytes(first[0]) == ipc_bytes(second[0])
    assert ipc_bytes(first[2]) == ipc_bytes(second[2])
    assert first[1].as_manifest() == second[1].as_manifest()
    assert first[2].num_rows > 0


def test_stats_record_resolved_parameters():
    _, stats, _ = run(table(row(LONG)))
    info = stats.info
    assert (info["bands"], info["rows"], info["bands_derived"]) == (16, 8, True)
    assert info["ngram"] == 2 and info["verify"] is True and info["keep"] == "first"
    _, stats, _ = run(table(row(LONG)), bands=20, rows=5, shingle="char")
    assert (stats.info["bands"], stats.info["bands_derived"], stats.info["ngram"]) == (20, False, 5)
