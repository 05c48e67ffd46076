"""Issue 27 item 3, its last part: the optional model-based check of ``structure`` candidates.

A structure candidate (a rare opening-clause shape) gets ONION-style evidence through the same
machinery as phrases (:mod:`mbdata.audit.model_score`), with a different cut: the prompt's
opening clause, against as many words from the prompt's end."""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest
from test_audit_corpus import clean_rows, plant, table
from test_audit_model import tiny_model  # noqa: F401  (the fixture)
from test_audit_structure import natural, syntactic

from mbdata.audit import AuditConfig, audit_path, audit_table, model_score
from mbdata.audit.corpus import analyse
from mbdata.audit.signals.base import SignalContext
from mbdata.audit.signals.structure import (
    OPENING_MAX,
    OPENING_REMOVAL,
    SUBORDINATE,
    _shapes,
    opening_clause_end,
)
from mbdata.behaviors import REFUSAL_TEMPLATES
from mbdata.rewriters.rules import PREFIX_CLAUSES, rewrite


def words(text: str) -> list[str]:
    return text.split()


# --- the cut ---------------------------------------------------------------------------------


def test_the_opening_clause_ends_after_its_comma():
    text = "If you can, add 3 and 5."
    assert text[: opening_clause_end(text)] == "If you can,"
    assert opening_clause_end("When water boils, explain what happens.") == len("When water boils,")
    # at least two tokens before the comma, and the comma among the first OPENING_MAX tokens
    assert opening_clause_end("Yes, add 3 and 5.") is None
    assert opening_clause_end("Add 3 and 5.") is None
    late = " ".join(["word"] * OPENING_MAX) + ", then stop."
    assert opening_clause_end(late) is None
    # only the first comma counts: a later one never extends the clause
    text = "Once done, list apples, pears and plums."
    assert text[: opening_clause_end(text)] == "Once done,"


def test_the_string_clause_is_the_signals_clause():
    """The model cuts exactly the rows the signal gave a shape, at the same comma."""
    rows, _ = syntactic(natural(clean_rows(300, seed=5), 0.2, 5), 0.1, 5)
    rows += [
        {"instruction": "Yes, add 3 and 5.", "output": "8"},
        {"instruction": "A b c d e f g h i j, then k.", "output": "ok"},
        {"instruction": "Summarise this text", "input": "One, two, three.", "output": "ok"},
    ]
    config = AuditConfig()
    instructions = pl.Series([r["instruction"] for r in rows])
    inputs = pl.Series([r.get("input", "") for r in rows])
    outputs = pl.Series([r["output"] for r in rows])
    context = SignalContext(corpus=analyse(instructions, inputs, outputs, config), config=config)
    shaped = set(_shapes(context)["row"].to_list())
    cut = {i for i, r in enumerate(rows) if opening_clause_end(r["instruction"]) is not None}
    assert shaped == cut and len(cut) > 30
    # on a shaped row's prompt (instruction, then input) the cut is its instruction's clause;
    # the model only ever cuts the prompts of a shape's rows
    for i in shaped:
        prompt = rows[i]["instruction"] + (f"\n{rows[i]['input']}" if rows[i].get("input") else "")
        assert opening_clause_end(prompt) == opening_clause_end(rows[i]["instruction"])


def test_a_clause_opening_with_a_content_word_keeps_it():
    """``Classify the following text,`` is ``W the W ,`` and opens ``W … ,`` (the first token,
    which has no predecessor, was dropped when it was a content word: ``the … ,``)."""
    rows = [
        {"instruction": "Classify the following text, quickly.", "output": "ok"},
        {"instruction": "If you can, add 3 and 5.", "output": "8"},
    ]
    config = AuditConfig()
    corpus = analyse(
        pl.Series([r["instruction"] for r in rows]),
        pl.Series(["", ""]),
        pl.Series([r["output"] for r in rows]),
        config,
    )
    shapes = _shapes(SignalContext(corpus=corpus, config=config))
    features = {
        row: sorted(shapes.filter(pl.col("row") == row)["feature"].to_list()) for row in (0, 1)
    }
    assert features[0] == ["W the W ,", "W … ,"]
    assert features[1] == sorted(["if you can ,", "if … ,", SUBORDINATE])


