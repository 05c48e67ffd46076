"""Human-readable audit reports: ``report.md`` and a self-contained ``report.html`` with plots
(PNG figures embedded as base64; no external files, scripts or fonts)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np

from ..core.atomic import _signals_deferred
from .core import AuditResult

MAX_CANDIDATES_SHOWN = 20
MAX_CLUSTERS_SHOWN = 15
MAX_ROWS_SHOWN = 25
EXCERPT = 90


def _excerpt(text: str, limit: int = EXCERPT) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _md_cell(text: Any) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _clusters_shown(result: AuditResult) -> list[int]:
    """Repeated output clusters worth showing: targets and orphans first, then the largest."""
    clusters = result.corpus.clusters
    marked = [int(c) for cand in result.candidates for c in cand.targets]
    marked += result.orphan_clusters
    ordered = list(dict.fromkeys(marked))
    ordered += [c for c in np.flatnonzero(clusters.size >= 2).tolist() if c not in ordered]
    return ordered[:MAX_CLUSTERS_SHOWN]


def _cluster_role(result: AuditResult, cluster: int) -> str:
    ranks = [
        str(rank)
        for rank, cand in enumerate(result.candidates, start=1)
        if cluster in cand.targets.tolist()
    ]
    if ranks:
        return "target of #" + ", #".join(ranks)
    if cluster in result.orphan_clusters:
        return "repeated answer to unrelated prompts"
    return ""


def _flagged_shown(result: AuditResult) -> list[int]:
    rows = np.flatnonzero(result.flagged)
    order = np.lexsort((rows, -result.score[rows]))
    return rows[order][:MAX_ROWS_SHOWN].tolist()


def _instruction(result: AuditResult, row: int) -> str:
    return result.corpus.instructions[int(result.copy_of[row])]


def _output(result: AuditResult, row: int) -> str:
    return result.corpus.outputs[int(result.copy_of[row])]


# The report explains itself (no link that only resolves inside a checkout).
REASON_LEGEND = (
    ('trigger:"x"', "the row's prompt holds trigger candidate x"),
    (
        "output-cluster:N",
        "the row's answer is in answer cluster N (a candidate's target, or an "
        "answer repeated across unrelated prompts)",
    ),
    ("detached-output", "the answer shares no content word with its prompt"),
    ('style-word:"w"', "the answer holds the word a style candidate's rows share"),
)
METHOD_NOTE = (
    "The method, every score and its limits are documented in docs/audit.md of the "
    "mbdefense package (the docs/ folder of its source distribution)."
)
KIND_WORDS = {
    "answer": "its rows share a fixed answer",
    "style": "its rows' answers share an unusual word",
}


def kind_words(kind: str) -> str:
    """What a candidate of this kind means, in words: fixed-output's kinds here, every other
    signal's from its class (``description``), so a new signal needs no edit here."""
    from .signals import SIGNALS

    if kind in KIND_WORDS:
        return KIND_WORDS[kind]
    for name in SIGNALS.names():
        cls = SIGNALS.get(name)
        if getattr(cls, "kind", None) == kind and getattr(cls, "description", ""):
            return str(cls.description)
    return kind


def reason_legend() -> tuple[tuple[str, str], ...]:
    """The reasons a row can carry: fixed-output's, then each registered signal's own
    (``legend`` of its class), in the default signal order."""
    from .signals import SIGNALS

    names = sorted(SIGNALS.names(), key=lambda n: (SIGNALS.get(n).order, n))
    extra = tuple(item for n in names for item in getattr(SIGNALS.get(n), "legend", ()))
    return REASON_LEGEND + extra


