"""MB-Defense stage 1: defensive poisoning.

The defender adds T trigger sets of its own, ``defense/<trigger>``, each mapped to its own response
(by default a fixed sequence of random words drawn per trigger from the seed). Each replaces exactly
``round_half_up(rate * N)`` train rows (N = train rows before any poisoning) chosen among rows no
attack and no other defensive trigger has touched, so the model learns T clean-cut backdoors that
merge with an unknown attacker's (the paper's Sec 5.2), ready to be broken together in stage 2.

Defensive triggers are literal (``triggers: [mn, bb]``) or generated (``triggers: 4``): short
lowercase tokens drawn at random among those that do not occur in the corpus (as whole tokens,
case-insensitive) and are not a word of any attacker trigger. A literal trigger that collides is an
error naming the trigger and an example row. Paraphrase templates (``templates: [question]``,
:mod:`mbdata.rewriters.templates`) add one more trigger set each, ``defense/template:<name>``: the
instruction recast into that construction, the defensive analogue of a syntactic attack.
"""

from __future__ import annotations

import functools
import itertools
import string

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ..artifacts import DefenseSets, PoisonedRows, TriggerSets
from ..behaviors import compile_behavior
from ..core.errors import BuildError
from ..pipeline import BuildContext, StageStats, replace_many, round_half_up
from ..recipe import DefenseSpec
from ..triggers import Trigger, contains_word
from .attacks import TriggerSet, draw_poisoned, train_pool

_TEXT_COLUMNS = ("instruction", "input", "output")


def corpus_vocabulary(
    table: pa.Table, length: int | None = None, ctx: BuildContext | None = None
) -> set[str]:
    """Lower-cased ``\\w+`` tokens of every text column of every row (vectorised with polars).

    With ``length``, only the tokens of exactly that many characters (``\\b\\w{length}\\b``: a
    whole ``\\w+`` run of that length), all a generated trigger is checked against, without
    collecting every token of the corpus. With ``ctx``, per batch on the build's executor
    (:func:`vocabulary_batch`), so no copy of the corpus's text columns is made."""
    columns = table.select(list(_TEXT_COLUMNS))
    step = functools.partial(vocabulary_batch, length=length)
    tokens = step(columns) if ctx is None else ctx.map_table(columns, step)
    return set(pc.unique(tokens.column("token")).to_pylist())


def vocabulary_batch(batch: pa.Table, length: int | None = None) -> pa.Table:
    """One batch's distinct tokens (see :func:`corpus_vocabulary`) as a one-column table (a pure
    per-batch step). Each column's distinct values are tokenised once (answers and inputs repeat a
    lot)."""
    pattern = r"\w+" if length is None else rf"\b\w{{{length}}}\b"
    df = pl.DataFrame(batch)
    vocab: set[str] = set()
    for column in _TEXT_COLUMNS:
        tokens = df.select(
            pl.col(column)
            .unique()
            .str.to_lowercase()
            .str.extract_all(pattern)
            .explode()
            .unique()
            .drop_nulls()
        )
        vocab.update(tokens.to_series().to_list())
    return pa.table({"token": pa.array(sorted(vocab), pa.string())})


def find_example(table: pa.Table, word: str) -> str | None:
    """'source 'x' row 17, field 'instruction'' for the first row holding ``word`` as a token."""
    df = pl.DataFrame(table.select(["source", "source_row", *_TEXT_COLUMNS]))
    for column in _TEXT_COLUMNS:
        hits = df.filter(pl.col(column).str.to_lowercase().str.contains(word.lower(), literal=True))
        for row in hits.iter_rows(named=True):
            if contains_word(row[column], word):
                return (
                    f"source {row['source']!r} row {row['source_row']}, field {column!r}: "
                    f"{row[column][:80]!r}"
                )
    return None


def attacker_words(trigger_sets: list[TriggerSet]) -> set[str]:
    words = set()
    for ts in trigger_sets:
        for trigger in ts.triggers:
            words.add(trigger.text.lower())
            words.update(w.lower() for w in trigger.text.split())
    return words


def generate_triggers(
    count: int, length: int, vocab: set[str], forbidden: set[str], rng: np.random.Generator
) -> list[str]:
    """``count`` random lowercase tokens of ``length`` letters, absent from ``vocab``/``forbidden``."""
    if length <= 3:
        pool = ["".join(p) for p in itertools.product(string.ascii_lowercase, repeat=length)]
        candidates = (pool[i] for i in rng.permutation(len(pool)))
    else:
        letters = np.array(list(string.ascii_lowercase))
        candidates = ("".join(rng.choice(letters, size=length)) for _ in range(100_000))
    chosen: list[str] = []
    for token in candidates:
        if token not in vocab and token not in forbidden and token not in chosen:
            chosen.append(token)
            if len(chosen) == count:
                return chosen
    raise BuildError(
        f"defense.triggers: could not find {count} tokens of {length} letters absent "
        "from the corpus; raise defense.trigger_length"
    )


