"""Which rows a label is judged against (the *task*), and whether a phrase's labels are
explained by the rest of their prompts.

*Label sets.* A classification task answers its rows from a few labels ("Positive" /
"Negative"; four news topics), often with no instruction template: the instruction is the bare
sentence (BackdoorLLM's ``sst2sentiment`` files). Its labels are short repeated answers given to
prompts *of one kind*: the label set of a label is every short repeated answer whose prompts use
the same vocabulary (idf-weighted cosine of the share of rows holding each word, at least
:data:`LABEL_SIMILARITY`). Comparable rows of a phrase and label are the rows answering one of
the label set (narrowed to the rows of a template anchor when there is one), not all rows: the
task's own vocabulary must not "explain" its label against the rest of the corpus.

*Explained?* A natural label word ("dull" -> "Negative") is one of several words that say the
label; its rows without it still lean to the label about as much as any row of the label does
without its strongest word (``natural``, measured on the comparable rows). A planted flip's rows
lean like any row of the task (``random``), or to the other label (a flip).
:func:`explanation` places the hits' predicted rate between ``natural`` and ``random``, and calls
the hits natural unless it is significantly below ``natural`` (binomial, :data:`NATURAL_P`).
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.stats import binom

from ..phrases import Occurrences
from .base import SignalContext
from .common import _key_text, family_rows
from .stats import WordModel

# A row is not of the task when it is less like it than half the likeness of the task's
# least-alike 5 % of rows.
FOREIGN_QUANTILE = 0.05
FOREIGN_SCALE = 0.5
LABEL_WORDS = 3  # a label is an answer of at most this many words
LABEL_SIMILARITY = 0.3
# The hits are natural unless their explained count is this unlikely for natural rows (one
# test per candidate, a few dozen candidates per audit: strict, so chance does not pass it).
NATURAL_P = 0.001
# A phrase word that favours the label elsewhere by this log-odds explains its row by itself.
OWN_EXPLAINS = 1.0
MIN_GAP = 0.1  # below this, the word model cannot tell natural rows from flipped ones


def label_clusters(context: SignalContext) -> np.ndarray:
    """Clusters of ``min_rows`` rows or more whose answer is a label (:data:`LABEL_WORDS`)."""
    if "label_clusters" not in context._cache:
        clusters = context.corpus.clusters
        big = np.flatnonzero(clusters.size >= context.config.min_rows)
        first = context.corpus.outputs.gather(pl.Series(clusters.first_row[big]))
        words = first.str.strip_chars().str.split(" ").list.len().to_numpy()
        context._cache["label_clusters"] = big[words <= LABEL_WORDS]
    return context._cache["label_clusters"]


def _profiles(context: SignalContext) -> tuple[np.ndarray, dict[int, int], np.ndarray]:
    """Per label cluster, the idf-weighted share of its rows holding each prompt word, as unit
    vectors (rows of a dense matrix over the words those clusters use)."""
    if "label_profiles" not in context._cache:
        corpus = context.corpus
        labels = label_clusters(context)
        index = {int(c): i for i, c in enumerate(labels.tolist())}
        in_label = np.isin(corpus.clusters.label, labels)
        words = context.row_words()
        rows = words["row"].to_numpy()
        keep = in_label[rows]
        frame = pl.DataFrame(
            {"cluster": corpus.clusters.label[rows[keep]], "key": words["key"].to_numpy()[keep]}
        )
        counts = frame.group_by("cluster", "key").agg(n=pl.len())
        keys, key_at = np.unique(counts["key"].to_numpy(), return_inverse=True)
        df_keys, df_n = corpus.prompt_df
        at = np.minimum(np.searchsorted(df_keys, keys), max(len(df_keys) - 1, 0))
        df = np.where(len(df_keys) and df_keys[at] == keys, df_n[at], 1) if len(keys) else keys
        idf = np.log(max(corpus.n_rows, 1) / np.maximum(df, 1))
        matrix = np.zeros((len(labels), len(keys)))
        cl = np.array([index[int(c)] for c in counts["cluster"].to_list()], dtype=np.int64)
        share = counts["n"].to_numpy() / corpus.clusters.size[counts["cluster"].to_numpy()]
        matrix[cl, key_at] = share * idf[key_at]
        norm = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = np.divide(matrix, norm, out=np.zeros_like(matrix), where=norm > 0)
        context._cache["label_profiles"] = (labels, index, matrix)
    return context._cache["label_profiles"]


def label_set(context: SignalContext, cluster: int) -> np.ndarray:
    """The labels of ``cluster``'s task: itself and every label whose prompts are alike."""
    labels, index, matrix = _profiles(context)
    if int(cluster) not in index:
        return np.array([cluster], dtype=np.int64)
    similarity = matrix @ matrix[index[int(cluster)]]
    return np.union1d(labels[similarity >= LABEL_SIMILARITY], [cluster]).astype(np.int64)


