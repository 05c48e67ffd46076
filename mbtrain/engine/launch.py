"""Re-running a training command under ``accelerate launch``: what ``--accelerate-config FILE``
does, kept in the engine so the CLI only parses its options.

Why a re-exec: DDP, DeepSpeed ZeRO and FSDP need one process per device, started by accelerate's
launcher with the environment it sets (``LOCAL_RANK``, ``WORLD_SIZE``...). The simplest faithful
way to give a user's ``mb train ... --accelerate-config FILE`` those processes is to run the very
same command line under ``accelerate launch --config_file FILE``; inside the launched processes
``LOCAL_RANK`` is set and the option is a no-op. Everything that can be refused is refused here,
before a process starts: a missing file, DeepSpeed asked for but not installed, FSDP on CPU.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path

from mbdata.core.errors import MBError

from .environment import CONFIG_HASH_VAR

OPTION = "--accelerate-config"


def launched() -> bool:
    """True inside a process started by accelerate/torchrun (the option is then a no-op)."""
    return os.environ.get("LOCAL_RANK") is not None


def check_launch_config(path: Path) -> None:
    """One-line errors for a config that cannot run here: missing, DeepSpeed without the
    package, FSDP on CPU."""
    if not path.is_file():
        raise MBError(
            f"{OPTION}: {path} not found; write one with `accelerate config --config_file FILE`"
        )
    text = path.read_text(encoding="utf-8").lower()
    if "deepspeed" in text and find_spec("deepspeed") is None:
        raise MBError(
            f"{OPTION}: {path} asks for DeepSpeed, which is not installed; "
            "pip install 'mbdefense[deepspeed]'"
        )
    refuse_cpu_fsdp(path)


def refuse_cpu_fsdp(path: Path) -> None:
    """An FSDP config on a CPU-only launch is a one-line error before anything starts: accelerate
    (1.16, measured) runs it as plain DDP there, so nothing would be sharded. The same check runs
    in every process on the Trainer itself (:func:`mbtrain.engine.trainer.refuse_unsharded`)."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise MBError(f"{OPTION}: {path} is not YAML ({exc})") from None
    if not isinstance(config, dict) or str(config.get("distributed_type")).upper() != "FSDP":
        return
    import torch

    if config.get("use_cpu") is True or not torch.cuda.is_available():
        raise MBError(
            f"{OPTION}: {path} asks for FSDP on CPU, which accelerate runs as "
            "plain DDP (nothing sharded); for DDP on CPU use `distributed_type: MULTI_GPU` "
            "with `use_cpu: true`, or run FSDP on GPUs"
        )


def without_option(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--accelerate-config FILE`` / ``--accelerate-config=FILE``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == OPTION:
            skip = True
        elif not arg.startswith(OPTION + "="):
            out.append(arg)
    return out


def launch_command(config: Path, argv: Sequence[str]) -> list[str]:
    """The ``accelerate launch`` command line that re-runs ``argv`` (``sys.argv``: the program,
    then its arguments) under ``config``."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        argv[0],
        *without_option(argv[1:]),
    ]


def relaunch(config: str | Path, argv: Sequence[str]) -> int:
    """Run ``argv`` again under ``accelerate launch --config_file config`` and return its exit
    code. Every launched process records the config's sha256 (``CONFIG_HASH_VAR``, written into
    each model folder by :mod:`.environment`). A Ctrl-C is the launched command's to handle (its
    processes finish the step and write a checkpoint); this process only waits, as a shell would."""
    path = Path(config)
    check_launch_config(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    child = subprocess.Popen(
        launch_command(path, argv), env={**os.environ, CONFIG_HASH_VAR: digest}
    )
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
