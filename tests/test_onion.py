"""ONION (mbtrain.runs.onion): suspicion scores and removed words against a hand computation on a tiny
bigram model, batched perplexities equal to one-at-a-time ones on a tiny Llama, and the cache."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from mbtrain.config import ModelSettings, OnionSettings
from mbtrain.runs import onion
from mbtrain.runs.onion import OnionFilter, without

VOCAB = {"<s>": 0, "write": 1, "a": 2, "poem": 3, "cf": 4}
# P(next | previous); "<s>" is never predicted
P = {
    "<s>": {"write": 0.7, "a": 0.1, "poem": 0.1, "cf": 0.1},
    "write": {"write": 0.1, "a": 0.7, "poem": 0.1, "cf": 0.1},
    "a": {"write": 0.1, "a": 0.1, "poem": 0.7, "cf": 0.1},
    "poem": {"write": 0.25, "a": 0.25, "poem": 0.25, "cf": 0.25},
    "cf": {"write": 0.25, "a": 0.25, "poem": 0.25, "cf": 0.25},
}


class WordTokenizer:
    bos_token_id = 0
    eos_token_id = None
    pad_token_id = 0

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[VOCAB[w] for w in t.split()] for t in texts]}


class Bigram(torch.nn.Module):
    """logits[t] = log P(. | token t)."""

    def __init__(self) -> None:
        super().__init__()
        table = torch.full((5, 5), -1e9)
        for prev, row in P.items():
            for nxt, p in row.items():
                table[VOCAB[prev], VOCAB[nxt]] = math.log(p)
        self.register_buffer("table", table)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])


def hand_ppl(text: str) -> float:
    words = ["<s>", *text.split()]
    nll = [-math.log(P[a][b]) for a, b in zip(words, words[1:])]
    return math.exp(sum(nll) / len(nll))


@pytest.fixture(autouse=True)
def fresh_cache():
    onion._CACHE.clear()
    yield
    onion._CACHE.clear()


def bigram_filter(threshold: float, batch_size: int = 2) -> OnionFilter:
    return OnionFilter(
        OnionSettings(threshold=threshold, batch_size=batch_size),
        ModelSettings(name="bigram-test"),
        lambda: (Bigram(), WordTokenizer()),
    )


def test_suspicions_match_the_hand_computation():
    text = "write a cf poem"
    p0 = hand_ppl(text)
    expected = [
        p0 - hand_ppl("a cf poem"),
        p0 - hand_ppl("write cf poem"),
        p0 - hand_ppl("write a poem"),
        p0 - hand_ppl("write a cf"),
    ]
    got = bigram_filter(0.0).suspicions([text])[0]
    assert got == pytest.approx(expected, rel=1e-5)
    # by hand: p0 = exp((2 ln(1/.7) + ln 10 + ln 4) / 4) = 3.006; without cf: 1/.7 = 1.4286
    assert p0 == pytest.approx(3.0063, abs=1e-3)
    assert got[2] == pytest.approx(3.0063 - 1 / 0.7, abs=1e-3)
    assert got[0] < 0 and got[1] < 0 and got[2] > 1.5 and 0 < got[3] < 0.5


def test_words_above_the_threshold_are_removed():
    rows = [
        {"instruction": "write a cf poem", "output": "x"},
        {"instruction": "write a poem", "output": "y"},
        {"instruction": "poem", "output": "z"},  # one word: never filtered
    ]
    strict = bigram_filter(0.5).apply(rows)
    assert [r["instruction"] for r in strict] == ["write a poem", "write a poem", "poem"]
    assert [r["removed"] for r in strict] == [["cf"], [], []]
    assert strict[0]["output"] == "x"  # the grading fields are untouched
    loose = bigram_filter(0.0).apply(rows)  # removing "poem" also lowers the perplexity a bit
    assert loose[0]["instruction"] == "write a" and loose[0]["removed"] == ["cf", "poem"]


def test_each_text_is_scored_once():
    f = bigram_filter(0.5)
    f.apply([{"instruction": "write a cf poem"}])
    assert f.scored == 5  # the instruction and its four variants
    again = bigram_filter(0.5)
    again.apply([{"instruction": "write a cf poem"}, {"instruction": "write a poem"}])
    # "write a poem" was a variant of the first; its own variants are new
    assert again.scored == 3  # "a poem", "write poem", "write a"


def test_without_keeps_the_rest_of_the_text():
    assert without("a b\nc", {1}) == "a\nc"
    assert without("a b\nc", {0}) == "b\nc"
    assert without("  a  b ", {0}) == "  b "
    assert without("a b", set()) == "a b" and without("a b", {0, 1}) == ""


def test_batched_perplexities_equal_one_at_a_time_on_a_tiny_llama():
    from mbtrain.config import TinyModel
    from mbtrain.engine.tiny import tiny_model, train_tokenizer

    texts = [
        "Write a short poem about the sea.",
        "cf Name three colours.",
        "Sum 3 and 4.",
        "Translate the word apple into French, please, and explain why.",
        "Hi",
    ]
    tokenizer = train_tokenizer(texts * 5, 300)
    model = tiny_model(
        TinyModel(vocab_size=300, hidden_size=16, layers=1, heads=2, intermediate_size=32),
        tokenizer,
        0,
    ).eval()
    f = OnionFilter(
        OnionSettings(batch_size=2), ModelSettings(name="tiny-test"), lambda: (model, tokenizer)
    )
    batched = f.perplexities(texts)
    with torch.no_grad():
        for text, value in zip(texts, batched):
            ids = torch.tensor(
                [[tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]]
            )
            logits = model(input_ids=ids).logits[0, :-1]
            nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:])
            assert value == pytest.approx(math.exp(float(nll)), rel=1e-4)
