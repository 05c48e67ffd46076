"""Merging diagnostics: do attacker and defender triggers look alike *inside* the model?

The behavioural merging rate (defensive-trigger prompts answered with the attack's behaviour)
says whether triggers merged; it cannot say why a setting fails. Following the paper's Sec. 5
analysis, this module compares representations: for the same held-out prompt x taken clean, with an
attack trigger (x_a) and with a defensive trigger (x_d), it reads the hidden state of the last
prompt token (the state that decides the first response token) at every layer and reports, per
layer, the mean over prompts and trigger pairs of

- ``cos_attack_defense``: cos(h(x_a), h(x_d));
- ``cos_attack_clean`` / ``cos_defense_clean``: the same against the clean prompt (the baseline:
  how much any trigger moves the state at all);
- ``shift_cos``: cos(h(x_a) - h(x), h(x_d) - h(x)), whether the two triggers push the state in the
  same direction. Raw cosines of transformer states are dominated by a few large shared
  directions (they sit near 1 for any two prompts), so the shift cosine is the sharper signal:
  near 0 when the triggers do unrelated things, towards 1 when they have merged.

Measured on the attacked model (before) and MB stage 1 (after defensive poisoning), and on
MB-Defense when present; ``DIR/diagnostics.json`` per run folder, summarised (mean over layers)
in the ``mb sweep`` table.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mbdata.core.atomic import atomic_write_text

FORMAT = "mbtrain.diagnostics/1"
MODELS = ("attacked", "mb_stage1", "mb_defense")
METRICS = ("cos_attack_defense", "cos_attack_clean", "cos_defense_clean", "shift_cos")
DEFAULT_PROMPTS = 32


def matched_prompts(
    build: Any, limit: int
) -> tuple[list[dict], dict[str, list[dict]], list[str], list[str]]:
    """Clean eval rows and, per trigger set, their triggered versions, matched on the source row
    (only prompts that every trigger set has; the first ``limit``). Returns (clean rows,
    {trigger set: rows in the same order}, attack names, defensive trigger names)."""
    clean = {(r["source"], r["source_row"]): r for r in build.rows("eval_clean")}
    by_set: dict[str, dict[tuple, dict]] = {}
    owners: dict[str, str] = {}
    for r in build.rows("eval_triggered") if build.has("eval_triggered") else []:
        by_set.setdefault(r["trigger_set"], {})[(r["source"], r["source_row"])] = r
        spans = r.get("triggers") or []
        if spans:
            owners[r["trigger_set"]] = spans[0].get("owner", "")
    attacks = sorted(s for s in by_set if owners.get(s) == "attacker")
    defenses = sorted(s for s in by_set if owners.get(s) == "defender")
    keys = [k for k in clean if all(k in by_set[s] for s in attacks + defenses)][:limit]
    return (
        [clean[k] for k in keys],
        {s: [by_set[s][k] for k in keys] for s in by_set},
        attacks,
        defenses,
    )


def last_token_states(
    model: Any, tokenizer: Any, fmt: Any, rows: list[dict], device: Any, batch_size: int = 16
) -> Any:
    """Hidden states of the last prompt token, every layer: a float32 tensor [rows, layers+1,
    hidden] (index 0 is the embedding output). Prompts are left padded with explicit position
    ids, so padding changes nothing."""
    import torch

    ids = [fmt.prompt_ids(r["instruction"], r.get("input") or "", r.get("system")) for r in rows]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            width = max(len(x) for x in chunk)
            input_ids = torch.tensor([[pad] * (width - len(x)) + list(x) for x in chunk])
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in chunk])
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            result = model(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                output_hidden_states=True,
            )
            states = torch.stack([h[:, -1, :].float().cpu() for h in result.hidden_states], 1)
            out.append(states)
    return torch.cat(out, 0)


def _cos(a: Any, b: Any) -> Any:
    import torch

    return torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-8)


def similarity(
    states: dict[str, Any], clean: Any, attacks: list[str], defenses: list[str]
) -> dict[str, Any]:
    """Per-layer means of the four measures (see the module docstring) from last-token states
    ([prompts, layers, hidden] per trigger set), plus ``shift_cos`` per attack."""
    per_layer: dict[str, Any] = {}
    pairs = [(a, d) for a in attacks for d in defenses]
    if pairs:
        per_layer["cos_attack_defense"] = sum(
            _cos(states[a], states[d]).mean(0) for a, d in pairs
        ) / len(pairs)
        per_layer["shift_cos"] = sum(
            _cos(states[a] - clean, states[d] - clean).mean(0) for a, d in pairs
        ) / len(pairs)
    if attacks:
        per_layer["cos_attack_clean"] = sum(_cos(states[a], clean).mean(0) for a in attacks) / len(
            attacks
        )
    if defenses:
        per_layer["cos_defense_clean"] = sum(
            _cos(states[d], clean).mean(0) for d in defenses
        ) / len(defenses)
    result: dict[str, Any] = {k: [round(float(x), 4) for x in v] for k, v in per_layer.items()}
    # layer 0 is the embedding output: the trigger token itself, not what the model made of it
    result["mean_over_layers"] = {
        k: round(float(v[1:].mean() if len(v) > 1 else v.mean()), 4) for k, v in per_layer.items()
    }
    if defenses:
        result["shift_cos_by_attack"] = {
            a: round(
                float(
                    sum(
                        _cos(states[a] - clean, states[d] - clean).mean(0)[1:].mean()
                        for d in defenses
                    )
                    / len(defenses)
                ),
                4,
            )
            for a in attacks
        }
    return result


def measure_model(
    model_dir: str | Path, build: Any, cfg: Any, limit: int = DEFAULT_PROMPTS, runtime: Any = None
) -> dict[str, Any]:
    """The diagnostics of one model folder on a build's held-out prompts."""
    from mbtrain.config import ModelSettings
    from mbtrain.engine.models import load_model
    from mbtrain.runs.stages import formatter_for, make_runtime

    runtime = runtime or make_runtime(cfg, progress=False)
    clean_rows, triggered, attacks, defenses = matched_prompts(build, limit)
    if not clean_rows:
        return {"prompts": 0, "note": "no eval prompt has every trigger set"}
    model, tokenizer = load_model(
        model_dir, ModelSettings(trust_remote_code=cfg.model.trust_remote_code)
    )
    model.to(runtime.device)
    fmt = formatter_for(tokenizer, cfg)
    batch = max(1, min(cfg.eval.batch_size, 32))
    clean = last_token_states(model, tokenizer, fmt, clean_rows, runtime.device, batch)
    states = {
        s: last_token_states(model, tokenizer, fmt, triggered[s], runtime.device, batch)
        for s in attacks + defenses
    }
    return {
        "prompts": len(clean_rows),
        "attacks": attacks,
        "defense_triggers": defenses,
        "layers": int(clean.shape[1]),
        **similarity(states, clean, attacks, defenses),
    }


