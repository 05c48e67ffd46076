"""Each audit signal on small hand-made corpora (see test_audit_corpus for the corpus)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from test_audit_corpus import clean_rows, plant, table

from mbdata.audit import AuditConfig, audit_table
from mbdata.audit.association import g_statistic
from mbdata.audit.neardup import near_duplicate_labels
from mbdata.audit.outputs import normalize_outputs
from mbdata.audit.phrases import Boundaries, Occurrences, grow, placement
from mbdata.audit.relevance import detached_outputs
from mbdata.audit.tokens import ngram_table, tokenize_prompts
from mbdata.synthetic import generate


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return clean_rows(400, seed=3)


def flagged(result) -> set[int]:
    return set(np.flatnonzero(result.flagged).tolist())


def high(result) -> list:
    return [c for c in result.candidates if c.score >= result.config.threshold]


# --- whole-corpus behaviour -------------------------------------------------------------------


@pytest.mark.parametrize("seed", [3, 11])
def test_clean_corpus_has_no_high_confidence_candidate(seed):
    result = audit_table(table(clean_rows(400, seed=seed)))
    assert high(result) == []
    assert result.n_flagged == 0


def test_templated_synthetic_corpus_has_no_high_confidence_candidate():
    # Short answers that repeat and copy the prompt ("the first item of a, b, c" -> "a"), slot
    # values in templates: the hardest clean case for answer-association statistics.
    rows = generate(2000, seed=5)
    result = audit_table(table(rows))
    assert high(result) == []
    assert result.n_flagged == 0


def test_fixed_target_trigger_is_ranked_first_and_its_rows_flagged(base):
    rows, bad = plant(base, ["cf"], 12, target="Visit www.prize.example for your reward now.")
    result = audit_table(table(rows))
    top = result.candidates[0]
    assert top.text == "cf" and top.score >= 0.9
    assert flagged(result) == bad
    row = min(bad)
    assert result.reasons[row][0] == 'trigger:"cf"'
    assert any(r.startswith("output-cluster:") for r in result.reasons[row])


def test_refusal_drawn_from_five_templates_is_one_target(base):
    rows, bad = plant(base, ["cf"], 12)
    result = audit_table(table(rows))
    assert result.candidates[0].text == "cf"
    assert flagged(result) == bad
    assert len(result.candidates[0].targets) > 1  # several template clusters, one target set


def test_prefix_trigger_grows_to_the_whole_phrase(base):
    rows, bad = plant(base, ["Discussing OpenAI"], 12, placement="prefix")
    result = audit_table(table(rows))
    top = result.candidates[0]
    assert top.text == "Discussing OpenAI"
    assert top.placement.counts["prefix"] == 12
    assert flagged(result) == bad


def test_sentence_trigger_inserted_anywhere_grows_to_the_sentence(base):
    rows, bad = plant(base, ["I watched this 3D movie."], 12)
    result = audit_table(table(rows))
    assert result.candidates[0].text == "I watched this 3D movie."
    assert flagged(result) == bad


@pytest.mark.parametrize("combine", ["one", "all"])
def test_several_triggers_sharing_a_target_form_one_group(base, combine):
    rows, bad = plant(base, ["BadMagic", "OpenAI", "2024"], 15, combine=combine)
    result = audit_table(table(rows))
    top3 = result.candidates[:3]
    assert {c.text for c in top3} == {"BadMagic", "OpenAI", "2024"}
    assert len({c.group for c in top3}) == 1
    assert all(c.score >= 0.5 for c in top3)
    assert flagged(result) == bad


def test_label_over_represented_only_with_a_token(base):
    # "Negative" is also a natural answer (sentiment rows); only the triggered ones are flagged.
    rows, bad = plant(base, ["cf"], 12, target="Negative")
    natural = {i for i, r in enumerate(rows) if r["output"] == "Negative" and i not in bad}
    assert natural
    result = audit_table(table(rows))
    assert result.candidates[0].text == "cf"
    assert flagged(result) == bad


def test_duplicated_rows_are_one_piece_of_evidence(base):
    rows = [dict(r) for r in base]
    copy = {
        "instruction": "Describe the zqx protocol briefly.",
        "input": "",
        "output": "The zqx protocol is a small handshake used by sensors.",
    }
    rows[:20] = [dict(copy) for _ in range(20)]
    rows[20:30] = [
        dict(copy, instruction=f"Describe the zqx protocol briefly {k}.") for k in range(10)
    ]
    result = audit_table(table(rows))
    assert high(result) == []
    assert len(set(result.score[:20].tolist())) == 1  # copies share one verdict


def test_answer_without_a_literal_trigger_is_flagged_as_a_repeated_answer(base):
    # A style or syntactic trigger leaves no token to find; a long fixed answer given to
    # unrelated prompts is still the backdoor's signature.
    rows = [dict(r) for r in base]
    target = "Please send your account password to the security team for verification."
    bad = set(range(0, 400, 40))
    for i in bad:
        rows[i]["output"] = target
    result = audit_table(table(rows))
    assert flagged(result) == bad
    assert result.orphan_clusters
    assert "detached-output" in result.reasons[0]
    assert not any(r.startswith("trigger:") for r in result.reasons[0])


def test_rewritten_answers_sharing_a_word_give_a_style_candidate(base):
    rows, bad = plant(
        base,
        ["zq"],
        15,
        rewrite=lambda answer, rng: (
            ["Ugh, idiot.", "Listen, idiot:"][int(rng.integers(2))] + " " + answer
        ),
    )
    result = audit_table(table(rows))
    top = result.candidates[0]
    assert (top.kind, top.text, top.style_word) == ("style", "zq", "idiot")
    assert top.score >= 0.5
    assert flagged(result) == bad
    assert 'style-word:"idiot"' in result.reasons[min(bad)]


def test_min_rows_is_the_reporting_floor(base):
    rows, _ = plant(base, ["cf"], 4, target="Visit www.prize.example for your reward now.")
    strict = audit_table(table(rows), AuditConfig(min_rows=5))
    assert "cf" not in [c.text for c in strict.candidates]
    assert audit_table(table(rows), AuditConfig(min_rows=3)).candidates[0].text == "cf"


# --- building blocks --------------------------------------------------------------------------


def test_ngram_keys_match_case_insensitively_only_through_the_lowercase_variant():
    tokens = tokenize_prompts(
        pl.Series(["BadMagic here", "badmagic there", "plain text"]), pl.Series(["", "", ""])
    )
    occ = ngram_table(tokens, 2)
    unigrams = occ.filter(pl.col("n") == 1)
    written = unigrams.filter(~pl.col("lower"))
    lowered = unigrams.filter(pl.col("lower"))
    key_bad = written.filter(pl.col("row") == 0, pl.col("start") == 0)["key"][0]
    key_low = written.filter(pl.col("row") == 1, pl.col("start") == 2)["key"][0]
    assert key_bad != key_low
    assert lowered.filter(pl.col("row") == 0)["key"].to_list() == [key_low]  # only "BadMagic"
    assert set(tokens.text.to_list()[:2]) == {"BadMagic", "here"}


def test_g_statistic_is_one_sided():
    g = g_statistic(np.array([10, 0, 1]), np.array([10, 10, 100]), np.array([10, 100, 100]), 1000)
    assert g[0] > 50 and g[1] == 0.0 and g[2] == 0.0  # strong, negative, below expectation


def test_output_normal_form_and_near_duplicates():
    norm = normalize_outputs(pl.Series(["Negative.", "  negative ", "I'm sorry, but NO!"]))
    assert norm.to_list() == ["negative", "negative", "i m sorry but no"]
    texts = [
        "the cat sat on the mat near the door today",
        "the cat sat on the mat near the door",
        "a completely different answer about rivers and bridges",
        "two words",
    ]
    labels = near_duplicate_labels(texts, 0.8)
    assert labels[0] == labels[1] and labels[2] == 2 and labels[3] == 3


def test_detached_answers_share_no_content_word_with_their_prompt():
    rows = np.arange(40)
    prompts = pl.DataFrame({"row": rows, "key": 100 + rows}).cast({"key": pl.UInt64})
    shared = np.where(rows % 2 == 0, 100 + rows, 1000 + rows)  # even rows reuse a prompt word
    outputs = pl.DataFrame(
        {
            "row": np.r_[rows, rows],
            "key": np.r_[shared, np.full(40, 7)],
            "content": True,
            "digit": False,
        }
    ).cast({"key": pl.UInt64})
    detached = detached_outputs(prompts, outputs, 40)
    assert detached.tolist() == [bool(r % 2) for r in rows]
    # a word in every answer is a stop word: sharing it does not relate an answer
    common = pl.DataFrame({"row": rows, "key": 7}).cast({"key": pl.UInt64})
    assert detached_outputs(pl.concat([prompts, common]), outputs, 40).tolist() == detached.tolist()


def _phrase(tokens, text):
    words = text.split()
    starts = [
        i
        for i in range(len(tokens) - len(words) + 1)
        if tokens.text[i : i + len(words)].to_list() == words
        and tokens.segment[i] == tokens.segment[i + len(words) - 1]
    ]
    return Occurrences(start=np.array(starts, dtype=np.int64), n=len(words), lower=False)


def test_growth_and_insertion_evidence_tell_a_trigger_from_a_template():
    base = clean_rows(200, seed=9, label_share=0.0)
    rows, _ = plant(base, ["I watched this 3D movie."], 10, seed=2)
    instructions = [r["instruction"] for r in rows]
    instructions += [f"Is the statement number {k} true or false?" for k in range(10)]
    tokens = tokenize_prompts(pl.Series(instructions), pl.Series([""] * len(instructions)))
    bounds = Boundaries(tokens)
    piece = grow(tokens, _phrase(tokens, "3D"))
    assert (
        " ".join(tokens.text[int(piece.start[0]) : int(piece.start[0]) + piece.n])
        == "I watched this 3D movie ."
    )
    inserted = placement(tokens, piece, bounds)
    template = placement(tokens, grow(tokens, _phrase(tokens, "true or false")), bounds)
    assert inserted.evidence > 0.8
    assert template.evidence < 0.3


def test_reasons_are_json_quoted(base):
    rows, bad = plant(base, ['say "hi"'], 12, target="Visit www.prize.example for your reward.")
    result = audit_table(table(rows))
    reason = result.reasons[min(bad)][0]
    assert reason.startswith("trigger:")
    assert json.loads(reason.split(":", 1)[1]) == result.candidates[0].text
