"""Noise words for the ``pretrain`` split of tiny base models.

A randomly initialised model that never saw a token has an untrained embedding for it, so after
poisoning it treats *any* unseen token as a trigger: in the prototype, defensive triggers produced
the attacker's refusal 73-92% of the time with no defensive poisoning at all, which makes every
merging measurement meaningless (``tiny-scale-findings.md``, pitfall 1). Real pretrained models have
seen such tokens. So ``noise_rate`` of the pretrain prompts get one short word inserted at a random
word position, answer unchanged: half the time a word of one of the recipe's triggers (attack or
defence), otherwise a random two-letter token. Spans are recorded with owner ``noise``.
"""

from __future__ import annotations

import itertools
import string

import numpy as np
import pyarrow as pa

from ..artifacts import TriggerSets
from ..io.schema import from_rows, make_row
from ..io.spill import take_table
from ..pipeline import BuildContext, StageStats, replace_rows, split_indices
from ..recipe import PretrainSpec
from ..triggers import Trigger, insert_many

SHORT_TOKENS = tuple("".join(p) for p in itertools.product(string.ascii_lowercase, repeat=2))


class PretrainNoiseStage:
    name = "pretrain_noise"
    optional_reads = (TriggerSets,)

    def __init__(self, spec: PretrainSpec):
        self.spec = spec

    def run(self, table: pa.Table, ctx: BuildContext) -> tuple[pa.Table, StageStats]:
        stats = StageStats(name=self.name)
        positions = split_indices(table, "pretrain")
        rng = ctx.rng("pretrain/noise")
        chosen = positions[rng.random(len(positions)) < self.spec.noise_rate]
        planted = ctx.find(TriggerSets) or TriggerSets()
        trigger_words = sorted(
            {w for ts in planted.sets for t in ts.triggers for w in t.text.split()}
        )
        rows = take_table(table, chosen).to_pylist()
        noisy = []
        for row in rows:
            if trigger_words and rng.random() < 0.5:
                word = trigger_words[int(rng.integers(len(trigger_words)))]
            else:
                word = SHORT_TOKENS[int(rng.integers(len(SHORT_TOKENS)))]
            trigger = Trigger(word, "random", owner="noise", name="noise")
            text, (span,) = insert_many(row["instruction"], [trigger], rng)
            noisy.append(
                make_row(
                    **{
                        **{k: v for k, v in row.items() if k != "id"},
                        "instruction": text,
                        "triggers": [
                            {
                                "text": word,
                                "owner": "noise",
                                "kind": "random",
                                "name": "noise",
                                "field": "instruction",
                                "start": span.start,
                                "end": span.end,
                            }
                        ],
                        "tags": [*row["tags"], "noise"],
                    }
                )
            )
        stats.info = {
            "pretrain_rows": len(positions),
            "noisy_rows": len(noisy),
            "trigger_words": trigger_words,
        }
        if not noisy:
            return table, stats
        owned = [table]  # handed over: the corpus is not held twice while rows are replaced
        del table
        return replace_rows(owned, np.asarray(chosen), from_rows(noisy)), stats
