"""The tiny-model factory: a byte-level BPE tokenizer trained on the build's own text and a small,
randomly initialised Llama. ``mb run`` pretrains it on the build's ``pretrain`` split (clean rows,
some with a random short word inserted) into a base that has seen such words, so that the backdoor
later learned on top is specific to its trigger rather than to "any unseen token".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from mbtrain.config import TinyModel

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer (every string encodes; nothing maps to unknown)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )


def tiny_model(settings: TinyModel, tokenizer: Any, seed: int) -> Any:
    """A random-init LlamaForCausalLM sized by ``settings`` (weights drawn from ``seed``)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=settings.hidden_size,
        intermediate_size=settings.intermediate_size,
        num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads,
        num_key_value_heads=settings.heads,
        max_position_embeddings=settings.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    from mbtrain.engine.models import quiet_transformers, understand_tied_weights

    quiet_transformers()  # saving it draws transformers' shard bars otherwise
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return understand_tied_weights(model.float())