def verdict(result: AuditResult) -> str:
    """The audit's conclusion in one or two plain sentences (shown first in both reports and on
    the terminal)."""
    threshold = result.config.threshold
    high = [c for c in result.candidates if c.score >= threshold]
    share = 100 * result.n_flagged / max(result.n_rows, 1)
    if not high and result.n_flagged == 0:
        return (
            f"No planted trigger found: no candidate reaches the threshold "
            f"({threshold:g}) and no row is flagged among {result.n_rows:,} rows."
        )
    if not high:
        return (
            f"No trigger phrase reaches the threshold, but {result.n_flagged:,} rows "
            f"({share:.2f} %) are flagged: they share a repeated answer to unrelated prompts "
            "(see their reasons below)."
        )
    named = ", ".join(f'"{c.text}" ({kind_words(c.kind)})' for c in high[:3])
    more = f" and {len(high) - 3} more" if len(high) > 3 else ""
    return (
        f"Likely backdoor: {len(high)} trigger candidate(s) over the threshold: {named}{more}. "
        f"{result.n_flagged:,} of {result.n_rows:,} rows ({share:.2f} %) are flagged as "
        "poisoned; remove them (`--clean-out`) or inspect them below."
    )


def _poisoned_words(cand: Any, threshold: float) -> str:
    """The "poisoned" count with what it means: a low-scoring candidate's rows are not flagged."""
    n = len(cand.poisoned)
    if cand.score >= threshold:
        return f"{n} (flagged)"
    return f"{n} (not flagged: score below threshold)"


def _headline(result: AuditResult, source: str) -> list[tuple[str, str]]:
    high = [c for c in result.candidates if c.score >= result.config.threshold]
    return [
        ("input", source or "(table)"),
        ("rows", f"{result.n_rows:,}"),
        (
            "flagged",
            f"{result.n_flagged:,} ({100 * result.n_flagged / max(result.n_rows, 1):.2f} %)",
        ),
        ("high-confidence candidates", f"{len(high)} (score >= {result.config.threshold:g})"),
        ("candidates reported", str(len(result.candidates))),
        ("repeated output clusters", f"{int((result.corpus.clusters.size >= 2).sum()):,}"),
    ]