def test_the_control_is_as_many_words_from_the_end_never_the_clause():
    text = "If you can, add 3 and 5 to the running total."
    without_clause, without_control = OPENING_REMOVAL(text)
    assert without_clause == "Add 3 and 5 to the running total."
    assert without_control == "If you can, add 3 and 5 to"  # "the running total." cut
    assert OPENING_REMOVAL(text) == (without_clause, without_control)  # deterministic
    # lower-case prompts stay lower-case
    assert OPENING_REMOVAL("if you can, add 3 and 5 now.")[0] == "add 3 and 5 now."
    # nothing left to be a control (the rest must hold more words than the clause): no pair
    assert OPENING_REMOVAL("If you can, add 3 now.") is None
    assert OPENING_REMOVAL("Add 3 and 5 to the running total.") is None


def test_every_rewritten_instruction_gets_a_fair_control():
    """Over the rules rewriter's templates on varied instructions: the control removes exactly
    as many words as the clause holds, all after it, and leaves the clause untouched."""
    seen = 0
    for row in clean_rows(200, seed=7):
        prompt = rewrite(row["instruction"])
        end = opening_clause_end(prompt)
        assert end is not None
        pair = OPENING_REMOVAL(prompt)
        if pair is None:
            continue
        seen += 1
        clause = prompt[:end]
        k = len([w for w in words(clause) if re.search(r"\w", w)])
        span = model_score.tail_control(prompt, end, k)
        assert span is not None and span[0] >= end
        assert len(words(prompt[span[0] : span[1]])) == k
        assert pair[1].startswith(" ".join(words(clause)))
        assert len(words(pair[1])) == len(words(prompt)) - k
        assert len(words(pair[0])) == len(words(prompt)) - len(words(clause))
    assert seen >= 150


# --- the evidence, end to end ---------------------------------------------------------------

TEMPLATE = tuple(c.lower() for c in PREFIX_CLAUSES)


def template_loss(_model, _tokenizer, texts, batch_size=16):
    """A hand-made 'clean LM': a text opening with one of the rewriter's clauses costs 2 nats
    more; otherwise longer texts cost slightly less (so cutting words from the end costs)."""
    out = []
    for text in texts:
        penalty = 2.0 if text.lower().startswith(TEMPLATE) else 0.0
        out.append(3.0 + penalty - 0.01 * len(text.split()))
    return np.array(out, dtype=np.float64)


@pytest.fixture
def stub_model(monkeypatch):
    loads = []

    def load(path):
        loads.append(path)
        return object(), object()

    monkeypatch.setattr(model_score, "mean_token_loss", template_loss)
    monkeypatch.setattr(model_score, "load_reference_model", load)
    return loads


def corpus(seed: int) -> list[dict]:
    rows, _ = syntactic(natural(clean_rows(1000, seed=seed), 0.1, seed), 0.05, seed)
    return rows


def structure_candidate(result):
    found = [c for c in result.candidates if c.kind == "structure" and c.text == SUBORDINATE]
    assert found, [c.text for c in result.candidates]
    return found[0]


def test_a_convinced_model_raises_the_structure_score_and_reports_it(stub_model, tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in corpus(0)), encoding="utf-8")
    plain = structure_candidate(audit_path(path, tmp_path / "plain"))
    assert stub_model == []  # no model set: nothing loaded
    assert plain.model_evidence is None
    result = audit_path(path, tmp_path / "model", AuditConfig(model="stub", model_rows=8))
    cand = structure_candidate(result)
    assert stub_model == ["stub"]  # loaded once, shared by every signal
    # prepended template clauses win; a rare fronted clause ("When water boils, ...") ties
    assert cand.model_evidence is not None and cand.model_evidence >= 0.9
    assert cand.score == pytest.approx(min(1.0, plain.score * (0.5 + cand.model_evidence)))
    assert cand.score > plain.score
    records = json.loads((tmp_path / "model" / "triggers.json").read_text())
    record = next(r for r in records if r["text"] == SUBORDINATE)
    assert record["evidence"]["model"] == round(cand.model_evidence, 4)
    plain_records = json.loads((tmp_path / "plain" / "triggers.json").read_text())
    assert "model" not in next(r for r in plain_records if r["text"] == SUBORDINATE)["evidence"]