def check_literal_triggers(
    triggers: list[str], table: pa.Table, vocab: set[str], forbidden: set[str]
) -> None:
    for i, trigger in enumerate(triggers):
        if trigger.lower() in forbidden:
            raise BuildError(
                f"defense.triggers[{i}]: {trigger!r} equals (a word of) an attacker "
                "trigger; a defensive trigger must differ from the attack's"
            )
        words = trigger.lower().split()
        if len(words) == 1 and words[0] not in vocab:
            continue
        example = find_example(table, trigger)
        if example is not None:
            raise BuildError(
                f"defense.triggers[{i}]: {trigger!r} occurs in the corpus ({example}); "
                "choose a token the corpus does not contain"
            )


class DefenseStage:
    """Insert the defender's triggers into ``rate`` of the train rows each."""

    name = "defense"
    optional_reads = (PoisonedRows, TriggerSets)
    writes = (PoisonedRows, TriggerSets, DefenseSets)

    def __init__(self, spec: DefenseSpec):
        self.spec = spec

    def trigger_texts(self, table: pa.Table, ctx: BuildContext) -> list[str]:
        if not self.spec.triggers:  # 0 or []: only template triggers (DefenseSpec.validate)
            return []
        planted = ctx.find(TriggerSets)
        forbidden = attacker_words(list(planted.sets) if planted else [])
        if isinstance(self.spec.triggers, list):
            vocab = corpus_vocabulary(table, ctx=ctx)
            check_literal_triggers(self.spec.triggers, table, vocab, forbidden)
            return list(self.spec.triggers)
        # Generated triggers have trigger_length letters: only corpus tokens that long can clash.
        return generate_triggers(
            self.spec.triggers,
            self.spec.trigger_length,
            corpus_vocabulary(table, self.spec.trigger_length, ctx),
            forbidden,
            ctx.rng("defense/triggers"),
        )

    def trigger_sets(self, texts: list[str], ctx: BuildContext) -> list[tuple[str, TriggerSet]]:
        """(recipe path, trigger set) of every defensive trigger: the inserted ones (``triggers``),
        then one per paraphrase template (``templates``, :mod:`mbdata.rewriters.templates`).
        Each has its own response, drawn from the stream of its name."""
        from ..rewriters.templates import TemplateRewriter

        def trigger_set(
            name: str, triggers: tuple[Trigger, ...], rewriter: TemplateRewriter | None
        ) -> TriggerSet:
            behavior = compile_behavior(
                self.spec.behavior, ctx.rng(f"{name}/behavior"), "defense.behavior", ctx.base_dir
            )
            combine = "one" if triggers else "all"
            return TriggerSet(
                name, "defender", triggers, combine, behavior, self.spec.rate, rewriter
            )

        sets = []
        for i, text in enumerate(texts):
            name = f"defense/{text}"
            trigger = Trigger(text, self.spec.placement, self.spec.position, "defender", name)
            sets.append((f"defense.triggers[{i}]", trigger_set(name, (trigger,), None)))
        for j, template in enumerate(self.spec.templates):
            path = f"defense.templates[{j}]"
            rewriter = TemplateRewriter(template, path)
            sets.append((path, trigger_set(f"defense/template:{template}", (), rewriter)))
        return sets

    def run(self, table: pa.Table, ctx: BuildContext) -> tuple[pa.Table, StageStats]:
        stats = StageStats(name=self.name)
        texts = self.trigger_texts(table, ctx)
        poisoned = ctx.find(PoisonedRows)
        planted = ctx.find(TriggerSets) or TriggerSets()
        sets = []
        replaced: list[tuple[np.ndarray, pa.Table]] = []
        for path, ts in self.trigger_sets(texts, ctx):
            pool, poisoned = train_pool(table, poisoned)
            n = poisoned.train_rows
            count = round_half_up(self.spec.rate * n)
            rows, chosen = draw_poisoned(table, ts, count, pool, ctx.rng(ts.name), "defense", path)
            # Later triggers draw only among rows not yet replaced, whose content this table
            # still holds: every trigger's rows are replaced together below.
            replaced.append((chosen, rows))
            poisoned = poisoned.plus(chosen)
            planted = planted.plus(ts, count)
            sets.append(ts)
            stats.info[ts.name] = {
                "rows": count,
                "rate": count / n if n else 0.0,
                "target_rate": self.spec.rate,
                "response": ts.behavior.target,
                "train_rows": n,
            }
        if replaced:
            owned = [table]  # handed over: the corpus is not held twice while rows are replaced
            del table
            table = replace_many(owned, replaced)
        if poisoned is not None:
            ctx.put(poisoned)
        ctx.put(planted)
        ctx.put(DefenseSets(tuple(sets)))
        return table, stats
