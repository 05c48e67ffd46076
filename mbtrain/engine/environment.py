"""The numeric environment a result was computed in, recorded beside the result.

Why: the same bytes of data and the same seed gave MB-Defense ASR .04 on AVX2 kernels and .53 on
AVX-512 kernels (issue 22): floating-point rounding alone decides a tiny model's training. A
result that does not say which kernels, device, precision, thread count, library versions and
process layout (world size, DDP / FSDP / DeepSpeed) made it cannot be compared with another.
:func:`numeric_environment` is that record; every ``report.json`` (``environment``), every model
folder's ``mbtrain_model.json`` (``environment``) and every ``mb sweep`` point carry it.

It is *recorded*, never part of a resume key: a model folder trained on another machine is still
reused when everything that decides its weights matches (``mbtrain.runs.stages``).

The record (JSON)::

    {"cpu_capability": "AVX2",            # torch.backends.cpu.get_cpu_capability()
     "kernel_overrides": {"ATEN_CPU_CAPABILITY": "avx2", ...},   # only the ones set
     "threads": 2,                        # torch's intra-op thread count
     "device": "cpu",                     # the training/eval device type: cpu, cuda, mps
     "device_name": null, "compute_capability": null,   # on CUDA: "NVIDIA H100 ...", "9.0"
     "dtype": "float32", "autocast": null,              # weights' dtype; bf16 autocast or null
     "machine": "x86_64", "processor": "x86_64", "python": "3.12.3",
     "versions": {"torch": "2.13.0", "transformers": ..., "mbdefense": ...},   # null: absent
     "distributed": {"world_size": 1, "type": "none", "backend": null,
                     "fsdp_version": null, "sharding": null, "deepspeed_stage": null,
                     "mixed_precision": null, "accelerate_config_sha256": null,
                     "source": "trainer"}}

``distributed.type`` is ``none`` (one process), ``DDP`` (torchrun / accelerate without
sharding), ``FSDP`` (with ``fsdp_version`` 1 or 2 and ``sharding``: FULL_SHARD, SHARD_GRAD_OP,
...) or ``DEEPSPEED`` (with ``deepspeed_stage``): read from the Trainer's accelerator when this process
trained (``source: trainer``), else from the variables ``accelerate launch`` / ``torchrun`` give
every process (``source: launch``: what was asked for).
``accelerate_config_sha256`` is the hash of the ``--accelerate-config`` file (``mb`` passes it to
the processes it launches as ``MB_ACCELERATE_CONFIG_SHA256``; null when launched otherwise).
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

import torch

# Variables that force which CPU kernels run (issue 22: how the AVX2 draw is reproduced on an
# AVX-512 machine): recorded when set, since they change results without changing the hardware.
KERNEL_OVERRIDES = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
PACKAGES = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "numpy",
    "mbdefense",
)
CONFIG_HASH_VAR = "MB_ACCELERATE_CONFIG_SHA256"  # set by `mb ... --accelerate-config FILE`


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def distributed() -> dict[str, Any]:
    """How the processes of this run share the work (see the module docstring): what the
    Trainer's accelerator really runs when it exists in this process (``source: trainer``),
    else what the launch asked for (``source: launch``). They can differ: accelerate 1.16 runs
    an FSDP config on CPU as plain DDP (``mbtrain.engine.trainer.fit`` refuses that run)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    record: dict[str, Any] = {
        "world_size": world,
        "type": "none",
        "backend": None,
        "fsdp_version": None,
        "sharding": None,
        "deepspeed_stage": None,
        "mixed_precision": os.environ.get("ACCELERATE_MIXED_PRECISION"),
        "accelerate_config_sha256": os.environ.get(CONFIG_HASH_VAR),
        "source": "launch",
    }
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        record["backend"] = str(torch.distributed.get_backend())
    state_module = sys.modules.get("accelerate.state")  # only if training imported it
    if state_module is not None and state_module.AcceleratorState._shared_state:
        return {**record, **_from_accelerator(state_module.AcceleratorState())}
    if _flag("ACCELERATE_USE_DEEPSPEED"):
        stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
        record.update(type="DEEPSPEED", deepspeed_stage=int(stage) if stage else None)
    elif _flag("ACCELERATE_USE_FSDP"):
        version = int(os.environ.get("FSDP_VERSION", "1"))
        if version == 2:  # FSDP2 shards by reshard_after_forward, not a strategy name
            reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() == "true"
            sharding = "FULL_SHARD" if reshard else "SHARD_GRAD_OP"
        else:
            sharding = os.environ.get("FSDP_SHARDING_STRATEGY", "FULL_SHARD")
        record.update(type="FSDP", fsdp_version=version, sharding=sharding)
    elif world > 1:
        record["type"] = "DDP"
    return record


