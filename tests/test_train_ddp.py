"""Multi-process training through the entry point users launch: ``torchrun --nproc_per_node 2
mb train ...`` (DDP over gloo on CPU) gives the same loss curve as one process at the same global
batch (the recipe's ``batch_size`` is the global batch; each of N processes takes batch/N rows)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import main

sys.path.insert(0, str(Path(__file__).parent))
from test_train_helpers import TINY_TRAIN, make_build  # noqa: E402

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mb(args: list[str], procs: int) -> None:
    mb = shutil.which("mb", path=str(BIN)) or str(BIN / "mb")
    if procs == 1:
        cmd = [sys.executable, mb, *args]
    else:
        cmd = [
            str(BIN / "torchrun"),
            "--nproc_per_node",
            str(procs),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_free_port()),
            mb,
            *args,
        ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _losses(model_dir: Path) -> list[float]:
    lines = (model_dir / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    return [rec["loss"] for rec in map(json.loads, lines) if "loss" in rec]


@pytest.mark.slow
@pytest.mark.skipif(not (BIN / "torchrun").exists(), reason="torchrun not installed")
def test_two_process_ddp_gives_the_one_process_loss_curve(tmp_path):
    train = copy.deepcopy(TINY_TRAIN)
    train["stage1"] = {"epochs": 2, "batch_size": 8}
    train["stage2"] = {"epochs": 2, "batch_size": 4}
    # row counts divisible by the global batch: no short last batch for accelerate to pad
    build = make_build(tmp_path / "build", n_train=32, n_recovery=8, train=train)
    base = tmp_path / "base"
    assert main(["train", "base", str(build), "-o", str(base), "--quiet"]) == 0
    curves = {}
    for procs in (1, 2):
        s1, s2 = tmp_path / f"s1-{procs}", tmp_path / f"s2-{procs}"
        _mb(["train", "stage1", str(build), "-o", str(s1), "--base", str(base), "--quiet"], procs)
        _mb(["train", "stage2", str(build), "--model", str(s1), "-o", str(s2), "--quiet"], procs)
        curves[procs] = (_losses(s1), _losses(s2))
    for one, two in zip(curves[1], curves[2], strict=True):
        assert len(one) == len(two) > 2
        assert two == pytest.approx(one, abs=1e-5)


def test_launch_options_fail_in_one_line_before_any_work(tmp_path, capsys):
    build = tmp_path / "nothing"
    assert (
        main(
            [
                "train",
                "stage1",
                str(build),
                "-o",
                str(tmp_path / "o"),
                "--accelerate-config",
                str(tmp_path / "missing.yaml"),
            ]
        )
        == 2
    )
    assert "--accelerate-config:" in capsys.readouterr().err
    ds = tmp_path / "zero3.yaml"
    ds.write_text("distributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 3\n")
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        assert (
            main(
                [
                    "train",
                    "stage1",
                    str(build),
                    "-o",
                    str(tmp_path / "o"),
                    "--accelerate-config",
                    str(ds),
                ]
            )
            == 2
        )
        assert "mbdefense[deepspeed]" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "stage1",
                str(build),
                "-o",
                str(tmp_path / "o"),
                "--trainer-arg",
                "no_such_field=1",
            ]
        )
        == 2
    )
    assert "trainer_args.no_such_field: not a SFTConfig field" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
