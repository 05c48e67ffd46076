"""A result names its numeric environment (issue 22): the CPU kernels torch really uses (the
AVX2/AVX-512 choice alone moved the demo's ASR from .04 to .53), threads, device, precision,
library versions and the process layout. Recorded in every model folder, never keyed: a folder
trained under other kernels is still reused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from cli.main import main
from mbtrain.engine.environment import (
    KERNEL_OVERRIDES,
    PACKAGES,
    distributed,
    label,
    numeric_environment,
)
from mbtrain.engine.models import read_marker

sys.path.insert(0, str(Path(__file__).parent))
from test_train_helpers import TINY_TRAIN, make_build  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KEYS = {
    "cpu_capability",
    "kernel_overrides",
    "threads",
    "device",
    "device_name",
    "compute_capability",
    "dtype",
    "autocast",
    "machine",
    "processor",
    "python",
    "versions",
    "distributed",
}


def test_the_record_names_kernels_threads_device_versions_and_layout(monkeypatch):
    for var in (*KERNEL_OVERRIDES, "WORLD_SIZE", "ACCELERATE_USE_FSDP"):
        monkeypatch.delenv(var, raising=False)
    env = numeric_environment("cpu", torch.bfloat16)
    assert set(env) == KEYS
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["threads"] == torch.get_num_threads() and env["kernel_overrides"] == {}
    assert env["device"] == "cpu" and env["device_name"] is None
    assert env["dtype"] == "float32" and env["autocast"] == "bfloat16"
    assert set(env["versions"]) == set(PACKAGES) and env["versions"]["torch"] == torch.__version__
    assert env["distributed"]["world_size"] == 1 and env["distributed"]["type"] == "none"
    json.dumps(env)  # JSON-able as it is
    assert label(env).startswith(f"cpu {env['cpu_capability']}, bfloat16 autocast, ")
    assert label(None) == "not recorded"


def test_launch_variables_name_the_layout_when_no_trainer_ran_here(monkeypatch):
    monkeypatch.setitem(sys.modules, "accelerate.state", None)  # no trainer in this process
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert distributed()["type"] == "DDP"
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    monkeypatch.setenv("FSDP_RESHARD_AFTER_FORWARD", "false")
    monkeypatch.setenv("MB_ACCELERATE_CONFIG_SHA256", "ab" * 32)
    record = distributed()
    assert record["type"] == "FSDP" and record["fsdp_version"] == 2
    assert record["sharding"] == "SHARD_GRAD_OP" and record["world_size"] == 8
    assert record["accelerate_config_sha256"] == "ab" * 32 and record["source"] == "launch"
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    record = distributed()
    assert record["type"] == "DEEPSPEED" and record["deepspeed_stage"] == 3
    assert "DeepSpeed ZeRO-3 x 8" in label({**numeric_environment(), "distributed": record})


def test_forced_kernels_are_recorded_and_a_folder_trained_under_them_is_reused(tmp_path):
    """``ATEN_CPU_CAPABILITY=default`` (torch's scalar kernels) in a subprocess: the model folder
    it trains says DEFAULT and names the override; the same command in this process (the
    machine's own kernels) reuses that folder untouched: the environment is not in the key."""
    build = make_build(tmp_path / "build", train=TINY_TRAIN)
    base, s1 = tmp_path / "base", tmp_path / "s1"
    before = torch.get_num_threads()
    try:
        assert main(["train", "base", str(build), "-o", str(base), "--quiet"]) == 0
        args = ["train", "stage1", str(build), "-o", str(s1), "--base", str(base), "--quiet"]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "ATEN_CPU_CAPABILITY": "default"}
        code = "import sys; from cli.main import main; sys.exit(main(sys.argv[1:]))"
        done = subprocess.run(
            [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        recorded = read_marker(s1)["environment"]
        assert recorded["cpu_capability"] == "DEFAULT"
        assert recorded["kernel_overrides"] == {"ATEN_CPU_CAPABILITY": "default"}
        assert read_marker(base)["environment"]["cpu_capability"] == (
            torch.backends.cpu.get_cpu_capability()
        )
        stamp = (s1 / "model.safetensors").stat().st_mtime_ns
        assert main(args) == 0  # other kernels here: reused, not retrained
        assert (s1 / "model.safetensors").stat().st_mtime_ns == stamp
        assert read_marker(s1)["environment"]["cpu_capability"] == "DEFAULT"
    finally:
        torch.set_num_threads(before)
