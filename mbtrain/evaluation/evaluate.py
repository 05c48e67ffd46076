"""Evaluation of one model on a build's ``eval_clean`` and ``eval_triggered`` splits.

All prompts go through one batched greedy generation; the answers are then graded per row:

- CACC: share of ``eval_clean`` prompts answered correctly (exact match on verifiable rows, i.e.
  rows with a synthetic ``task``; the judge on free-text rows);
- ASR per attack trigger: share of its triggered prompts that show the attack's behaviour;
- AACC: share of attack-triggered prompts answered *correctly* (against ``clean_output``): a
  defence that only garbles the answer lowers ASR but not AACC;
- defensive-trigger rate per defensive trigger: share of its prompts that show its own
  behaviour (usually its random-word response), scored exactly like ASR (``None`` when no rule
  can score the behaviour);
- merging rate per attack: share of defensive-trigger prompts answered with that attack's
  behaviour (the paper's Sec 5.2: after stage 1 the defensive triggers merge with the attacker's);
- defensive response rate per attack (``defense_response_rate``): merging read the other way,
  the share of an attack's triggered prompts answered with *any* defensive trigger's response,
  with the same share on the clean prompts under ``eval_clean`` (a defensive response that leaks
  into clean prompts is over-generalisation, not merging: compare the two);
- a toxic attack (``toxic``, ``toxic_offline``) is scored by the judge when one is configured
  (asked whether the answer is rude), else by the toxic lexicon; with a judge the lexicon's
  agreement with it is recorded (``toxic_agreement``), and ``graders.asr_toxic`` names which
  one scored ASR (merging into a toxic attack is always the lexicon's: it reads defensive
  answers, many per run);
- ``loglik``: the teacher-forced mean log-likelihood per answer token of the clean reference
  answers, on the clean prompts and under each trigger, with a bootstrap interval over prompts
  (:mod:`mbtrain.evaluation.likelihood`), from the same loaded model after generation (``hf`` backend).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from mbdata.core.atomic import atomic_write, atomic_write_text
from mbdata.core.errors import InputError
from mbtrain.config import ModelSettings, TrainConfig
from mbtrain.engine.builds import TrainingBuild
from mbtrain.engine.models import load_model
from mbtrain.evaluation.generate import generate
from mbtrain.evaluation.judge import HeuristicJudge, Judge, JudgeItem, make_judge
from mbtrain.evaluation.likelihood import utility
from mbtrain.evaluation.scoring import TOXIC_BEHAVIORS, exact_match, mean, shows_behavior
from mbtrain.runs.stages import Runtime, formatter_for, make_runtime


def trigger_owners(build: TrainingBuild, rows: list[dict[str, Any]]) -> dict[str, str]:
    """trigger_set -> ``attacker`` | ``defender`` (manifest first, then spans, then the name)."""
    owners = {t["name"]: t.get("owner") for t in build.triggers if t.get("name")}
    for r in rows:
        name = r.get("trigger_set")
        if name and not owners.get(name):
            spans = r.get("triggers") or []
            owners[name] = (
                spans[0]["owner"]
                if spans
                else ("defender" if name.startswith("defense/") else "attacker")
            )
    return {k: v for k, v in owners.items() if v}


def attack_sets(build: TrainingBuild, triggered: dict[str, list[dict[str, Any]]]) -> set[str]:
    """The triggered sets an attacker planted (every set the defender does not own): the sets
    ASR is read on and the utility's ``attack`` pool covers."""
    owners = trigger_owners(build, [r for rows in triggered.values() for r in rows])
    return {name for name in triggered if owners.get(name) != "defender"}