def _from_accelerator(state: Any) -> dict[str, Any]:
    """The ``distributed`` fields from an initialised ``accelerate`` ``AcceleratorState``."""
    kind = str(getattr(state.distributed_type, "value", state.distributed_type))
    out: dict[str, Any] = {
        "world_size": int(state.num_processes),
        "mixed_precision": str(state.mixed_precision),
        "source": "trainer",
        "type": "none" if kind == "NO" else "DDP",
    }
    if kind == "FSDP":
        plugin = state.fsdp_plugin
        version = int(getattr(plugin, "fsdp_version", 1))
        value = plugin.reshard_after_forward  # FSDP2: a bool; FSDP1: the ShardingStrategy
        if isinstance(value, bool):
            sharding = "FULL_SHARD" if value else "SHARD_GRAD_OP"
        else:
            sharding = str(getattr(value, "name", value))
        out.update(type="FSDP", fsdp_version=version, sharding=sharding)
    elif kind == "DEEPSPEED":
        plugin = state.deepspeed_plugin
        out.update(type="DEEPSPEED", deepspeed_stage=getattr(plugin, "zero_stage", None))
    return out


def numeric_environment(
    device: torch.device | str | None = None, autocast: torch.dtype | None = None
) -> dict[str, Any]:
    """The JSON-able record of how and where this process computes (module docstring).
    ``device``: the device training/evaluation runs on (default: CPU); ``autocast``: the
    mixed-precision dtype, if any (weights themselves are fp32 in mbtrain)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    name = capability = None
    if dev.type == "cuda" and torch.cuda.is_available():
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        name = torch.cuda.get_device_name(index)
        capability = ".".join(map(str, torch.cuda.get_device_capability(index)))
    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "kernel_overrides": {k: os.environ[k] for k in KERNEL_OVERRIDES if k in os.environ},
        "threads": torch.get_num_threads(),
        "device": dev.type,
        "device_name": name,
        "compute_capability": capability,
        "dtype": "float32",
        "autocast": str(autocast).removeprefix("torch.") if autocast is not None else None,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in PACKAGES},
        "distributed": distributed(),
    }


def report_environment(
    device: torch.device | str | None, autocast: torch.dtype | None, model_dirs: dict[str, Any]
) -> dict[str, Any]:
    """A report's ``environment``: this process's record (it evaluated and wrote the report)
    plus ``models``, each run's model folder's training environment as a :func:`label` line
    (a model may have been trained by a worker with fewer threads, or reused from a run on
    another machine; ``not recorded`` for folders from before the record existed)."""
    from mbtrain.engine.models import read_marker

    record = numeric_environment(device, autocast)
    record["models"] = {
        name: label(read_marker(path).get("environment")) for name, path in model_dirs.items()
    }
    return record


def label(env: dict[str, Any] | None) -> str:
    """One short line naming an environment record, for report.md and sweep.md:
    ``cpu AVX2, 2 threads`` / ``cuda NVIDIA H100 (sm 9.0), bf16 autocast, 8 threads, FSDP2 x 8``."""
    if not env:
        return "not recorded"
    parts = [
        f"{env.get('device')} {env.get('device_name')} (sm {env.get('compute_capability')})"
        if env.get("device_name")
        else f"{env.get('device')} {env.get('cpu_capability')}"
    ]
    if env.get("device_name"):
        parts[0] += f", CPU {env.get('cpu_capability')}"
    if env.get("kernel_overrides"):
        parts.append("forced " + " ".join(f"{k}={v}" for k, v in env["kernel_overrides"].items()))
    if env.get("autocast"):
        parts.append(f"{env['autocast']} autocast")
    threads = env.get("threads")
    parts.append(f"{threads} thread{'' if threads == 1 else 's'}")
    dist = env.get("distributed") or {}
    if dist.get("type") not in (None, "none"):
        kind = dist["type"]
        if kind == "FSDP":
            kind = f"FSDP{dist.get('fsdp_version')} {dist.get('sharding')}"
        elif kind == "DEEPSPEED":
            kind = f"DeepSpeed ZeRO-{dist.get('deepspeed_stage')}"
        parts.append(f"{kind} x {dist.get('world_size')}")
    versions = env.get("versions") or {}
    parts.append(f"torch {versions.get('torch')}, transformers {versions.get('transformers')}")
    return ", ".join(parts)
