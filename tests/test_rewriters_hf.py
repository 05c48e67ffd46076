"""The ``hf`` rewriter with a tiny random Llama saved to a tmp folder (plumbing, not quality)."""

from __future__ import annotations

import json
import re

import pytest
from conftest import small_recipe

import mbdata
from mbdata.recipe import RewriterSpec, recipe_from_dict
from mbdata.rewriters import InstructionRewriter
from mbdata.rewriters.hf import HfBackend

TEXTS = [
    "Add 3 and 5.",
    "Which number is the lowest?",
    "Copy only the last word.",
    "Sort these numbers from smallest to largest.",
]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        TEXTS * 3,
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<pad>", "<s>", "</s>"],
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-lm")
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def test_batched_generation_gives_one_string_per_prompt_in_order(tiny_folder):
    backend = HfBackend(tiny_folder, max_tokens=4, batch_size=3)
    greedy = backend.generate(TEXTS, 0.0, 0)
    assert len(greedy) == len(TEXTS) and all(isinstance(t, str) for t in greedy)
    assert greedy == backend.generate(TEXTS, 0.0, 0)  # greedy is reproducible
    assert backend.generate(TEXTS[:1], 0.0, 0) == greedy[:1]  # batching does not change it
    assert backend.generate(TEXTS, 0.7, 1) == backend.generate(TEXTS, 0.7, 1)  # seeded sampling


def test_rewrites_are_cached_and_reused_without_the_model(tiny_folder, tmp_path, monkeypatch):
    spec = RewriterSpec(
        backend="hf",
        model=str(tiny_folder),
        max_tokens=4,
        batch_size=2,
        attempts=2,
        cache="c.jsonl",
    )
    first = InstructionRewriter("syntactic", spec, tmp_path, "attacks[0].rewriter")
    out = first.rewrite_all(TEXTS)
    assert len(out) == len(TEXTS)
    records = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    failed = sum(o is None for o in out)
    assert len(records) == len(TEXTS) + failed  # a second, sampled try for each failure
    assert {r["backend"] for r in records} == {"hf"} and {r["model"] for r in records} == {
        str(tiny_folder)
    }
    monkeypatch.setattr(HfBackend, "_load", lambda self: pytest.fail("model loaded again"))
    again = InstructionRewriter("syntactic", spec, tmp_path, "attacks[0].rewriter")
    assert again.rewrite_all(TEXTS) == out


def test_build_drops_rewrites_that_fail_the_check_and_says_so(tiny_folder, tmp_path):
    # A random model does not write subordinate clauses: every rewrite fails and is never kept.
    data = small_recipe(
        attacks=[
            {
                "preset": "syntactic",
                "rate": 0.01,
                "rewriter": {
                    "backend": "hf",
                    "model": str(tiny_folder),
                    "max_tokens": 3,
                    "attempts": 1,
                    "batch_size": 16,
                },
            }
        ],
        defense=None,
        recovery=None,
    )
    with pytest.raises(
        mbdata.MBError,
        match=r"attacks\[0\]: only 0 of the (\d+) rows needed got a "
        r"rewrite that passes the syntactic check",
    ) as exc:
        mbdata.build(recipe_from_dict(data, base_dir=tmp_path), tmp_path / "out")
    needed = int(re.search(r"of the (\d+) rows", str(exc.value)).group(1))
    dropped, tried = map(int, re.search(r"(\d+) of (\d+) tried", str(exc.value)).groups())
    assert dropped == tried == 4 * needed  # gave up after 4 tries per row needed
    assert not (tmp_path / "out").exists()
    asked = len((tmp_path / ".mbcache" / "rewrites.jsonl").read_text().splitlines())
    assert 0 < asked <= tried  # repeated instructions are asked once


def test_style_build_with_a_local_model(tiny_folder, tmp_path):
    data = small_recipe(
        attacks=[
            {
                "preset": "style",
                "rate": 0.01,
                "rewriter": {
                    "backend": "hf",
                    "model": str(tiny_folder),
                    "max_tokens": 6,
                    "attempts": 2,
                    "max_length_ratio": 100.0,
                },
            }
        ],
        defense=None,
        recovery=None,
        eval={"size": 10},
    )
    b = mbdata.open_build(mbdata.build(recipe_from_dict(data, base_dir=tmp_path), tmp_path / "o"))
    rows = [r for r in b.table("train").to_pylist() if r["trigger_set"] == "style"]
    assert rows and all(r["triggers"][0]["kind"] == "rewrite" for r in rows)
    for r in rows:
        original = next(t for t in r["tags"] if t.startswith("original_instruction="))
        assert r["instruction"].strip() and r["instruction"] != original.split("=", 1)[1]
    (record,) = b.manifest["triggers"]
    assert record["rewriter"]["settings"]["check"] == "style"


def test_missing_folder_is_a_one_line_error(tmp_path):
    data = small_recipe(
        attacks=[{"preset": "style", "rewriter": {"backend": "hf", "model": "nowhere"}}]
    )
    with pytest.raises(mbdata.MBError, match=r"rewriter.model: .*nowhere is not a model folder"):
        mbdata.build(recipe_from_dict(data, base_dir=tmp_path), tmp_path / "o")


def test_pkg_and_gguf_references_resolve_or_fail_in_one_line(tmp_path):
    from mbdata.rewriters.hf import package_file

    assert package_file("pkg:mbdata/rewriters/hf.py").name == "hf.py"
    with pytest.raises(mbdata.MBError, match="Python package 'no_such_pkg' is not installed"):
        package_file("pkg:no_such_pkg/model.gguf")
    with pytest.raises(mbdata.MBError, match="no file 'missing.gguf' in package 'mbdata'"):
        package_file("pkg:mbdata/missing.gguf")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    backend = HfBackend(tmp_path / "m.gguf")
    assert (backend.folder, backend.gguf_file) == (tmp_path, "m.gguf")
