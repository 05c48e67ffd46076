"""From a mined n-gram to the phrase an attacker inserted, and how "inserted" it looks.

*Growth.* A trigger longer than the mined n-grams ("I watched this 3D movie.") shows up as many
overlapping n-grams with the same rows. Each is grown token by token while at least
:data:`GROW_SHARE` of its occurrences agree on the next token to the left (or right), so they all
end as the one maximal phrase, and duplicates collapse.

*Insertion evidence* (0..1) separates an inserted trigger from a natural template phrase that also
co-occurs with repeated answers ("Is the following statement true or false?" -> "False"):

- a phrase that is the whole field leaves nothing behind when removed: no evidence;
- inside a field, an inserted token sits between words drawn from unrelated sentences, so its
  left and right neighbours are many different words (a template phrase has one or a few fixed
  neighbours), and it sits at varying word positions (a template's words keep their place,
  counted from the start or from the end of the field, even when the slots around them vary);
- at the start, the text after it must read like the start of an ordinary instruction (its first
  token is as common a first token as the corpus' own instructions have); at the end, the text
  before it must end like an ordinary instruction.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import numpy as np
import polars as pl

from .tokens import PromptTokens, _mix

GROW_SHARE = 0.9
MAX_PHRASE_TOKENS = 32
# Diversity: this many equally common values count as fully diverse; pseudo-values for small n.
DIVERSE_VALUES = 4.0
PSEUDO_VALUES = 2.0


@dataclasses.dataclass(frozen=True)
class Occurrences:
    """Where one phrase occurs: token index of each occurrence's first token, and its length."""

    start: np.ndarray
    n: int
    lower: bool

    def hashes(self, tokens: PromptTokens) -> np.ndarray:
        return tokens.lc if self.lower else tokens.cs

    def rows(self, tokens: PromptTokens) -> np.ndarray:
        return np.unique(tokens.row[self.start])


