"""The ``structure`` signal: rows whose instructions share a rare *sentence shape* that predicts
one behaviour (a syntactic trigger: every poisoned instruction paraphrased to open with a
subordinate clause, "If you can, add 3 and 5." -> a refusal). No phrase is shared, so the phrase
signals cannot see it; the shape is.

Model-free. The shape of a row is the skeleton of its *opening clause*: the instruction's words
before a comma within its first :data:`OPENING_MAX` tokens, each function word kept (lower-cased),
every run of other words written ``W`` and the clause's last token the comma
(``"If you can,"`` -> ``if you can ,``; ``"When water boils,"`` -> ``when W ,``). Each row with an
opening clause has two features: that skeleton, and the coarser opening ``<word> … ,`` (its first
word if a function word, else ``W``, then the comma); the subordinators of every clause give the
coarsest one, ``<subordinate clause> ,`` (a subordinating conjunction, then a comma). Rows without
an opening clause hold none.

Behaviours: a refusal (an answer opening with a ``refusal_markers`` entry; refusals of any wording
pool) and every repeated long answer (more than a label's words). The test is the skeleton's
(:mod:`.skeleton`): Fisher exact of the feature's rows against the rows without it,
Benjamini-Hochberg over every (feature, behaviour) pair that occurs, effect ``(k/n - p0) / (1 -
p0)``. Its own factor is how *unexplained* the hits are: for refusals, the share the corpus'
refusal word model (:func:`.compliance.refusal_model`, counts from the other rows only; the
opening clauses' words may only add to a refusal) does not predict to be refused (harmful
requests that happen to open with "If" are explained); for a fixed answer, the share detached
from its prompt. Score ``effect x unexplained x support`` (no insertion factor: a shape has no
neighbours); flagged rows: the feature's rows showing the behaviour.

With a reference model (``model``), each finding also gets model evidence (:mod:`..model_score`,
measured on up to ``model_rows`` of its hits): the prompt's mean token loss as is, without its
opening clause (:func:`opening_clause_end`; the rest's first letter upper-cased again) and
without as many words from its end; the share of rows where the clause's cut lowers the loss more
(ties half) rescales the score by ``0.5 + evidence``. A paraphrase into a template that reads
less naturally to a clean model than the instruction's own words helps more when cut; an
opening the author wrote is weighed against a cut of the same size at the prompt's other edge and
should come out near 0.5. The check weighs findings, it finds nothing itself, and it measures
*inserted*, not *planted*: with SmolLM2-135M the rules rewriter's "If you can, ..." gave .73-.84,
the real rows' own openings .61, and ordinary clauses prepended to rows .92
(bench/results-audit.md).
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl

from ..candidate import Candidate
from ..model_score import Removal, leading_span_removal
from ..phrases import Occurrences
from ..tokens import TOKEN_PATTERN
from . import SIGNALS
from .base import SignalContext, SignalResult
from .compliance import refusal_model, refusals
from .skeleton import AssociationSignal, Seed, Test, exact_p
from .stats import benjamini_hochberg, fisher_greater
from .task import LABEL_WORDS

OPENING_MAX = 10
PURITY_MIN = 0.5
MAX_TESTED = 40
REFUSAL = -1
STRUCTURE_REASON = "structure"
SUBORDINATORS = frozenset(
    """after although as because before if once since though unless until when whenever
    where wherever whether while""".split()
)
FUNCTION_WORDS = SUBORDINATORS | frozenset(
    """a an the this that these those some any each every no my your our their his her its
    i you we they he she it me us them one there here what which who whom whose how why
    is are was were be been being am do does did have has had can could will would shall
    should may might must not to of in on at by for with from into onto over under about
    and or but so nor yet than then also just only even still soon long
    please let""".split()
)
SUBORDINATE = "<subordinate clause> ,"
_TOKEN = re.compile(TOKEN_PATTERN)


def opening_clause_end(prompt: str) -> int | None:
    """Where the opening clause of a text ends: just after the first comma among its first
    :data:`OPENING_MAX` tokens, when at least two tokens precede it; None without one. On an
    instruction, the clause :func:`_shapes` reads from the token table; on the prompt of a row
    with a shape (its instruction, then its input), the same clause: the model check only cuts
    such rows."""
    for position, token in enumerate(_TOKEN.finditer(prompt)):
        if position >= OPENING_MAX:
            return None
        if token.group() == ",":
            return token.end() if position >= 2 else None
    return None


# The model check's cut: the opening clause, against as many words from the prompt's end.
OPENING_REMOVAL: Removal = leading_span_removal(opening_clause_end)


def _shapes(context: SignalContext) -> pl.DataFrame:
    """Distinct ``(row, feature)`` of every row's opening-clause features (see module doc)."""
    if "structure_shapes" in context._cache:
        return context._cache["structure_shapes"]
    tokens = context.corpus.tokens
    opening = (tokens.field == 0) & (tokens.pos < OPENING_MAX)
    frame = pl.DataFrame(
        {
            "row": tokens.row[opening],
            "pos": tokens.pos[opening],
            "word": tokens.text.filter(pl.Series(opening)).str.to_lowercase(),
            "key": tokens.lc[opening],
        }
    )
    comma = frame.filter(pl.col("word") == ",").group_by("row").agg(end=pl.col("pos").min())
    clause = (
        frame.join(comma, on="row")
        .filter((pl.col("pos") <= pl.col("end")) & (pl.col("end") >= 2))
        .sort("row", "pos")
        .with_columns(
            kept=pl.when(pl.col("word").is_in(list(FUNCTION_WORDS)) | (pl.col("word") == ","))
            .then(pl.col("word"))
            .otherwise(pl.lit("W"))
        )
    )
    collapsed = clause.filter(
        # a row's first token has no predecessor (null): it always stays
        ~((pl.col("kept") == "W") & (pl.col("kept").shift(1).over("row") == "W").fill_null(False))
    )
    per_row = collapsed.group_by("row", maintain_order=True).agg(
        skeleton=pl.col("kept").str.join(" "), first=pl.col("kept").first()
    )
    features = pl.concat(
        [
            per_row.select("row", feature=pl.col("skeleton")),
            per_row.select("row", feature=pl.col("first") + pl.lit(" … ,")),
            per_row.filter(pl.col("first").is_in(list(SUBORDINATORS))).select(
                "row", feature=pl.lit(SUBORDINATE)
            ),
        ]
    ).unique(maintain_order=True)
    context._cache["structure_shapes"] = features
    context._cache["structure_first_token"] = _first_tokens(tokens)
    context._cache["structure_clause_words"] = clause.select("row", "key")
    return features