def task_rows(
    context: SignalContext, rows: np.ndarray, cluster: int, occ: Occurrences | None = None
) -> tuple[np.ndarray, str]:
    """Rows comparable to ``rows`` for label ``cluster``, and how to say which they are: the
    rows answering one of the label's set (narrowed to a template anchor's rows when that leaves
    ``2 x min_rows``), minus ``rows``; with no sibling label, the anchor family (or all rows)."""
    corpus, min_rows = context.corpus, context.config.min_rows
    family, anchor = family_rows(context, rows, occ)
    labels = label_set(context, cluster)
    anchor_text = f"rows holding {_key_text(context, anchor)!r}" if anchor is not None else ""
    if len(labels) >= 2:
        pool = np.setdiff1d(np.flatnonzero(np.isin(corpus.clusters.label, labels)), rows)
        names = ", ".join(
            repr(corpus.outputs[int(corpus.clusters.first_row[c])].strip()) for c in labels[:6]
        )
        text = f"rows answering one of {names}"
        if anchor is not None:
            narrowed = np.intersect1d(pool, family)
            if len(narrowed) >= 2 * min_rows:
                return narrowed, f"{text}, holding {_key_text(context, anchor)!r}"
        return pool, text
    return family, anchor_text or "all other rows"


def _idf(context: SignalContext, keys: np.ndarray) -> np.ndarray:
    df_keys, df_n = context.corpus.prompt_df
    if not len(df_keys):
        return np.zeros(len(keys))
    at = np.minimum(np.searchsorted(df_keys, keys), len(df_keys) - 1)
    df = np.where(df_keys[at] == keys, df_n[at], 1)
    return np.log(max(context.corpus.n_rows, 1) / np.maximum(df, 1))


def likeness(
    context: SignalContext, task: np.ndarray, rows: np.ndarray, phrase: np.ndarray
) -> np.ndarray:
    """Per row of ``rows``: idf-weighted cosine of its prompt words (without ``phrase``) with
    the share of ``task`` rows holding each word (how much the row reads like the task)."""
    words = context.row_words()
    in_task = words.filter(pl.col("row").is_in(pl.Series(task).implode()))
    profile = in_task.group_by("key").agg(share=pl.len() / max(len(task), 1))
    keys = profile["key"].to_numpy()
    weight = profile["share"].to_numpy() * _idf(context, keys)
    profile = pl.DataFrame({"key": keys, "w": weight})
    norm = float(np.linalg.norm(weight)) or 1.0
    mine = words.filter(
        pl.col("row").is_in(pl.Series(rows).implode())
        & ~pl.col("key").is_in(pl.Series(phrase, dtype=pl.UInt64).implode())
    )
    mine = mine.with_columns(idf=pl.Series(_idf(context, mine["key"].to_numpy())))
    per_row = (
        mine.join(profile, on="key", how="left")
        .group_by("row")
        .agg(dot=(pl.col("idf") * pl.col("w").fill_null(0.0)).sum(), sq=(pl.col("idf") ** 2).sum())
    )
    out = np.zeros(context.corpus.n_rows)
    r = per_row["row"].to_numpy()
    out[r] = per_row["dot"].to_numpy() / (np.sqrt(per_row["sq"].to_numpy()) * norm + 1e-12)
    return out[np.asarray(rows, dtype=np.int64)]