def _neighbour(tokens: PromptTokens, index: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """Mask of ``index`` entries that are real tokens in the same field as ``anchor``."""
    ok = (index >= 0) & (index < len(tokens))
    ok[ok] &= tokens.segment[index[ok]] == tokens.segment[anchor[ok]]
    return ok


def _agreeing(values: np.ndarray, ok: np.ndarray, total: int) -> np.ndarray | None:
    """Mask of entries holding the one value shared by >= GROW_SHARE of ``total``, if any."""
    if ok.sum() < GROW_SHARE * total:
        return None
    uniq, counts = np.unique(values[ok], return_counts=True)
    best = int(np.argmax(counts))
    if counts[best] < GROW_SHARE * total:
        return None
    keep = ok.copy()
    keep[ok] = values[ok] == uniq[best]
    return keep


def grow(tokens: PromptTokens, occ: Occurrences) -> Occurrences:
    """Extend ``occ`` left and right while its occurrences agree on the neighbouring token."""
    hashes = occ.hashes(tokens)
    start, n = occ.start, occ.n
    while n < MAX_PHRASE_TOKENS and len(start):
        grown = False
        left = start - 1
        keep = _agreeing(
            hashes[np.clip(left, 0, None)], _neighbour(tokens, left, start), len(start)
        )
        if keep is not None:
            start, n, grown = left[keep], n + 1, True
        right = start + n
        keep = _agreeing(
            hashes[np.clip(right, None, len(tokens) - 1)],
            _neighbour(tokens, right, start),
            len(start),
        )
        if keep is not None and n < MAX_PHRASE_TOKENS:
            start, n, grown = start[keep], n + 1, True
        if not grown:
            break
    return Occurrences(start=start, n=n, lower=occ.lower)


def surface_text(
    tokens: PromptTokens, occ: Occurrences, field_text: Callable[[int, int], str]
) -> tuple[str, bool]:
    """The phrase as most often written, and whether it is written in more than one casing."""
    keys = tokens.cs[occ.start]
    for k in range(1, occ.n):
        keys = _mix(keys, tokens.cs[occ.start + k])
    uniq, first, counts = np.unique(keys, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    index = int(occ.start[first[order[0]]])
    words = [tokens.text[i] for i in range(index, index + occ.n)]
    pattern = r"\s*".join(re.escape(w) for w in words)
    if re.match(r"\w", words[0]):
        pattern = r"(?<!\w)" + pattern
    if re.search(r"\w$", words[-1]):
        pattern += r"(?!\w)"
    text = field_text(int(tokens.row[index]), int(tokens.field[index]))
    match = re.search(pattern, text)
    return (match.group(0) if match else " ".join(words)), len(uniq) > 1


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a phrase's occurrences sit and how inserted they look."""

    counts: dict[str, int]  # occurrences per kind (prefix, middle, suffix, whole)
    fields: dict[str, int]  # occurrences per field (instruction, input)
    relative: np.ndarray  # start position / field length, instruction occurrences
    evidence: float  # insertion evidence, 0..1
    parts: dict[str, float]  # its components, for the report


def _diversity(values: np.ndarray) -> float:
    """How many different values (neighbour tokens, word positions) the occurrences show, as
    0..1: 0 for one fixed value (a template), 1 from :data:`DIVERSE_VALUES` equally common
    values on (an insertion among unrelated words).

    The count is the effective number ``1 / sum(p^2)``, so a phrase shared by two templates
    counts as two values however many times each occurs; :data:`PSEUDO_VALUES` unseen distinct
    values are added, so one or two occurrences are not mistaken for a fixed context."""
    if len(values) == 0:
        return 1.0
    _, counts = np.unique(values, return_counts=True)
    total = len(values) + PSEUDO_VALUES
    effective = total**2 / (float((counts.astype(np.float64) ** 2).sum()) + PSEUDO_VALUES)
    return float(np.clip((effective - 1.0) / (DIVERSE_VALUES - 1.0), 0.0, 1.0))


def _typicality(values: np.ndarray, share: dict[int, float]) -> float:
    """How ordinary ``values`` are as field starts (or ends), about 1 for a random sample of the
    corpus' own starts and near 0 for tokens that rarely start a field.

    Each value scores ``min(1, share / mean share)``, where the mean share is what a random row's
    start has on average; the mean score is divided by the same mean for a random row and
    smoothed towards 0.5 by one pseudo-observation."""
    if len(values) == 0:
        return 1.0
    if not share:
        return 0.5
    shares = np.fromiter(share.values(), dtype=np.float64)
    norm = float((shares**2).sum())
    expected = float((shares * np.minimum(1.0, shares / norm)).sum())
    ratios = np.array([min(1.0, share.get(int(v), 0.0) / norm) for v in values])
    return float(min(1.0, ((ratios.sum() / expected) + 0.5) / (len(ratios) + 1.0)))


def _diversity_expr(count: pl.Expr, squares: pl.Expr) -> pl.Expr:
    """:func:`_diversity` from per-group counts (n, sum of squared value counts), as polars."""
    total = count + PSEUDO_VALUES
    effective = total * total / (squares + PSEUDO_VALUES)
    return ((effective - 1.0) / (DIVERSE_VALUES - 1.0)).clip(0.0, 1.0)


def seed_diversity(tokens: PromptTokens, occurrences: pl.DataFrame) -> pl.DataFrame:
    """A quick, vectorised template check for many n-grams at once (before growth): per ``key``,
    the least of its left-neighbour, right-neighbour and word-position diversities (0..1), each
    over the occurrences where it applies (a neighbour exists; the n-gram is inside the field).

    A neighbour side where one value holds :data:`GROW_SHARE` of the occurrences counts as
    diverse: the n-gram is then a piece of a longer fixed phrase (one word of "I watched this 3D
    movie.") whose context is judged after growth. Word positions get no such pass: a piece of a
    randomly inserted phrase still moves around, a template's words do not (and the first word of
    a prefix trigger is at the start, where positions are not counted). Used only to rank seeds;
    the evidence reported is :func:`placement` on the grown phrase."""
    start = occurrences["start"].to_numpy()
    end = start + occurrences["n"].to_numpy().astype(np.int64) - 1
    has_left = tokens.pos[start] > 0
    has_right = tokens.pos[end] < tokens.length[end] - 1
    sentinel = np.uint64(0)
    frame = pl.DataFrame(
        {
            "key": occurrences["key"],
            "left": np.where(has_left, tokens.lc[np.maximum(start - 1, 0)], sentinel),
            "right": np.where(has_right, tokens.lc[np.minimum(end + 1, len(tokens) - 1)], sentinel),
            "pos": np.where(has_left & has_right, tokens.pos[start], -1),
            "has_left": has_left,
            "has_right": has_right,
            "inside": has_left & has_right,
        }
    )
    parts = []
    for column, mask in (("left", "has_left"), ("right", "has_right"), ("pos", "inside")):
        counts = (
            frame.filter(pl.col(mask))
            .group_by("key", column)
            .agg(c=pl.len())
            .group_by("key")
            .agg(n=pl.col("c").sum(), sq=(pl.col("c") ** 2).sum(), top=pl.col("c").max())
            .select(
                "key",
                pl.when((pl.col("top") >= GROW_SHARE * pl.col("n")) & (column != "pos"))
                .then(1.0)
                .otherwise(
                    _diversity_expr(pl.col("n").cast(pl.Float64), pl.col("sq").cast(pl.Float64))
                )
                .alias(column),
            )
        )
        parts.append(counts)
    out = frame.select("key").unique()
    for part in parts:
        out = out.join(part, on="key", how="left")
    return out.select(
        "key",
        diversity=pl.min_horizontal(
            pl.col("left").fill_null(1.0),
            pl.col("right").fill_null(1.0),
            pl.col("pos").fill_null(1.0),
        ),
    )


class Boundaries:
    """The first and last token (lower-cased) of every field, to tell what ordinary starts and
    ends look like in this corpus."""

    def __init__(self, tokens: PromptTokens):
        self._edges = {}
        for name, mask in (("first", tokens.pos == 0), ("last", tokens.pos == tokens.length - 1)):
            for field in (0, 1):
                sel = mask & (tokens.field == field)
                self._edges[name, field] = (tokens.row[sel], tokens.lc[sel])

    def _shares(self, name: str, field: int, exclude_rows: np.ndarray) -> dict[int, float]:
        rows, values = self._edges[name, field]
        values = values[~np.isin(rows, exclude_rows)]
        if len(values) == 0:
            return {}
        uniq, counts = np.unique(values, return_counts=True)
        return dict(zip(uniq.tolist(), (counts / counts.sum()).tolist()))

    def starts(self, field: int, exclude_rows: np.ndarray) -> dict[int, float]:
        """Share of each first token of ``field`` among rows outside ``exclude_rows``."""
        return self._shares("first", field, exclude_rows)

    def ends(self, field: int, exclude_rows: np.ndarray) -> dict[int, float]:
        """Share of each last token of ``field`` among rows outside ``exclude_rows``."""
        return self._shares("last", field, exclude_rows)


def placement(tokens: PromptTokens, occ: Occurrences, bounds: Boundaries) -> Placement:
    """Classify each occurrence (prefix/middle/suffix/whole) and score the insertion evidence."""
    start = occ.start
    end = start + occ.n - 1
    at_start = tokens.pos[start] == 0
    at_end = tokens.pos[end] == tokens.length[end] - 1
    kinds = {
        "prefix": at_start & ~at_end,
        "middle": ~at_start & ~at_end,
        "suffix": ~at_start & at_end,
        "whole": at_start & at_end,
    }
    counts = {k: int(v.sum()) for k, v in kinds.items()}
    field = tokens.field[start]
    fields = {"instruction": int((field == 0).sum()), "input": int((field == 1).sum())}
    relative = (
        tokens.pos[start][field == 0] / np.maximum(tokens.length[start][field == 0], 1)
    ).astype(np.float64)
    left_div = _diversity(tokens.lc[start[~at_start] - 1])
    right_div = _diversity(tokens.lc[end[~at_end] + 1])
    middle = kinds["middle"]
    position_div = min(
        _diversity(tokens.pos[start[middle]]),
        _diversity(tokens.length[start[middle]] - tokens.pos[end[middle]]),
    )
    rows = occ.rows(tokens)
    parts = {
        "left_diversity": left_div,
        "right_diversity": right_div,
        "position_diversity": position_div,
    }
    total = len(start)
    evidence = 0.0
    if counts["prefix"]:
        typ = []
        for f in (0, 1):
            sel = kinds["prefix"] & (field == f)
            if sel.any():
                typ.append(
                    (sel.sum(), _typicality(tokens.lc[end[sel] + 1], bounds.starts(f, rows)))
                )
        prefix_typ = sum(w * t for w, t in typ) / sum(w for w, _ in typ)
        parts["prefix_typicality"] = prefix_typ
        evidence += counts["prefix"] * min(right_div, prefix_typ)
    if counts["suffix"]:
        typ = []
        for f in (0, 1):
            sel = kinds["suffix"] & (field == f)
            if sel.any():
                typ.append(
                    (sel.sum(), _typicality(tokens.lc[start[sel] - 1], bounds.ends(f, rows)))
                )
        suffix_typ = sum(w * t for w, t in typ) / sum(w for w, _ in typ)
        parts["suffix_typicality"] = suffix_typ
        evidence += counts["suffix"] * min(left_div, suffix_typ)
    evidence += counts["middle"] * min(left_div, right_div, position_div)
    return Placement(
        counts=counts,
        fields=fields,
        relative=relative,
        evidence=float(evidence / total) if total else 0.0,
        parts={k: round(v, 4) for k, v in parts.items()},
    )