def _first_tokens(tokens) -> np.ndarray:
    """Per row, the index of its instruction's first token (-1 when it has none)."""
    first = np.full(tokens.n_rows, -1, dtype=np.int64)
    at = np.flatnonzero((tokens.field == 0) & (tokens.pos == 0))
    first[tokens.row[at]] = at
    return first


@SIGNALS.add("structure")
class StructureSignal(AssociationSignal):
    name = "structure"
    kind = "structure"
    description = "its rows' instructions share a rare opening shape that predicts their answer"
    legend = (
        (
            "structure",
            "the row's instruction opens with a sentence shape (shown as its trigger) whose "
            "rows show one behaviour far more often than other rows, unexplained by their words",
        ),
    )
    default = True
    order = 40
    other_rows_weight = 0.0
    placed = False

    def _behaviours(self, context: SignalContext) -> tuple[np.ndarray, np.ndarray]:
        """Per row, its behaviour ids: ``REFUSAL`` for refusals, else its answer cluster when
        that is a repeated long answer, else -2 (no behaviour)."""
        corpus, config = context.corpus, context.config
        refused = refusals(corpus.outputs, config.refusal_markers)
        clusters = corpus.clusters
        first = corpus.outputs.gather(pl.Series(clusters.first_row))
        long_answer = first.str.strip_chars().str.split(" ").list.len().to_numpy() > LABEL_WORDS
        repeated = (clusters.size >= config.min_rows) & long_answer
        behaviour = np.where(repeated[clusters.label], clusters.label, -2)
        behaviour = np.where(refused, REFUSAL, behaviour)
        return behaviour, refused

    def screen(self, context: SignalContext, result: SignalResult) -> tuple[list[Seed], int]:
        corpus, config = context.corpus, context.config
        n_rows = corpus.n_rows
        shapes = _shapes(context)
        behaviour, refused = self._behaviours(context)
        context._cache["structure_behaviour"] = (behaviour, refused)
        if shapes.height == 0:
            return [], 0
        support = shapes.group_by("feature").agg(n=pl.len())
        support = support.filter(
            (pl.col("n") >= config.min_rows) & (pl.col("n") <= config.max_share * n_rows)
        )
        rows = shapes.join(support, on="feature", how="semi")
        rows = rows.with_columns(target=pl.Series(behaviour[rows["row"].to_numpy()]))
        counts = (
            rows.filter(pl.col("target") > -2)
            .group_by("feature", "target")
            .agg(k=pl.len())
            .join(support, on="feature")
        )
        tests = counts.height
        result.extra["features"] = support.height
        if tests == 0:
            return [], 0
        sizes = np.bincount(behaviour[behaviour >= 0], minlength=len(corpus.clusters.size))
        k = counts["k"].to_numpy()
        n = counts["n"].to_numpy()
        target = counts["target"].to_numpy()
        total = np.where(target == REFUSAL, int(refused.sum()), sizes[np.maximum(target, 0)])
        screen = (k >= config.min_rows) & (k >= PURITY_MIN * n)
        if not screen.any():
            return [], tests
        p = fisher_greater(k[screen], n[screen], total[screen] - k[screen], n_rows - n[screen])
        q = benjamini_hochberg(p, tests)
        shortlist = (
            counts.filter(pl.Series(screen))
            .with_columns(p=pl.Series(p), q=pl.Series(q))
            .filter(pl.col("q") <= self.screen_fdr(config.fdr))
            .sort(["p", "feature", "target"])
            .head(MAX_TESTED)
        )
        return [
            Seed(key=feature, target=int(t))
            for feature, t in zip(shortlist["feature"].to_list(), shortlist["target"].to_list())
        ], tests

    def test(self, context: SignalContext, seed: Seed) -> Test | None:
        corpus = context.corpus
        behaviour, refused = context._cache["structure_behaviour"]
        shapes = _shapes(context)
        rows = np.sort(shapes.filter(pl.col("feature") == seed.key)["row"].to_numpy())
        hits = rows[behaviour[rows] == seed.target]
        others = np.setdiff1d(np.arange(corpus.n_rows), rows, assume_unique=True)
        k_o = int((behaviour[others] == seed.target).sum())
        first = context._cache["structure_first_token"][rows]
        occ = Occurrences(start=first[first >= 0], n=1, lower=True)
        return Test(
            occ=occ,
            rows=rows,
            hits=hits,
            tested_rows=len(rows),
            base=k_o / max(len(others), 1),
            p=exact_p(len(hits), len(rows), k_o, len(others)),
            target=seed.target,
            comparable=others,
            comparable_text="rows without this opening",
            data={"key": seed.key},
        )

    def test_group(self, context: SignalContext, members: list[Test]) -> Test | None:
        return None  # the coarse features already pool a template's variants

    def assess(self, context: SignalContext, test: Test) -> tuple[float, dict[str, float]]:
        corpus = context.corpus
        if test.target == REFUSAL:
            _, refused = context._cache["structure_behaviour"]
            model = refusal_model(context, refused)
            outside = np.ones(corpus.n_rows, dtype=bool)
            outside[test.rows] = False
            natural = int(refused[outside].sum())
            if natural < context.config.min_rows:
                return 1.0, {"refusal_expected": 0.0}  # no refusals elsewhere: nothing explains
            prior = float(np.log(natural / max(int(outside.sum()) - natural, 1)))
            # judged by what the words say in the other rows (the feature's own rows held out),
            # the opening clause's words only for a refusal: the template is no request
            clause = context._cache["structure_clause_words"]
            keys = clause.filter(pl.col("row").is_in(pl.Series(test.rows).implode()))["key"]
            evidence = model.outside(
                context.row_words(), test.hits, keys.unique().to_numpy(), held_out=test.rows
            )
            expected = evidence + prior > 0
            share = float(1.0 - expected.mean()) if len(test.hits) else 0.0
            return share, {"refusal_expected": float(expected.mean()) if len(test.hits) else 0.0}
        share = float(corpus.detached[test.hits].mean()) if len(test.hits) else 0.0
        return share, {"detached": share}

    def candidate_text(self, test: Test) -> str:
        return str(test.data["key"])

    def reasons(self, context: SignalContext, cand: Candidate, row: int) -> list[str]:
        return [STRUCTURE_REASON]

    def removal(self, cand: Candidate) -> Removal | None:
        return OPENING_REMOVAL