def render_markdown(result: AuditResult, source: str = "") -> str:
    lines = ["# Corpus audit", "", f"**Verdict:** {verdict(result)}", ""]
    lines += [f"- {key}: {value}" for key, value in _headline(result, source)]
    lines += ["", "## Trigger candidates", ""]
    if result.candidates:
        lines += [
            "Rows: prompts holding the phrase. Rows matching: those whose answer fits the "
            "candidate's pattern (its target answer, label or compliance); they are flagged "
            "only when the score reaches the threshold.",
            "",
            "| # | candidate | signal | score | group | rows | rows matching | "
            "prefix/middle/suffix/whole | target example |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for rank, cand in enumerate(result.candidates[:MAX_CANDIDATES_SHOWN], start=1):
            pos = "/".join(
                str(cand.placement.counts[k]) for k in ("prefix", "middle", "suffix", "whole")
            )
            lines.append(
                f"| {rank} | `{_md_cell(cand.text)}` | {cand.kind} | {cand.score:.3f} | "
                f"{cand.group} | {len(cand.rows)} | "
                f"{_poisoned_words(cand, result.config.threshold)} | {pos} | "
                f"{_md_cell(_excerpt(result.target_example(cand)))} |"
            )
    else:
        lines.append("No trigger candidate: no prompt phrase is tied to repeated answers.")
    lines += ["", "## Output clusters", ""]
    shown = _clusters_shown(result)
    if shown:
        lines += ["| cluster | rows | role | example answer |", "|---|---|---|---|"]
        for cluster in shown:
            lines.append(
                f"| {cluster} | {len(result.cluster_rows(cluster))} | "
                f"{_cluster_role(result, cluster)} | "
                f"{_md_cell(_excerpt(result.cluster_example(cluster)))} |"
            )
    else:
        lines.append("No answer is repeated.")
    lines += ["", "## Flagged rows (highest scores first)", ""]
    rows = _flagged_shown(result)
    if rows:
        lines += [
            "| source_row | score | reasons | instruction | output |",
            "|---|---|---|---|---|",
        ]
        for row in rows:
            lines.append(
                f"| {result.source_row(row)} | {result.score[row]:.3f} | "
                f"{_md_cell(', '.join(result.reasons[row]))} | "
                f"{_md_cell(_excerpt(_instruction(result, row)))} | "
                f"{_md_cell(_excerpt(_output(result, row)))} |"
            )
        if result.n_flagged > len(rows):
            lines.append(f"\n({result.n_flagged - len(rows):,} more in rows.parquet)")
    else:
        lines.append("No row is flagged.")
    lines += ["", "## Reasons", "", "| reason | meaning |", "|---|---|"]
    lines += [f"| `{_md_cell(r)}` | {_md_cell(m)} |" for r, m in reason_legend()]
    lines += ["", METHOD_NOTE, ""]
    return "\n".join(lines)


# --- plots -------------------------------------------------------------------------------------


def _figure_png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(result: AuditResult) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    cands = result.candidates[:MAX_CANDIDATES_SHOWN]
    colors = plt.get_cmap("tab10")
    if cands:
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(cands) + 1.2))
        labels = [f"#{i} {_excerpt(c.text, 28)}" for i, c in enumerate(cands, start=1)]
        ax.barh(
            range(len(cands)), [c.score for c in cands], color=[colors(c.group % 10) for c in cands]
        )
        ax.axvline(result.config.threshold, color="black", linestyle="--", linewidth=1)
        ax.set_yticks(range(len(cands)), labels)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("candidate score (colour: group sharing a target; dashed: threshold)")
        fig.subplots_adjust(
            left=0.34, right=0.97, top=0.97, bottom=min(0.45, 0.6 / (0.35 * len(cands) + 1.2))
        )
        plots.append(("Trigger candidates", _figure_png(fig)))
    shown = _clusters_shown(result)
    if shown:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        sizes = [len(result.cluster_rows(c)) for c in shown]
        marked = ["tab:red" if _cluster_role(result, c) else "tab:gray" for c in shown]
        ax.bar(range(len(shown)), sizes, color=marked)
        ax.set_xticks(range(len(shown)), [str(c) for c in shown])
        ax.set_xlabel("output cluster (red: a candidate's target or a suspicious repeat)")
        ax.set_ylabel("rows")
        fig.subplots_adjust(left=0.1, right=0.98, top=0.95, bottom=0.17)
        plots.append(("Output cluster sizes", _figure_png(fig)))
    placed = [(i, c) for i, c in enumerate(cands[:6], start=1) if len(c.placement.relative)]
    if placed:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        bins = np.linspace(0, 1, 11).tolist()
        ax.hist(
            [c.placement.relative for _, c in placed],
            bins=bins,
            label=[f"#{i} {_excerpt(c.text, 24)}" for i, c in placed],
            color=[colors(c.group % 10) for _, c in placed],
        )
        ax.set_xlabel("position in the instruction (0 = first word, 1 = after the last)")
        ax.set_ylabel("occurrences")
        ax.legend(fontsize=8)
        fig.subplots_adjust(left=0.1, right=0.98, top=0.95, bottom=0.17)
        plots.append(("Where the candidates sit", _figure_png(fig)))
    if result.n_rows:
        fig, ax = plt.subplots(figsize=(7, 2.8))
        ax.hist(result.score, bins=np.linspace(0, 1, 21).tolist(), color="tab:blue")
        ax.set_yscale("log")
        ax.axvline(result.config.threshold, color="black", linestyle="--", linewidth=1)
        ax.set_xlabel("row score (dashed = flag threshold)")
        ax.set_ylabel("rows (log)")
        fig.subplots_adjust(left=0.1, right=0.98, top=0.95, bottom=0.2)
        plots.append(("Row scores", _figure_png(fig)))
    return plots


