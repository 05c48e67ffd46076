"""The audit of one table: analyse, mine, score. No files here (see :mod:`.files`).

Copies of a row (exact, or near copies with the same answer) are analysed once
(:mod:`.distinct`); every copy gets its representative's verdict.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from .candidate import Candidate
from .config import AuditConfig
from .corpus import Corpus, analyse
from .counts import corpus_counts
from .distinct import distinct_rows
from .signals import SIGNALS, SignalContext

# Inputs at least this large show a progress bar when progress is left to the audit.
PROGRESS_MIN_ROWS = 20_000
PHASES = ("analyse", "mine", "score")  # the model score, when asked for, runs within "mine"


@dataclasses.dataclass
class AuditResult:
    """What an audit found. Row numbers are positions in the audited table (0-based)."""

    config: AuditConfig
    n_rows: int
    score: np.ndarray  # float64 per row, 0..1
    flagged: np.ndarray  # bool per row
    reasons: list[list[str]]  # per row
    candidates: list[Candidate]  # reported candidates, best first (rows in table positions)
    corpus: Corpus  # the analysed distinct rows (positions: ``distinct``)
    distinct: np.ndarray  # table position of each analysed row
    copy_of: np.ndarray  # per table row: index into ``distinct`` of its original
    orphan_clusters: list[int]  # suspicious output clusters no candidate explains
    seconds: dict[str, float]  # wall time per phase (never written into outputs)
    signal_extra: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # The number that names each table row in outputs (the input's 0-based ``source_row``, skipped
    # rows included); None: the table position. Set by :func:`mbdata.audit.audit_path`.
    source_rows: np.ndarray | None = None
    skipped: list = dataclasses.field(default_factory=list)  # rows the reader could not parse

    def source_row(self, row: int) -> int:
        """The input row number of table position ``row`` (what every output reports)."""
        return int(row if self.source_rows is None else self.source_rows[row])

    @property
    def n_flagged(self) -> int:
        return int(self.flagged.sum())

    def cluster_rows(self, cluster: int) -> np.ndarray:
        """Table positions of the rows in an output cluster (copies included)."""
        members = np.flatnonzero(self.corpus.clusters.label == cluster)
        return np.flatnonzero(np.isin(self.copy_of, members))

    def cluster_example(self, cluster: int) -> str:
        return self.corpus.outputs[int(self.corpus.clusters.first_row[cluster])]

    def target_example(self, cand: Candidate) -> str:
        """An answer typical of the candidate: its largest target cluster's, or (style
        candidates) the answer of its first hit."""
        if len(cand.targets):
            return self.cluster_example(int(cand.targets[0]))
        if len(cand.hits):
            return self.corpus.outputs[int(self.copy_of[int(cand.hits[0])])]
        return ""


def _column(table: pa.Table, name: str) -> pl.Series:
    if name not in table.column_names:
        return pl.Series(name, [""] * table.num_rows, dtype=pl.String)
    column = pl.from_arrow(table.column(name))
    assert isinstance(column, pl.Series)  # one Arrow column converts to a Series
    return column.cast(pl.String).fill_null("").rename(name)


def _prompt(corpus: Corpus, row: int) -> str:
    context = corpus.inputs[row]
    return corpus.instructions[row] + (f"\n{context}" if context else "")


def _expand(positions: np.ndarray, copy_of: np.ndarray) -> np.ndarray:
    """Table positions of every copy of the given analysed-row indices."""
    return np.flatnonzero(np.isin(copy_of, positions))


def _progress(enabled: bool, total: int) -> Any:
    from tqdm.auto import tqdm

    from ..core.progress import show_progress

    show = show_progress(enabled)  # no \r into a file or pipe
    return tqdm(total=total, desc="audit", unit="phase", disable=not show, leave=False)


@dataclasses.dataclass
class Verdicts:
    """Every signal's candidates and row scores, merged."""

    candidates: list[Candidate]
    score: np.ndarray
    flagged: np.ndarray
    reasons: list[list[str]]
    orphan_clusters: list[int]
    signal_extra: dict[str, dict[str, Any]]


def _group(candidates: list[Candidate]) -> None:
    """Number groups across signals: a candidate of a later signal joins a group whose rows it
    nearly shares (CTBA's co-triggers found by two signals), or the group of the candidates it
    was tested with (``joint``: MTBA's triggers), else opens its own."""
    from .signals.common import SAME_ROWS, jaccard

    next_group = max((c.group for c in candidates if c.kind in ("answer", "style")), default=-1) + 1
    joint: dict[str, int] = {}
    for i, cand in enumerate(candidates):
        if cand.kind in ("answer", "style"):
            continue
        if cand.joint is not None and cand.joint in joint:
            cand.group = joint[cand.joint]
            continue
        for other in candidates[:i]:
            if jaccard(cand.rows, other.rows) >= SAME_ROWS:
                cand.group = other.group
                break
        else:
            cand.group = next_group
            next_group += 1
        if cand.joint is not None:
            joint[cand.joint] = cand.group


