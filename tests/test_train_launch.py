"""``--accelerate-config`` for real, two processes on CPU (issue 29): the launch line docs/train.md
shows trains the one-process loss curve, records how it was trained in the model folder,
survives a Ctrl-C (every process stops at the same step and writes the checkpoint, the next run
resumes) and its folder evaluates in one process like the one-process model.

What accelerate (1.16, measured) does with the configs a user would write on CPU:
``distributed_type: MULTI_GPU`` + ``use_cpu: true`` launches N processes of DDP over gloo (the
config used here); ``MULTI_CPU`` launches *one* process unless mpirun is set up; ``FSDP`` +
``use_cpu: true`` launches N processes but runs them as plain DDP (accelerate enables FSDP only on
GPU-type devices), so nothing is sharded: mbtrain refuses it in one line, before the launch and
again on the Trainer itself. A real FSDP/ZeRO-3 run needs GPUs (tests/test_train_sharded.py checks
mbtrain's gathering glue with a stand-in)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cli.main import main
from mbtrain.engine.models import read_marker

sys.path.insert(0, str(Path(__file__).parent))
from test_train_helpers import TINY_TRAIN, make_build  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MB = [sys.executable, shutil.which("mb", path=str(BIN)) or str(BIN / "mb")]  # relaunched as is
# the DDP-on-CPU config docs/train.md shows (num_processes 2, a free port)
DDP_CONFIG = """compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
use_cpu: true
num_machines: 1
num_processes: 2
machine_rank: 0
main_process_ip: 127.0.0.1
main_process_port: {port}
mixed_precision: 'no'
"""
FSDP_CONFIG = """distributed_type: FSDP
use_cpu: true
num_processes: 2
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_transformer_layer_cls_to_wrap: LlamaDecoderLayer
  fsdp_state_dict_type: FULL_STATE_DICT
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _steps(model_dir: Path) -> dict[int, float]:
    """step -> loss over the whole log (an interrupted run and its resumption append to it)."""
    lines = (model_dir / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    return {rec["step"]: rec["loss"] for rec in map(json.loads, lines) if "loss" in rec}


def _ctrl_c_after_first_step(cmd: list[str], env: dict, log: Path) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; once its log shows a finished step, SIGINT the
    whole group, as a terminal's Ctrl-C does: ``mb`` itself, the launcher (which forwards the
    signal to its processes a second time) and the training processes."""
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if log.is_file() and '"event": "log"' in log.read_text(encoding="utf-8"):
            os.killpg(proc.pid, signal.SIGINT)
            break
        time.sleep(0.02)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(cmd, proc.returncode, out.decode(), err.decode())


@pytest.mark.slow
def test_two_process_ddp_through_accelerate_config_interrupted_and_resumed(tmp_path):
    build = make_build(tmp_path / "build", n_train=32, train=TINY_TRAIN)  # 4 steps per epoch
    base = tmp_path / "base"
    threads = torch.get_num_threads()
    try:
        assert main(["train", "base", str(build), "-o", str(base), "--quiet"]) == 0
        one = tmp_path / "one"
        stage1 = ["train", "stage1", str(build), "--base", str(base), "--epochs", "5", "--quiet"]
        assert main([*stage1, "-o", str(one)]) == 0
    finally:
        torch.set_num_threads(threads)
    config = tmp_path / "ddp.yaml"
    config.write_text(DDP_CONFIG.format(port=_free_port()), encoding="utf-8")
    two = tmp_path / "two"
    cmd = [*MB, *stage1, "-o", str(two), "--accelerate-config", str(config)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    partial_log = tmp_path / ".two.partial" / "train_log.jsonl"
    stopped = _ctrl_c_after_first_step(cmd, env, partial_log)
    assert stopped.returncode == 130 and partial_log.is_file(), stopped.stderr[-3000:]
    assert not two.exists()
    events = [json.loads(x) for x in partial_log.read_text().splitlines()]
    interrupted = [e["step"] for e in events if e["event"] == "interrupted"]
    assert len(interrupted) == 1 and 1 <= interrupted[0] < 20  # one record: both stopped there
    # the stop was the graceful one (the launcher's echo of the SIGINT did not abort it)
    assert (tmp_path / ".two.partial" / f"checkpoint-{interrupted[0]}/trainer_state.json").is_file()

    config.write_text(DDP_CONFIG.format(port=_free_port()), encoding="utf-8")
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = [json.loads(x) for x in (two / "train_log.jsonl").read_text().splitlines()]
    assert [e["event"] for e in log if e["event"] != "log"] == [
        "start",
        "interrupted",
        "resume",
        "done",
    ]
    assert log[-1]["processes"] == 2 and log[-1]["sharded"] is False and log[-1]["steps"] == 20

    # the loss at every step (before and after the interrupt) is the one-process loss
    losses_one, losses_two = _steps(one), _steps(two)
    assert sorted(losses_two) == sorted(losses_one) == list(range(1, 21))
    for step, loss in losses_one.items():
        assert losses_two[step] == pytest.approx(loss, abs=1e-5), step
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert sorted(a) == sorted(b)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5

    # how it was trained, in the folder
    dist = read_marker(two)["environment"]["distributed"]
    assert dist["type"] == "DDP" and dist["world_size"] == 2 and dist["backend"] == "gloo"
    assert dist["source"] == "trainer" and dist["fsdp_version"] is None
    assert dist["accelerate_config_sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
    assert read_marker(one)["environment"]["distributed"]["type"] == "none"

    # the two-process folder loads in one process and evaluates like the one-process model
    from mbtrain import api

    try:
        metrics = [api.evaluate_model(m, build, progress=False) for m in (one, two)]
    finally:
        torch.set_num_threads(threads)
    for key in ("cacc", "asr", "aacc", "defense_trigger_rate", "merging_rate", "counts"):
        assert metrics[0][key] == metrics[1][key], key
    assert metrics[0]["generation"]["new_tokens"] == metrics[1]["generation"]["new_tokens"]


def test_fsdp_on_cpu_is_refused_in_one_line_before_anything_starts(tmp_path, capsys):
    config = tmp_path / "fsdp2.yaml"
    config.write_text(FSDP_CONFIG, encoding="utf-8")
    out = tmp_path / "o"
    args = ["train", "stage1", str(tmp_path / "b"), "-o", str(out)]
    assert main([*args, "--accelerate-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "asks for FSDP on CPU" in err and "use_cpu: true" in err
    assert not out.exists()


def test_a_launch_that_asked_for_sharding_but_did_not_shard_stops_before_a_step(
    tmp_path, monkeypatch
):
    """The same check on the Trainer (what accelerate really built), for a launch that did not
    go through ``--accelerate-config`` (e.g. ``accelerate launch`` by hand)."""
    from mbdata.core.errors import MBError
    from mbtrain.config import TinyModel
    from mbtrain.engine.formatting import Formatter
    from mbtrain.engine.objectives import SFTObjective
    from mbtrain.engine.tiny import tiny_model, train_tokenizer
    from mbtrain.engine.trainer import FitSettings, fit

    tok = train_tokenizer(["alpha beta gamma delta"] * 4, 300)
    settings = TinyModel(
        vocab_size=300, hidden_size=16, layers=1, heads=2, intermediate_size=32, max_positions=64
    )
    items = Formatter(tok, "alpaca_short", 64).encode_many([("alpha", "", "beta", None)] * 2)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    steps: list[int] = []
    with pytest.raises(MBError, match="asks for FSDP, but accelerate runs it as plain DDP"):
        fit(
            tiny_model(settings, tok, seed=2),
            items,
            SFTObjective(tok.pad_token_id),
            FitSettings(epochs=1, lr=1e-3, batch_size=2),
            tmp_path,
            tokenizer=tok,
            progress=False,
            on_step=steps.append,
        )
    assert steps == []


def test_a_checkpoint_cut_off_while_being_written_is_not_resumed(tmp_path):
    """A process killed mid-save leaves ``checkpoint-N`` without ``trainer_state.json`` (the
    Trainer writes it last): the one before it is resumed."""
    from mbtrain.engine.trainer import last_checkpoint

    for step, complete in ((2, True), (4, True), (6, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"")
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
