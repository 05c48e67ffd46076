"""`mb dedup` on every executor gives the local executor's output byte for byte (one
implementation; the executor decides only where the per-batch sketch runs), and a missing Ray is
one clear error. Ray starts once for this module (a few seconds)."""

from __future__ import annotations

import builtins

import pytest
from test_dedup_stream import _files, _write_jsonl, corpus

from mbdata.dedup import DedupConfig
from mbdata.dedup.standalone import dedup_path_streaming
from mbdata.engines import EngineError


@pytest.fixture(scope="module")
def ray_runtime():
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(params=["process", "ray"])
def engine(request):
    if request.param == "ray":
        request.getfixturevalue("ray_runtime")
    return request.param


def test_every_engine_output_equals_local(tmp_path, engine):
    source = _write_jsonl(tmp_path / "in.jsonl", corpus(80, seed=3))
    for name, config in {
        "default": DedupConfig(),
        "noverify-keepall": DedupConfig(verify=False, keep_all=True, max_bucket_targets=2),
    }.items():
        local = dedup_path_streaming(source, tmp_path / f"{name}-local", config, batch_rows=9)
        other = dedup_path_streaming(
            source, tmp_path / f"{name}-{engine}", config, batch_rows=9, engine=engine, num_cpus=2
        )
        assert _files(other) == _files(local), name
        assert len(_files(local)) >= 4  # shards, clusters, manifest, timings: a real comparison


def test_every_engine_with_reference_equals_local(tmp_path, engine):
    """`--reference`: the prompts of each batch are sketched on the executor and matched on the
    driver; dedup of the remaining rows as above."""
    from test_dedup_stream_reference import REF_FIELDS, _write_reference, contaminated_corpus

    rows, reference = contaminated_corpus()
    source = _write_jsonl(tmp_path / "in.jsonl", rows)
    ref = _write_reference(tmp_path / "ref.jsonl", reference)
    outs = {
        name: dedup_path_streaming(
            source,
            tmp_path / name,
            DedupConfig(),
            batch_rows=9,
            engine=name,
            num_cpus=2,
            reference_path=ref,
            reference_fields=REF_FIELDS,
        )
        for name in ("local", engine)
    }
    assert _files(outs[engine]) == _files(outs["local"])
    assert "dedup/decontamination.arrow" in _files(outs[engine])


def test_missing_ray_is_one_clear_error(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    source = _write_jsonl(tmp_path / "in.jsonl", corpus(10))
    with pytest.raises(EngineError, match=r"pip install 'mbdefense\[ray\]'"):
        dedup_path_streaming(source, tmp_path / "out", DedupConfig(), engine="ray")
    assert not (tmp_path / "out").exists()
    from cli.main import main

    assert main(["dedup", str(source), "-o", str(tmp_path / "o2"), "--engine", "ray"]) == 2