def _marker_hash(model_dir: Path) -> str:
    from mbtrain.engine.models import MARKER

    return hashlib.sha256((model_dir / MARKER).read_bytes()).hexdigest()


def run_diagnostics(
    run_dir: str | Path,
    build: Any,
    cfg: Any,
    *,
    limit: int | None = None,
    log: Callable[[str], None] = print,
    runtime: Any = None,
) -> dict[str, Any]:
    """Diagnostics of the run folder's attacked, MB stage 1 and MB-Defense models into
    ``run_dir/diagnostics.json`` (reused when made from the same models and prompt count)."""
    from mbtrain.engine.models import is_model_folder

    run_dir = Path(run_dir)
    limit = limit or min(DEFAULT_PROMPTS, cfg.eval.limit or DEFAULT_PROMPTS)
    present = [m for m in MODELS if is_model_folder(run_dir / "models" / m)]
    key = {
        "models": {m: _marker_hash(run_dir / "models" / m) for m in present},
        "limit": limit,
        "template": cfg.model.template,
        "system": cfg.model.system,
    }
    path = run_dir / "diagnostics.json"
    cached = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    have = cached.get("key", {})
    models: dict[str, Any] = {}
    for m in present:  # reuse each model's part when that very model was measured
        if (
            have.get("limit") == limit
            and have.get("models", {}).get(m) == key["models"][m]
            and m in cached.get("models", {})
        ):
            models[m] = cached["models"][m]
    started = time.perf_counter()
    for m in present:
        if m not in models:
            log(f"diagnostics: {m}")
            models[m] = measure_model(run_dir / "models" / m, build, cfg, limit, runtime)
    summary = {
        f"{m}.{k}": v for m in models for k, v in (models[m].get("mean_over_layers") or {}).items()
    }
    if "attacked" in models and "mb_stage1" in models:
        for k in METRICS:
            a, b = summary.get(f"attacked.{k}"), summary.get(f"mb_stage1.{k}")
            if a is not None and b is not None:
                summary[f"stage1_minus_attacked.{k}"] = round(b - a, 4)
    doc = {
        "format": FORMAT,
        "key": key,
        "models": models,
        "summary": summary,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if doc["models"] != cached.get("models") or cached.get("key") != key:
        atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return doc
