"""Issue 14, finding 5 and the damaged-build crashes: inspect and export check shard hashes, and
every command turns a damaged build into a one-line exit-2 error (verify: mismatch lines, exit 1)."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from conftest import small_recipe

from cli.main import main


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    recipe = root / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            small_recipe(
                sources=[{"name": "s", "kind": "synthetic", "count": 400}], eval={"size": 20}
            )
        )
    )
    assert main(["build", str(recipe), "-o", str(root / "bld"), "--quiet"]) == 0
    return root / "bld"


@pytest.fixture
def bld(pristine, tmp_path):
    out = tmp_path / "bld"
    shutil.copytree(pristine, out)
    return out


def _train_shard(bld):
    manifest = json.loads((bld / "manifest.json").read_text())
    return bld / manifest["splits"]["train"]["shards"][0]["path"]


def _commands(bld, tmp_path):
    return [
        ["inspect", str(bld)],
        ["export", str(bld), "--format", "jsonl", "-o", str(tmp_path / "exp")],
        ["audit", str(bld), "-o", str(tmp_path / "aud"), "--quiet"],
        ["dedup", str(bld), "-o", str(tmp_path / "dd")],
    ]


def _one_line(capsys, needle):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err, err[:600]


def test_a_flipped_byte_is_caught_before_inspect_and_export(bld, tmp_path, capsys):
    shard = _train_shard(bld)
    data = bytearray(shard.read_bytes())
    at = data.find(b"desert")
    if at < 0:  # the word depends on the synthetic corpus; any text byte will do
        at = data.find(b"e", len(data) // 2)
    data[at + 2] ^= 0x20  # "desert" -> "deSert": same size, still valid Arrow
    shard.write_bytes(bytes(data))
    for argv in _commands(bld, tmp_path):
        assert main(argv) == 2, argv
        _one_line(capsys, "sha256 differs from the manifest")
    assert not (tmp_path / "exp").exists()
    assert main(["verify", str(bld)]) == 1
    assert "sha256" in capsys.readouterr().err


def test_a_truncated_shard_is_an_exit_2_error_everywhere(bld, tmp_path, capsys):
    shard = _train_shard(bld)
    shard.write_bytes(shard.read_bytes()[:100])
    for argv in _commands(bld, tmp_path):
        assert main(argv) == 2, argv
        _one_line(capsys, "the build is damaged")
    assert main(["verify", str(bld)]) == 1
    err = capsys.readouterr().err
    assert "size" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "manifest",
    [
        "[1, 2]",
        '"text"',
        '{"splits": []}',
        '{"splits": {"train": {"shards": [{"path": "../../x"}]}}}',
    ],
)
def test_a_malformed_manifest_is_an_exit_2_error_everywhere(bld, tmp_path, capsys, manifest):
    (bld / "manifest.json").write_text(manifest)
    for argv in [["verify", str(bld)], *_commands(bld, tmp_path)]:
        assert main(argv) == 2, argv
        _one_line(capsys, "manifest.json")


def test_an_intact_build_still_inspects_and_exports(bld, tmp_path):
    assert main(["inspect", str(bld)]) == 0
    assert main(["export", str(bld), "--format", "jsonl"]) == 0
    assert main(["verify", str(bld)]) == 0