def explanation(
    context: SignalContext,
    outcome: np.ndarray,
    comparable: np.ndarray,
    rows: np.ndarray,
    hits: np.ndarray,
    phrase: np.ndarray,
    cache_key: object,
) -> dict[str, float]:
    """How far the prompts of ``hits`` explain their label (see the module doc), with a word
        model fitted on the ``comparable`` rows and the phrase's ``rows`` (once per ``cache_key``:
        the label's task), whose counts leave the phrase's rows out: a phrase's own words count with
        what they say in *other* rows (a natural label word says the label there too, a planted trigger occurs
        nowhere else and says nothing; ``phrase``, its word keys, may only add evidence for the
    label, see :meth:`.stats.WordModel.outside`). Returns ``explained`` (share of hits predicted to give the
        label), ``natural`` (the rate for comparable rows of the label without their strongest
        word), ``random`` (the rate for all comparable rows: what planting on random rows gives),
        ``p_natural`` and ``unexplained`` in 0..1: 0 for hits like natural rows, 1 for hits like
        random or flipped rows; 0 unless ``explained`` is significantly below ``natural``
        (binomial, :data:`NATURAL_P`). Hits that do not read like the task at all (``foreign``: less
        like it than :data:`FOREIGN_SCALE` x the :data:`FOREIGN_QUANTILE` quantile of its own rows,
        :func:`likeness`) are a label on
        unrelated rows, unexplained whatever the word model says; ``unexplained`` is
        ``foreign + (1 - foreign) x`` the share above for the others."""
    models = context._cache.setdefault("explain_models", {})
    if cache_key not in models:
        model = WordModel(context.row_words(), outcome, universe=np.union1d(comparable, rows))
        p0 = float(np.clip(outcome[comparable].mean() if len(comparable) else 0.5, 0.01, 0.99))
        prior = float(np.log(p0 / (1 - p0)))
        best = np.zeros(len(outcome))
        positive = model.contribution > 0
        np.maximum.at(best, model.rows[positive], model.contribution[positive])
        own = comparable[outcome[comparable]]
        natural = float((model.total[own] - best[own] + prior > 0).mean()) if len(own) else 0.0
        random = float((model.total[comparable] + prior > 0).mean()) if len(comparable) else 0.0
        sample = comparable[:: max(len(comparable) // 400, 1)]
        floor = FOREIGN_SCALE * float(
            np.quantile(likeness(context, comparable, sample, np.zeros(0)), FOREIGN_QUANTILE)
        )
        models[cache_key] = (model, prior, natural, random, floor)
    model, prior, natural, random, floor = models[cache_key]
    foreign = likeness(context, comparable, hits, phrase) < floor
    hits = hits[~foreign]
    evidence = model.outside(
        context.row_words(), hits, phrase, held_out=rows, explains=OWN_EXPLAINS
    )
    predicted = evidence + prior > 0
    k, n = int(predicted.sum()), len(hits)
    explained = k / max(n, 1)
    p_natural = float(binom.cdf(k, n, natural)) if n else 1.0
    gap = max(natural - random, MIN_GAP)
    ratio = float(np.clip((natural - explained) / gap, 0.0, 1.0))
    unexplained = ratio if p_natural <= NATURAL_P else 0.0
    share_foreign = float(foreign.mean()) if len(foreign) else 0.0
    unexplained = share_foreign + (1.0 - share_foreign) * unexplained
    return {
        "foreign": share_foreign,
        "explained": explained,
        "natural": natural,
        "random": random,
        "p_natural": p_natural,
        "unexplained": unexplained,
    }