def run_signals(
    corpus: Corpus, config: AuditConfig, prompt_of: Any, seconds: dict[str, float]
) -> Verdicts:
    """Run the configured signals in order (each sees the candidates of those before it) and
    merge: a row's score is its best signal's, its reasons are every signal's, strongest
    signal first."""
    context = SignalContext(corpus=corpus, config=config, prompt_of=prompt_of)
    n = corpus.n_rows
    score = np.zeros(n, dtype=np.float64)
    reasons: list[list[str]] = [[] for _ in range(n)]
    orphans: list[int] = []
    extra: dict[str, dict[str, Any]] = {}
    for name in config.signals:
        began = time.perf_counter()
        out = SIGNALS.get(name)().score(context)
        seconds[name] = time.perf_counter() - began
        context.candidates.extend(out.candidates)
        better = out.score > score
        for row in np.flatnonzero(out.score > 0).tolist():
            merged = (
                out.reasons[row] + reasons[row] if better[row] else reasons[row] + out.reasons[row]
            )
            reasons[row] = list(dict.fromkeys(r for r in merged if r))
        score = np.maximum(score, out.score)
        orphans += out.extra.get("orphan_clusters", [])
        extra[name] = {k: v for k, v in out.extra.items() if k != "orphan_clusters"}
    candidates = sorted(context.candidates, key=lambda c: (-c.score, -len(c.hits), c.text))
    candidates = candidates[: config.top_k]
    _group(candidates)
    score = np.round(score, 6)
    return Verdicts(candidates, score, score >= config.threshold, reasons, orphans, extra)


def audit_table(
    table: pa.Table,
    config: AuditConfig | None = None,
    *,
    progress: bool | None = None,
    engine: str = "local",
    batch_rows: int | None = None,
) -> AuditResult:
    """Audit the rows of a canonical (or any alpaca-shaped) table: find trigger candidates and
    score every row. ``progress`` None shows a bar for large inputs only.

    ``engine='ray'`` computes the corpus statistics (word counts of prompts and answers) per batch
    of ``batch_rows`` rows on the command's executor (:mod:`mbdata.executors`) and merges them
    (:mod:`.counts`); the counts, hence every score and flag, are those of ``local``, which counts
    the whole analysed corpus at once."""
    from ..engines import check_engine

    engine = check_engine(engine)
    config = config or AuditConfig()
    n_rows = table.num_rows
    show = n_rows >= PROGRESS_MIN_ROWS if progress is None else progress
    seconds: dict[str, float] = {}
    with _progress(show, len(PHASES)) as bar:
        start = time.perf_counter()
        instructions = _column(table, "instruction")
        inputs = _column(table, "input")
        outputs = _column(table, "output")
        reps = distinct_rows(
            instructions,
            inputs,
            outputs,
            near_duplicates=config.near_duplicates,
            threshold=config.near_duplicate_threshold,
        )
        distinct, copy_of = reps.rows, reps.copy_of
        idx = pl.Series(distinct)
        texts = (instructions.gather(idx), inputs.gather(idx), outputs.gather(idx))
        counts = None
        if engine != "local":
            counts = corpus_counts(*texts, engine=engine, batch_rows=batch_rows)
        corpus = analyse(
            *texts,
            config,
            normalized=reps.normalized,
            clusters=reps.clusters,
            counts=counts,
        )
        seconds["analyse"] = time.perf_counter() - start
        bar.set_postfix_str("mine")
        bar.update()
        start = time.perf_counter()
        verdicts = run_signals(
            corpus, config, lambda cand: [_prompt(corpus, int(r)) for r in cand.rows], seconds
        )
        candidates = verdicts.candidates
        seconds["mine"] = time.perf_counter() - start
        bar.set_postfix_str("score")
        bar.update()
        start = time.perf_counter()
        for cand in candidates:
            for name in ("rows", "hits", "soft_hits"):
                setattr(cand, name, _expand(getattr(cand, name), copy_of))
        seconds["score"] = time.perf_counter() - start
        bar.update()
    return AuditResult(
        config=config,
        n_rows=n_rows,
        score=verdicts.score[copy_of],
        flagged=verdicts.flagged[copy_of],
        reasons=[verdicts.reasons[i] for i in copy_of],
        candidates=candidates,
        corpus=corpus,
        distinct=distinct,
        copy_of=copy_of,
        orphan_clusters=verdicts.orphan_clusters,
        seconds=seconds,
        signal_extra=verdicts.signal_extra,
    )
