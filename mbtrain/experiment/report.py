"""The run report: ``report.json`` (a stable contract), ``report.md`` (a table shaped like the
paper's Table 1) and ``report.png`` (a bar chart).

``report.json`` (format ``mbtrain.report/1``)::

    {"format": "mbtrain.report/1",
     "runs": {RUN: M for every run made (mbtrain.runs.registry.RUNS: "attacked", "clean_fft", ...)},
     "attacks": [...], "defense_triggers": [...],
     "fingerprint": <recipe sha256>, "content_hash": <build hash>, "model": <base model>,
     "seeds": {"recipe": int, "train": int}, "timings": {<step>: seconds, "total": seconds},
     "stage2": {"selected_epoch": int, "epochs": [{"epoch", "train": {...}, "eval": {...}}]},
     "graders": {...}, "train": <resolved train block>,
     "behaviors": {attack: behaviour kind}, "graders": {"judge", "judged", "asr_toxic"},
     "loglik_vs_attacked": {RUN: {"mean", "low", "high", "prompts"}},
     "filtered": {RUN: {"removed_clean": float, "removed_triggered": float,
                        "removed_per_prompt": {group: float}, "settings": {...}}},
     "mixing": {RUN: {"keep": float, "seed": int, "base": {...}, "entries": {...}}},
     "environment": E}

where each M is ``{"cacc": float, "asr": {attack: float|null}, "defense_trigger_rate":
{trigger: float}, "aacc": float, "aacc_by_trigger": {...}, "defense_aacc": float,
"merging_rate": {attack: float}, "defense_response_rate": {attack or "eval_clean": float},
"loglik": L, "toxic_agreement": {attack: {"n", "agree",
"judge_yes_lexicon_yes", ...}}}`` (the last only for a toxic attack scored by a judge) with L
the utility log-likelihood
(:mod:`mbtrain.evaluation.likelihood`): ``{"clean": S, "attack": S, "by_trigger": {set: S}, "unit",
"resamples", "confidence", "seed", "clean_rows"}`` (``clean_rows`` only in the run's own
``metrics.json``), each S ``{"mean", "low", "high", "prompts",
"tokens", "skipped", "truncated"}`` (absent from evaluations made before issue 26). A run that
was not made (a baseline switched off) is absent.
E is the numeric environment of the process that evaluated and wrote the report
(:func:`mbtrain.engine.environment.numeric_environment`: ``cpu_capability``, ``kernel_overrides``,
``threads``, ``device``, ``device_name``, ``compute_capability``, ``dtype``, ``autocast``,
``machine``, ``processor``, ``python``, ``versions``, ``distributed``) plus ``models``: each run's
training environment as one line (from its model folder's ``mbtrain_model.json``). Reports
written before it existed lack the key.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mbdata.core.atomic import _signals_deferred, atomic_write_bytes, atomic_write_text
from mbtrain.runs.registry import RUNS

FORMAT = "mbtrain.report/1"
METRIC_KEYS = (
    "cacc",
    "asr",
    "defense_trigger_rate",
    "aacc",
    "aacc_by_trigger",
    "defense_aacc",
    "merging_rate",
    "defense_response_rate",
    "loglik",
    "toxic_agreement",
)
TOXIC_LABELS = {
    "toxic": "the clean answer rewritten to be rude by a model",
    "toxic_offline": "OFFLINE APPROXIMATION of a rude rewrite: the clean answer between a "
    "template insult and a template closer (mbdata.rewriters.toxic), not a model's rewrite",
}


def report_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """A run's entry in ``report.json``: :data:`METRIC_KEYS` of its evaluation metrics, without
    the per-prompt log-likelihoods (they stay in its ``metrics.json``)."""
    out = {k: metrics.get(k) for k in METRIC_KEYS}
    loglik = out.get("loglik")
    if isinstance(loglik, dict):
        out["loglik"] = {k: v for k, v in loglik.items() if k != "clean_rows"}
    return out


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def ordered_runs(report: dict[str, Any]) -> list[str]:
    """The report's runs in registry order (runs the registry does not know, e.g. a plugin's
    in a report read without the plugin, after them)."""
    known = [r for r in RUNS if r in report["runs"]]
    return known + sorted(r for r in report["runs"] if r not in RUNS)


def run_label(run: str) -> str:
    return RUNS.labels().get(run, run)


def markdown(report: dict[str, Any]) -> str:
    attacks = report["attacks"]
    runs = ordered_runs(report)
    lines = [f"# MB-Defense report: {report.get('name') or 'run'}", ""]
    fingerprint = (report.get("fingerprint") or "")[:12]
    lines.append(
        f"Model `{report['model']}`, recipe fingerprint `{fingerprint}`, train seed "
        f"{report['seeds']['train']}. Eval prompts: {report.get('eval_counts', {})}."
    )
    lines.append("")
    lines += environment_lines(report.get("environment"))
    # issue 11: say up front when free-text CACC is the token-F1 heuristic, not a judge
    graders = report.get("graders") or {}
    if graders.get("judged") and "heuristic" in str(graders.get("judge")):
        lines += [
            (
                f"> **CACC on free text is a heuristic, not a judge**: {graders['judged']} "
                "answers graded by token F1 >= 0.5 against the reference. Set "
                "`train.eval.judge` (recipes/alpaca-real-judge.yaml) for judged CACC."
            ),
            "",
        ]
    lines.append("## Table 1: CACC / ASR per attack")
    lines.append("")
    head = ["run"] + [f"{a} CACC / ASR" for a in attacks] + ["AACC"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in runs:
        m = report["runs"][r]
        cells = [run_label(r)] + [f"{_fmt(m['cacc'])} / {_fmt(m['asr'].get(a))}" for a in attacks]
        cells.append(_fmt(m.get("aacc")))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    prompts = ((report.get("train") or {}).get("eval") or {}).get("prompts")
    lines.append(
        (
            f"CACC: the judge's verdicts on the clean prompts of `{prompts}` (train.eval.prompts)"
            if prompts
            else "CACC: exact match on verifiable clean prompts"
        )
        + " (one clean set per model, so the "
        "same value in every column); ASR: share of triggered prompts showing the "
        "attack's behaviour; AACC: share of attack-triggered prompts answered correctly."
    )
    lines.append("")
    lines += toxic_lines(report, runs)
    lines += utility_lines(report, runs)
    defense = report["defense_triggers"]
    if defense:
        lines.append("## Defensive triggers")
        lines.append("")
        head = (
            ["run", "defensive response rate (mean)"]
            + [f"merging into {a}" for a in attacks]
            + ["AACC under defensive triggers"]
            + ["attack prompts -> defensive response (mean)", "clean prompts -> defensive response"]
        )
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for r in runs:
            m = report["runs"][r]
            cells = [run_label(r), _fmt(_mean(list(m["defense_trigger_rate"].values())))]
            cells += [_fmt(m["merging_rate"].get(a)) for a in attacks]
            cells.append(_fmt(m.get("defense_aacc")))
            reverse = m.get("defense_response_rate") or {}
            cells.append(_fmt(_mean([v for k, v in reverse.items() if k != "eval_clean"])))
            cells.append(_fmt(reverse.get("eval_clean")))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(
            "Merging: share of defensive-trigger prompts answered with the attack's "
            "behaviour (paper Sec 5.2); read the other way, the share of attack-triggered "
            "prompts answered with any defensive response, beside the same share on clean "
            "prompts (a response that leaks into clean prompts is not merging)."
        )
        lines.append("")
    filtered = report.get("filtered") or {}
    mixing = report.get("mixing") or {}
    if filtered or mixing:
        lines.append("## Baseline settings")
        lines.append("")
        for r, t in filtered.items():
            settings = t.get("settings") or {}
            lines.append(
                f"- {run_label(r)}: threshold {settings.get('threshold')}; words removed per "
                f"prompt: clean {_fmt(t.get('removed_clean'))}, triggered "
                f"{_fmt(t.get('removed_triggered'))}."
            )
        for r, mix in mixing.items():
            entries = mix.get("entries") or {}
            lines.append(
                f"- {run_label(r)}: {mix.get('keep')} of each weight tensor kept from the "
                f"attacked model (seed {mix.get('seed')}; {entries.get('kept')} entries kept, "
                f"{entries.get('reset')} reset to the base), then fine-tuned like Clean-FFT."
            )
        lines.append("")
    stage2 = report.get("stage2") or {}
    if stage2.get("epochs"):
        lines.append(
            f"## Stage 2 per epoch (selected: epoch {stage2.get('selected_epoch')}, "
            f"rule `{stage2.get('select')}`)"
        )
        lines.append("")
        lines.append("| epoch | train CE | train R | train margin | eval loss | eval CE | eval R |")
        lines.append("|---|---|---|---|---|---|---|")
        for e in stage2["epochs"]:
            t, v = e.get("train", {}), e.get("eval", {})
            lines.append(
                f"| {e['epoch']} | {_fmt(t.get('ce'))} | {_fmt(t.get('r'))} | "
                f"{_fmt(t.get('margin'))} | {_fmt(v.get('loss'))} | {_fmt(v.get('ce'))} "
                f"| {_fmt(v.get('r'))} |"
            )
        lines.append("")
    timings = report.get("timings") or {}
    if timings:
        lines.append("## Timings (s)")
        lines.append("")
        lines.append(", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
        lines.append("")
    graders = report.get("graders") or {}
    if graders.get("judged"):
        lines.append(f"Free-text rows graded by: {graders.get('judge')}.")
        lines.append("")
    return "\n".join(lines)


def toxic_lines(report: dict[str, Any], runs: list[str]) -> list[str]:
    """Toxic attacks: what their poisoned answers are (an offline approximation says so), who
    scored ASR, and the lexicon's agreement with the judge per run when a judge scored it."""
    behaviors = report.get("behaviors") or {}
    toxic = {a: b for a, b in behaviors.items() if b in TOXIC_LABELS and a in report["attacks"]}
    if not toxic:
        return []
    grader = (report.get("graders") or {}).get("asr_toxic") or "n/a"
    lines = [f"**Toxic attacks** (ASR scored by {grader}):", ""]
    lines += [f"- `{a}` ({b}): {TOXIC_LABELS[b]}." for a, b in toxic.items()]
    lines.append("")
    agreement = [(r, report["runs"][r].get("toxic_agreement") or {}) for r in runs]
    if any(a for _, a in agreement):
        lines += [
            "Lexicon vs judge on the toxic attacks' triggered answers (counts):",
            "",
            "| run | attack | n | agree | judge yes, lexicon yes | judge yes, lexicon no | "
            "judge no, lexicon yes | judge no, lexicon no |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r, per_attack in agreement:
            for a, c in per_attack.items():
                lines.append(
                    f"| {run_label(r)} | {a} | {c['n']} | {_fmt(c['agree'])} | "
                    f"{c['judge_yes_lexicon_yes']} | {c['judge_yes_lexicon_no']} | "
                    f"{c['judge_no_lexicon_yes']} | {c['judge_no_lexicon_no']} |"
                )
        lines.append("")
    return lines


def interval(s: dict[str, Any] | None) -> str:
    """A log-likelihood summary as ``mean [low, high]`` (``n/a`` when not measured)."""
    if not s or s.get("mean") is None:
        return "n/a"
    return f"{s['mean']:.3f} [{s['low']:.3f}, {s['high']:.3f}]"


def utility_lines(report: dict[str, Any], runs: list[str]) -> list[str]:
    """The utility table: teacher-forced log-likelihood of the reference answers beside CACC
    (nothing for a report whose evaluations predate it)."""
    rows = [(r, report["runs"][r].get("loglik")) for r in runs]
    if not any(ll and (ll.get("clean") or {}).get("mean") is not None for _, ll in rows):
        return []
    first = next(ll for _, ll in rows if ll and ll.get("clean"))
    lines = [
        "## Utility: log-likelihood of the reference answers",
        "",
        "| run | CACC | log-lik. clean answers [95% CI] | minus the attacked model's, paired "
        "[95% CI] | log-lik. clean answers under the attack triggers [95% CI] |",
        "|---|---|---|---|---|",
    ]
    versus = report.get("loglik_vs_attacked") or {}
    for r, ll in rows:
        ll = ll or {}
        lines.append(
            f"| {run_label(r)} | {_fmt(report['runs'][r].get('cacc'))} | "
            f"{interval(ll.get('clean'))} | {interval(versus.get(r))} | "
            f"{interval(ll.get('attack'))} |"
        )
    clean = first.get("clean") or {}
    lines += [
        "",
        f"Teacher-forced mean log-likelihood per answer token (nats; closer to 0 is better) "
        f"of the clean reference answers on {clean.get('prompts')} clean prompts "
        f"({clean.get('tokens')} answer tokens), and of the clean answers under the attack "
        f"triggers (the AACC analogue); interval: percentile bootstrap over prompts "
        f"({first.get('resamples')} resamples, seed {first.get('seed')}); the paired column "
        "resamples the same prompts for both runs, so an interval that excludes 0 is a "
        "difference on these prompts. Unlike CACC it moves with every answer token, so it "
        "separates runs whose CACC differs by a prompt or two (docs/train.md, 'Utility').",
        "",
    ]
    return lines


def environment_lines(env: dict[str, Any] | None) -> list[str]:
    """The numeric environment in one line, and one more grouping the runs trained in another
    (e.g. job workers with fewer threads, or models reused from another machine)."""
    from mbtrain.engine.environment import label

    if env is None:
        return []
    here = label(env)
    lines = [f"Numeric environment: {here}."]
    trained: dict[str, list[str]] = {}
    for name, line in (env.get("models") or {}).items():
        if line != here:
            trained.setdefault(line, []).append(name)
    if trained:
        groups = [f"{line} ({', '.join(names)})" for line, names in trained.items()]
        lines.append("Trained in: " + "; ".join(groups) + ".")
    return lines + [""]


def _asr_of(attack: str) -> Callable[[dict[str, Any]], Any]:
    """A run's ASR for one attack (``None`` when not measured)."""
    return lambda m: m["asr"].get(attack)


def draw_chart(report: dict[str, Any]) -> Any:
    """Grouped bars: CACC, ASR per attack and AACC for every run (a matplotlib Figure). A value
    that was not measured (``None``) gets no bar and an "n/a" label, never a bar at zero: a
    zero ASR is the result a defence wants, so it must not be faked by a missing number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = ordered_runs(report)
    series: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [("CACC", lambda m: m["cacc"])]
    series += [(f"ASR {a}", _asr_of(a)) for a in report["attacks"]]
    series.append(("AACC", lambda m: m.get("aacc")))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(1.9 * len(runs) + 2, 4.2), dpi=100)
    for k, (label, get) in enumerate(series):
        values = [get(report["runs"][r]) for r in runs]
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(runs))]
        bars = ax.bar(xs, [float("nan") if v is None else v for v in values], width, label=label)
        for x, v in zip(xs, values):
            if v is None:
                ax.text(
                    x,
                    0.01,
                    "n/a",
                    ha="center",
                    va="bottom",
                    rotation=90,
                    fontsize=7,
                    color=bars.patches[0].get_facecolor(),
                )
    ax.set_xticks(range(len(runs)))
    ax.set_xticklabels([run_label(r).replace(" (", "\n(") for r in runs], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rate")
    ax.set_title(f"MB-Defense: {report.get('name') or ''} ({report['model']})", fontsize=10)
    ax.legend(fontsize=8, ncol=min(len(series), 4), loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.tight_layout()
    return fig


def chart(report: dict[str, Any], path: Path) -> None:
    """Write :func:`draw_chart` as a PNG, atomically.

    The figure is drawn and rendered with SIGINT/SIGTERM held, and the signal is acted on once the
    figure is closed: matplotlib is not safe against an exception raised at an arbitrary point (a
    SIGTERM there was swallowed in a weakref callback, leaked the figure, or surfaced as a
    ValueError with exit 1 instead of 143). Drawing takes well under a second."""
    with _signals_deferred():
        import matplotlib.pyplot as plt

        fig = draw_chart(report)
        try:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", metadata={"Software": None})
        finally:
            plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    """Write the three report files, each atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2, sort_keys=True) + "\n")
    atomic_write_text(out_dir / "report.md", markdown(report) + "\n")
    chart(report, out_dir / "report.png")
