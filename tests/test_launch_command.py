"""``--accelerate-config``'s re-exec, without launching anything: the command line it builds and
the refusals it makes before a process starts (mbtrain.engine.launch)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mbdata.core.errors import MBError
from mbtrain.engine.launch import check_launch_config, launch_command, without_option


def test_option_and_its_value_are_dropped_in_both_spellings():
    argv = ["train", "stage1", "--accelerate-config", "a.yaml", "-o", "m", "--accelerate-config=b"]
    assert without_option(argv) == ["train", "stage1", "-o", "m"]


def test_launch_command_reruns_the_same_program_under_accelerate(tmp_path: Path):
    config = tmp_path / "ddp.yaml"
    cmd = launch_command(config, ["/bin/mb", "train", "stage1", "--accelerate-config", "x", "B"])
    assert cmd[:5] == [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
    ]
    assert cmd[5:] == ["/bin/mb", "train", "stage1", "B"]


def test_missing_config_is_one_line(tmp_path: Path):
    with pytest.raises(MBError, match="not found; write one with `accelerate config"):
        check_launch_config(tmp_path / "nope.yaml")


def test_fsdp_on_cpu_is_refused(tmp_path: Path):
    config = tmp_path / "fsdp.yaml"
    config.write_text("distributed_type: FSDP\nuse_cpu: true\n", encoding="utf-8")
    with pytest.raises(MBError, match="FSDP on CPU"):
        check_launch_config(config)


def test_not_yaml_is_one_line(tmp_path: Path):
    config = tmp_path / "bad.yaml"
    config.write_text("distributed_type: [FSDP\n", encoding="utf-8")
    with pytest.raises(MBError, match="is not YAML"):
        check_launch_config(config)


def test_plain_ddp_config_passes(tmp_path: Path):
    config = tmp_path / "ddp.yaml"
    config.write_text("distributed_type: MULTI_GPU\nuse_cpu: true\n", encoding="utf-8")
    check_launch_config(config)