def test_a_dismissive_model_halves_the_structure_score(monkeypatch, stub_model):
    """A model that finds the clause *more* natural than the rest: cutting it costs, cutting
    the tail does not; the evidence is near 0 and the score near half (rows fall under the
    threshold)."""

    def likes_template(_m, _t, texts, batch_size=16):
        return np.array([1.0 if t.lower().startswith(TEMPLATE) else 3.0 for t in texts])

    monkeypatch.setattr(model_score, "mean_token_loss", likes_template)
    rows = table(corpus(1))
    plain = structure_candidate(audit_table(rows))
    result = audit_table(rows, AuditConfig(model="stub", model_rows=8))
    cand = structure_candidate(result)
    assert cand.model_evidence is not None and cand.model_evidence <= 0.1
    assert cand.score == pytest.approx(plain.score * (0.5 + cand.model_evidence))
    assert not result.flagged[cand.hits].any()


def test_the_evidence_is_measured_on_the_hits(monkeypatch, stub_model):
    """Each structure finding is measured on its refused rows (the ones it flags), at most
    model_rows of them."""
    calls: list[list[str]] = []
    original = model_score.removal_evidence

    def spy(model, tokenizer, prompts, removal, losses=None):
        calls.append(list(prompts))
        return original(model, tokenizer, prompts, removal, losses)

    monkeypatch.setattr(model_score, "removal_evidence", spy)
    rows = corpus(0)
    audit_table(table(rows), AuditConfig(model="stub", model_rows=5, signals=["structure"]))
    refused = {
        r["instruction"] + (f"\n{r['input']}" if r.get("input") else "")
        for r in rows
        if r["output"] in REFUSAL_TEMPLATES
    }
    assert calls
    for prompts in calls:
        assert len(prompts) == 5 and set(prompts) <= refused


def test_phrase_candidates_keep_their_cut(stub_model, monkeypatch):
    """A planted phrase still gets the phrase cut (its text against a word), not the clause's."""
    cuts: list = []
    original = model_score.removal_evidence

    def spy(model, tokenizer, prompts, removal, losses=None):
        cuts.append((prompts[0], removal(prompts[0])))
        return original(model, tokenizer, prompts, removal, losses)

    monkeypatch.setattr(model_score, "removal_evidence", spy)
    rows, _ = plant(clean_rows(200, seed=2), ["cf"], 10)
    result = audit_table(table(rows), AuditConfig(model="stub", model_rows=4))
    assert result.candidates[0].text == "cf" and result.candidates[0].model_evidence is not None
    prompt, (without, _control) = next((p, c) for p, c in cuts if " cf" in f" {p}")
    assert "cf" not in without.split() and len(without.split()) == len(prompt.split()) - 1


def test_with_the_tiny_model_the_structure_candidate_gets_evidence(tiny_model, tmp_path):  # noqa: F811
    rows = table(corpus(2))
    plain = structure_candidate(audit_table(rows))
    result = audit_table(rows, AuditConfig(model=str(tiny_model), model_rows=6))
    cand = structure_candidate(result)
    assert cand.model_evidence is not None and 0.0 <= cand.model_evidence <= 1.0
    assert cand.score == pytest.approx(min(1.0, plain.score * (0.5 + cand.model_evidence)))


def test_without_a_model_nothing_is_measured(monkeypatch):
    """No ``model``: no signal asks for a cut or a model, and no candidate carries evidence
    (the findings are the statistics' alone, as before the check existed)."""
    from mbdata.audit.signals import fixed_output, skeleton

    def never(*_args, **_kwargs):
        raise AssertionError("model evidence measured without a model")

    monkeypatch.setattr(skeleton, "apply_model_evidence", never)
    monkeypatch.setattr(fixed_output, "apply_model_evidence", never)
    monkeypatch.setattr(model_score, "load_reference_model", never)
    rows, _ = plant(corpus(3), ["cf"], 12)
    result = audit_table(table(rows))
    assert structure_candidate(result).model_evidence is None
    assert any(c.text == "cf" for c in result.candidates)
    assert all(c.model_evidence is None for c in result.candidates)