def _limit(rows: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    return rows if limit is None else rows[:limit]


def read_prompts(path: str | Path) -> list[dict[str, Any]]:
    """``train.eval.prompts``: clean prompts from a JSONL file, one object a line with
    ``instruction`` (required), ``input`` and ``output`` (the reference, optional). Errors name
    the file, the line and the field."""
    path = Path(path)
    where = f"train.eval.prompts: {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{where}: file not found") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: not valid UTF-8 (byte {exc.start})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}, line {number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise InputError(f"{where}, line {number}: expected a JSON object")
        for field in ("instruction", "input", "output"):
            value = record.get(field)
            if value is not None and not isinstance(value, str):
                raise InputError(f"{where}, line {number}: `{field}` must be a string")
        if not (record.get("instruction") or "").strip():
            raise InputError(f"{where}, line {number}: `instruction` is missing or empty")
        rows.append(
            {
                "id": f"prompts-{number}",
                "instruction": record["instruction"],
                "input": record.get("input") or "",
                "output": record.get("output") or "",
                "task": None,  # free text: graded by the judge
            }
        )
    if not rows:
        raise InputError(f"{where}: no prompts in the file")
    return rows


def clean_rows(
    build: TrainingBuild, settings: Any, judged: bool | None = None
) -> list[dict[str, Any]]:
    """The clean prompts CACC is measured on: ``train.eval.prompts`` when set, else the build's
    ``eval_clean`` split. ``judged``: a judge (not the heuristic) grades free text (default:
    ``settings.judge`` is set)."""
    if settings.prompts:
        rows = read_prompts(settings.prompts)
        judged = settings.judge is not None if judged is None else judged
        if not judged and any(not r["output"] for r in rows):
            line = next(r["id"] for r in rows if not r["output"]).removeprefix("prompts-")
            raise InputError(
                f"train.eval.prompts: {settings.prompts}, line {line}: no `output` to grade "
                "against; set train.eval.judge (the heuristic needs a reference answer)"
            )
        return rows
    return build.rows("eval_clean") if build.has("eval_clean") else []


def eval_rows(
    build: TrainingBuild, limit: int | None, settings: Any = None, judged: bool | None = None
) -> tuple[list[dict], dict[str, list[dict]]]:
    if settings is not None:
        clean = _limit(clean_rows(build, settings, judged), limit)
    else:
        clean = _limit(build.rows("eval_clean"), limit) if build.has("eval_clean") else []
    by_trigger: dict[str, list[dict]] = defaultdict(list)
    if build.has("eval_triggered"):
        for r in build.rows("eval_triggered"):
            by_trigger[r["trigger_set"] or "unknown"].append(r)
    return clean, {k: _limit(v, limit) for k, v in sorted(by_trigger.items())}


def grade_correct(
    rows: list[dict], answers: list[str], reference: str, judge: Judge
) -> tuple[list[bool], dict[str, int]]:
    """Correctness per row: exact match where the row is verifiable, the judge elsewhere."""
    verdicts: list[bool | None] = [None] * len(rows)
    free = []
    for i, (row, answer) in enumerate(zip(rows, answers)):
        ref = row.get(reference) or ""
        if row.get("task"):
            verdicts[i] = exact_match(answer, ref)
        else:
            free.append(i)
    if free:
        items = [
            JudgeItem(
                question=(
                    rows[i]["instruction"]
                    + ("\n\n" + rows[i]["input"] if rows[i].get("input") else "")
                ),
                reference=rows[i].get(reference) or "",
                answer=answers[i],
            )
            for i in free
        ]
        for i, v in zip(free, judge.grade(items)):
            verdicts[i] = bool(v)
    return [bool(v) for v in verdicts], {"exact": len(rows) - len(free), "judged": len(free)}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


TOXIC_LEXICON_LABEL = "lexicon (mbdata.rewriters.toxic.LEXICON, any entry as a whole word)"


def toxic_hits(
    name: str,
    answers: list[str],
    lexicon: list[bool | None],
    judge: Judge,
    metrics: dict[str, Any],
) -> list[bool | None]:
    """ASR verdicts of a toxic attack: the judge's when one is configured, else the lexicon's
    (``lexicon``). With a judge, the lexicon's agreement with it on these answers goes into
    ``metrics["toxic_agreement"][name]``: counts of each verdict pair, so a reader can see
    whether the lexicon misses rudeness (judge yes, lexicon no) or over-fires."""
    if isinstance(judge, HeuristicJudge) or not answers:
        return lexicon
    verdicts = [bool(v) for v in judge.rude(answers)]
    pairs = list(zip(verdicts, (bool(v) for v in lexicon)))
    metrics.setdefault("toxic_agreement", {})[name] = {
        "n": len(pairs),
        "agree": _round(mean([j == lex for j, lex in pairs])),
        "judge_yes_lexicon_yes": sum(j and lex for j, lex in pairs),
        "judge_yes_lexicon_no": sum(j and not lex for j, lex in pairs),
        "judge_no_lexicon_yes": sum(lex and not j for j, lex in pairs),
        "judge_no_lexicon_no": sum(not j and not lex for j, lex in pairs),
    }
    return list(verdicts)


def score(
    build: TrainingBuild,
    clean: list[dict],
    clean_answers: list[str],
    triggered: dict[str, list[dict]],
    triggered_answers: dict[str, list[str]],
    judge: Judge,
) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    """Metrics (see the module docstring) and per-row verdicts for the generations file."""
    planted = attack_sets(build, triggered)
    verdicts: dict[str, list[dict]] = {}
    correct, graders = grade_correct(clean, clean_answers, "output", judge)
    verdicts["eval_clean"] = [{"correct": c} for c in correct]
    metrics: dict[str, Any] = {
        "cacc": _round(mean(correct)),
        "asr": {},
        "aacc_by_trigger": {},
        "defense_trigger_rate": {},
        "merging_rate": {},
        "counts": {"eval_clean": len(clean)},
        "graders": {"eval_clean": graders, "judge": judge.label},
    }
    attacks = {name: rows for name, rows in triggered.items() if name in planted}
    attack_behavior = {
        name: (rows[0].get("behavior"), rows[0].get("output"))
        for name, rows in attacks.items()
        if rows
    }
    all_aacc: list[bool] = []
    defense_aacc: list[bool] = []
    merging: dict[str, list[bool]] = defaultdict(list)
    for name, rows in triggered.items():
        answers = triggered_answers[name]
        metrics["counts"][name] = len(rows)
        ok, _ = grade_correct(rows, answers, "clean_output", judge)
        if name in attacks:
            hits: list[bool | None] = [
                shows_behavior(r.get("behavior"), a, r.get("output")) for r, a in zip(rows, answers)
            ]
            if rows and rows[0].get("behavior") in TOXIC_BEHAVIORS:
                hits = toxic_hits(name, answers, hits, judge, metrics)
            scorable = [h for h in hits if h is not None]
            metrics["asr"][name] = _round(mean(scorable)) if scorable else None
            metrics["aacc_by_trigger"][name] = _round(mean(ok))
            all_aacc.extend(ok)
            verdicts[name] = [{"behavior": h, "correct": c} for h, c in zip(hits, ok)]
        else:
            own = [
                shows_behavior(r.get("behavior"), a, r.get("output")) for r, a in zip(rows, answers)
            ]
            scorable = [o for o in own if o is not None]
            metrics["defense_trigger_rate"][name] = _round(mean(scorable)) if scorable else None
            defense_aacc.extend(ok)
            row_merge = {}
            for attack, (behavior, target) in attack_behavior.items():
                hit = [bool(shows_behavior(behavior, a, target)) for a in answers]
                merging[attack].extend(hit)
                row_merge[attack] = hit
            verdicts[name] = [
                {
                    "own_behavior": o,
                    "correct": c,
                    "attack_behavior": {k: v[i] for k, v in row_merge.items()},
                }
                for i, (o, c) in enumerate(zip(own, ok))
            ]
    if any(rows and rows[0].get("behavior") in TOXIC_BEHAVIORS for rows in attacks.values()):
        metrics["graders"]["asr_toxic"] = (
            judge.label if not isinstance(judge, HeuristicJudge) else TOXIC_LEXICON_LABEL
        )
    metrics["aacc"] = _round(mean(all_aacc))
    metrics["defense_aacc"] = _round(mean(defense_aacc))
    metrics["merging_rate"] = {k: _round(mean(v)) for k, v in merging.items()}
    defenses = {n: rows for n, rows in triggered.items() if n not in attacks and rows}
    if defenses:
        answers_by = {**{n: triggered_answers[n] for n in attacks}, "eval_clean": clean_answers}
        metrics["defense_response_rate"] = defense_response_rates(answers_by, defenses)
    return metrics, verdicts


def defense_response_rates(
    answers: dict[str, list[str]], defenses: dict[str, list[dict[str, Any]]]
) -> dict[str, float | None]:
    """Per group of answers (an attack's triggered prompts, ``eval_clean``), the share that shows
    any defensive trigger's own behaviour (its response; ``defenses``: each defensive trigger
    set's eval rows, whose first row names the behaviour and its target). Answers no rule can
    score for any defensive trigger count as not showing it."""
    targets = [(rows[0].get("behavior"), rows[0].get("output")) for rows in defenses.values()]
    out: dict[str, float | None] = {}
    for group, texts in answers.items():
        hits = [any(shows_behavior(b, a, t) for b, t in targets) for a in texts]
        out[group] = _round(mean(hits)) if hits else None
    return out


def evaluate(
    model_ref: Any,
    build: TrainingBuild,
    cfg: TrainConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    runtime: Runtime | None = None,
    judge: Judge | None = None,
    name: str = "model",
    extra: dict[str, Any] | None = None,
    transform: Any = None,
) -> dict[str, Any]:
    """Generate and grade; with ``out_dir`` write ``metrics.json`` and ``generations.jsonl``
    (written last and atomically, so an existing ``metrics.json`` means a finished eval).
    ``extra`` is merged into the metrics (e.g. which model they were made from).

    ``transform`` (an inference-time defence, :class:`mbtrain.runs.registry.EvalTransform`): the prompts
    the model answers are its rewrite of each row; the grading uses the rows' own references.
    What it removed is counted in ``metrics["transform"]`` and listed per row in the
    generations."""
    cfg = cfg or build.train_config()
    runtime = runtime or make_runtime(cfg, progress=False)
    judge = judge or make_judge(cfg.eval.judge, runtime.device)
    started = time.perf_counter()
    vllm = cfg.eval.backend == "vllm"
    if vllm:  # the tokenizer only: vLLM loads the weights itself (mbtrain.evaluation.vllm_eval)
        from mbtrain.evaluation.vllm_eval import load_tokenizer, require_vllm

        require_vllm()  # before any work: a one-line error naming the install
        tokenizer = load_tokenizer(model_ref, cfg.model.trust_remote_code)
    else:
        # remote code only when the user's own train.model settings allow it
        model, tokenizer = load_model(
            model_ref, ModelSettings(trust_remote_code=cfg.model.trust_remote_code)
        )
        model.to(runtime.device)
    fmt = formatter_for(tokenizer, cfg)
    judged = not isinstance(judge, HeuristicJudge)
    clean, triggered = eval_rows(build, cfg.eval.limit, cfg.eval, judged)
    groups = [("eval_clean", clean)] + list(triggered.items())
    flat = [r for _, rows in groups for r in rows]
    shown = flat
    transform_stats: dict[str, Any] | None = None
    if transform is not None:
        shown = transform.apply(flat)
        transform_stats = _removed_counts(groups, shown) | {"settings": transform.record()}
    prompts = [
        fmt.prompt_ids(r["instruction"], r.get("input") or "", r.get("system")) for r in shown
    ]
    references = [t for r in flat for t in (r.get("output"), r.get("clean_output")) if t]
    longest = max(
        (len(x) for x in tokenizer(references, add_special_tokens=False)["input_ids"]), default=0
    )
    max_new = max(1, min(cfg.eval.max_new_tokens, longest + 8))
    gen_start = time.perf_counter()
    if vllm:
        from mbtrain.evaluation.vllm_eval import generate_vllm

        outs = generate_vllm(
            model_ref,
            prompts,
            max_new_tokens=max_new,
            trust_remote_code=cfg.model.trust_remote_code,
            amp=runtime.amp,
            seed=cfg.seed,
            llm_args=cfg.eval.vllm_args,
            progress=runtime.progress,
        )
    else:
        outs = (
            generate(
                model,
                tokenizer,
                prompts,
                max_new_tokens=max_new,
                batch_size=cfg.eval.batch_size,
                device=runtime.device,
                amp=runtime.amp,
                progress=runtime.progress,
                desc=f"eval {name}",
            )
            if prompts
            else []
        )
    gen_seconds = time.perf_counter() - gen_start
    answers: dict[str, list[str]] = {}
    pos = 0
    for split, rows in groups:
        answers[split] = [o.text for o in outs[pos : pos + len(rows)]]
        pos += len(rows)
    metrics, verdicts = score(
        build, clean, answers["eval_clean"], triggered, {k: answers[k] for k in triggered}, judge
    )
    # the utility log-likelihood (mbtrain.evaluation.likelihood): same rows, same weights
    ll_start = time.perf_counter()
    if vllm:  # vLLM holds its own copy: load the weights once more for this pass
        model, _ = load_model(
            model_ref, ModelSettings(trust_remote_code=cfg.model.trust_remote_code)
        )
        model.to(runtime.device)
    attacks = attack_sets(build, triggered)
    block, per_row = utility(
        model,
        fmt,
        groups,
        shown,
        attacks,
        seed=cfg.seed,
        batch_size=cfg.eval.batch_size,
        device=runtime.device,
        amp=runtime.amp,
    )
    ll_seconds = round(time.perf_counter() - ll_start, 3)
    metrics["loglik"] = block
    for split, values in per_row.items():
        for verdict, value in zip(verdicts[split], values):
            verdict["loglik"] = None if value is None else round(value[0], 4)
            verdict["answer_tokens"] = None if value is None else value[1]
    new_tokens = sum(o.tokens for o in outs)
    metrics["generation"] = {
        "backend": cfg.eval.backend,
        "prompts": len(outs),
        "max_new_tokens": max_new,
        "new_tokens": new_tokens,
        "cut_at_max": sum(not o.stopped for o in outs),
        "seconds": round(gen_seconds, 3),
        "tok_s": round(new_tokens / gen_seconds, 1) if gen_seconds else None,
        "loglik_seconds": ll_seconds,  # the teacher-forced pass of the utility log-likelihood
    }
    if transform_stats is not None:
        metrics["transform"] = transform_stats
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    metrics.update(extra or {})
    if out_dir is not None:
        seen = None
        if transform is not None:
            seen, pos = {}, 0
            for split, rows in groups:
                seen[split] = shown[pos : pos + len(rows)]
                pos += len(rows)
        _write(Path(out_dir), metrics, groups, answers, verdicts, seen)
    return metrics


def _removed_counts(groups: list, shown: list[dict[str, Any]]) -> dict[str, Any]:
    """Words a transform removed: the mean per prompt for each group, and for all clean /
    all triggered prompts together."""
    per_group: dict[str, float | None] = {}
    clean: list[int] = []
    triggered: list[int] = []
    pos = 0
    for split, rows in groups:
        counts = [len(r.get("removed") or []) for r in shown[pos : pos + len(rows)]]
        pos += len(rows)
        per_group[split] = _round(mean(counts)) if counts else None
        (clean if split == "eval_clean" else triggered).extend(counts)
    return {
        "removed_per_prompt": per_group,
        "removed_clean": _round(mean(clean)) if clean else None,
        "removed_triggered": _round(mean(triggered)) if triggered else None,
    }


def _write(
    out_dir: Path,
    metrics: dict,
    groups: list,
    answers: dict,
    verdicts: dict,
    seen: dict[str, list[dict]] | None = None,
) -> None:
    """``generations.jsonl`` then ``metrics.json``, each atomically: an existing
    ``metrics.json`` always sits beside the generations it was computed from. ``seen``: the
    rows as a transform rewrote them (their prompt and removed words are recorded too)."""

    def generations(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            for split, rows in groups:
                shown = seen[split] if seen is not None else [None] * len(rows)
                for row, answer, verdict, seen_row in zip(
                    rows, answers[split], verdicts[split], shown
                ):
                    filtered = (
                        {
                            "shown_instruction": seen_row["instruction"],
                            "removed": seen_row.get("removed") or [],
                        }
                        if seen_row is not None
                        else {}
                    )
                    fh.write(
                        json.dumps(
                            {
                                "group": split,
                                "id": row["id"],
                                "trigger_set": row.get("trigger_set"),
                                "task": row.get("task"),
                                "instruction": row["instruction"],
                                "input": row.get("input") or "",
                                "reference": row.get("output"),
                                "clean_reference": row.get("clean_output"),
                                "generation": answer,
                                **filtered,
                                **verdict,
                            },
                            ensure_ascii=False,
                        )
                        + "\n"
                    )

    atomic_write(out_dir / "generations.jsonl", generations)
    atomic_write_text(
        out_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n"
    )