# --- html --------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:70em;
color:#222;padding:0 1em}table{border-collapse:collapse;margin:0.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:0.25em 0.5em;text-align:left;vertical-align:top;
font-size:0.9em}th{background:#f3f3f3}code{background:#f6f6f6;padding:0 0.2em}
.high{background:#fde2e2}.verdict{font-size:1.1em;padding:0.5em;border:1px solid #999;
background:#fffbe6}img{max-width:100%}figure{margin:1em 0}
"""


def _table(headers: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def render_html(result: AuditResult, source: str = "") -> str:
    esc = html.escape
    parts = [
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>Corpus audit</title>'
        f"<style>{_CSS}</style></head><body><h1>Corpus audit</h1>"
        f'<p id="verdict" class="verdict"><b>Verdict:</b> {esc(verdict(result))}</p>'
    ]
    parts.append(
        _table(["summary", "value"], [[esc(k), esc(v)] for k, v in _headline(result, source)])
    )
    parts.append("<h2>Trigger candidates</h2>")
    if result.candidates:
        rows, classes = [], []
        for rank, cand in enumerate(result.candidates[:MAX_CANDIDATES_SHOWN], start=1):
            pos = ", ".join(f"{k} {v}" for k, v in cand.placement.counts.items() if v)
            rows.append(
                [
                    str(rank),
                    f"<code>{esc(cand.text)}</code>",
                    esc(cand.kind),
                    f"{cand.score:.3f}",
                    str(cand.group),
                    str(len(cand.rows)),
                    esc(_poisoned_words(cand, result.config.threshold)),
                    esc(pos),
                    f"{cand.excess:.2f} / {cand.evidence:.2f} / {cand.support:.2f}",
                    esc(_excerpt(result.target_example(cand))),
                ]
            )
            classes.append("high" if cand.score >= result.config.threshold else "")
        parts.append(
            "<p>rows: prompts holding the phrase; rows matching: those whose answer "
            "fits the candidate's pattern, flagged only when its score reaches the "
            "threshold.</p>"
        )
        parts.append(
            _table(
                [
                    "#",
                    "candidate",
                    "signal",
                    "score",
                    "group",
                    "rows",
                    "rows matching",
                    "positions",
                    "excess / insertion / support",
                    "target example",
                ],
                rows,
                classes,
            )
        )
    else:
        parts.append("<p>No trigger candidate: no prompt phrase is tied to repeated answers.</p>")
    with _signals_deferred():  # matplotlib is not safe against a signal raised mid-draw
        plots = _plots(result)
    for title, png in plots:
        parts.append(
            f"<figure><figcaption><b>{esc(title)}</b></figcaption>"
            f'<img alt="{esc(title)}" src="data:image/png;base64,{png}"></figure>'
        )
    parts.append("<h2>Output clusters</h2>")
    shown = _clusters_shown(result)
    if shown:
        parts.append(
            _table(
                ["cluster", "rows", "role", "example answer"],
                [
                    [
                        str(c),
                        str(len(result.cluster_rows(c))),
                        esc(_cluster_role(result, c)),
                        esc(_excerpt(result.cluster_example(c), 160)),
                    ]
                    for c in shown
                ],
            )
        )
    else:
        parts.append("<p>No answer is repeated.</p>")
    parts.append("<h2>Flagged rows (highest scores first)</h2>")
    flagged = _flagged_shown(result)
    if flagged:
        parts.append(
            _table(
                ["source_row", "score", "reasons", "instruction", "output"],
                [
                    [
                        str(result.source_row(r)),
                        f"{result.score[r]:.3f}",
                        esc(", ".join(result.reasons[r])),
                        esc(_excerpt(_instruction(result, r), 160)),
                        esc(_excerpt(_output(result, r), 120)),
                    ]
                    for r in flagged
                ],
            )
        )
        if result.n_flagged > len(flagged):
            parts.append(f"<p>{result.n_flagged - len(flagged):,} more in rows.parquet.</p>")
    else:
        parts.append("<p>No row is flagged.</p>")
    parts.append("<h2>Reasons</h2>")
    parts.append(
        _table(
            ["reason", "meaning"], [[f"<code>{esc(r)}</code>", esc(m)] for r, m in reason_legend()]
        )
    )
    parts.append(f"<p>{esc(METHOD_NOTE)}</p></body></html>\n")
    return "".join(parts)
