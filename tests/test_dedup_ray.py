"""`mb dedup --engine ray` gives the local engine's output byte for byte (one shared Ray runtime:
starting Ray costs seconds), and a missing Ray is one clear error."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
from test_dedup_stream import _files, _write_jsonl, corpus

from mbdata.dedup import DedupConfig
from mbdata.dedup.ray_engine import label_components
from mbdata.dedup.standalone import dedup_path_streaming
from mbdata.engines import EngineError


@pytest.fixture(scope="module")
def ray_runtime():
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def test_ray_engine_output_equals_local(tmp_path, ray_runtime):
    source = _write_jsonl(tmp_path / "in.jsonl", corpus(80, seed=3))
    for name, config in {
        "default": DedupConfig(),
        "noverify-keepall": DedupConfig(verify=False, keep_all=True, max_bucket_targets=2),
    }.items():
        local = dedup_path_streaming(source, tmp_path / f"{name}-local", config, batch_rows=9)
        on_ray = dedup_path_streaming(
            source, tmp_path / f"{name}-ray", config, batch_rows=9, engine="ray"
        )
        assert _files(on_ray) == _files(local), name


def test_ray_engine_with_reference_equals_local(tmp_path, ray_runtime):
    """`--reference` on Ray: decontamination on the driver, dedup of the remaining rows on Ray."""
    from test_dedup_stream_reference import REF_FIELDS, _write_reference, contaminated_corpus

    rows, reference = contaminated_corpus()
    source = _write_jsonl(tmp_path / "in.jsonl", rows)
    ref = _write_reference(tmp_path / "ref.jsonl", reference)
    outs = {
        engine: dedup_path_streaming(
            source,
            tmp_path / engine,
            DedupConfig(),
            batch_rows=9,
            engine=engine,
            reference_path=ref,
            reference_fields=REF_FIELDS,
        )
        for engine in ("local", "ray")
    }
    assert _files(outs["ray"]) == _files(outs["local"])
    assert "dedup/decontamination.arrow" in _files(outs["ray"])


def test_label_propagation_finds_components():
    rows = np.array([5, 7, 9, 3, 12])
    roots = np.array([1, 5, 7, 2, 11])
    nodes, labels = label_components(rows, roots)
    assert dict(zip(nodes.tolist(), labels.tolist())) == {
        1: 1,
        5: 1,
        7: 1,
        9: 1,
        2: 2,
        3: 2,
        11: 11,
        12: 11,
    }


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
