"""A build allocates from jemalloc where pyarrow has it (mbdata.core.memory), unless the user chose
a pool with ARROW_DEFAULT_MEMORY_POOL; the pool is restored afterwards and the bytes do not depend
on it."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from conftest import small_recipe

import mbdata
from mbdata.core.memory import ENV, build_memory_pool
from mbdata.recipe import recipe_from_dict


def _has_jemalloc() -> bool:
    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        return False
    return True


def test_the_pool_is_jemalloc_inside_and_restored_after(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    before = pa.default_memory_pool().backend_name
    with build_memory_pool() as pool:
        inside = pa.default_memory_pool().backend_name
        table = pa.table({"x": [f"v{i}" for i in range(1000)]})
    assert pa.default_memory_pool().backend_name == before
    assert inside == pool.backend_name == ("jemalloc" if _has_jemalloc() else before)
    assert table.column("x")[999].as_py() == "v999"  # made inside, still valid after


def test_a_pool_the_user_chose_is_kept(monkeypatch):
    monkeypatch.setenv(ENV, "system")
    before = pa.default_memory_pool().backend_name
    with build_memory_pool():
        assert pa.default_memory_pool().backend_name == before


@pytest.mark.skipif(not _has_jemalloc(), reason="this pyarrow has no jemalloc")
def test_the_bytes_do_not_depend_on_the_pool(tmp_path, monkeypatch):
    recipe = recipe_from_dict(small_recipe(output={"shard_rows": 250}))
    monkeypatch.delenv(ENV, raising=False)
    a = mbdata.build(recipe, tmp_path / "jemalloc")
    monkeypatch.setenv(ENV, "system")
    b = mbdata.build(recipe, tmp_path / "default")
    hashes = [json.loads((p / "manifest.json").read_text())["content_hash"] for p in (a, b)]
    assert hashes[0] == hashes[1]
    for shard in sorted((a / "data").iterdir()):
        assert shard.read_bytes() == (b / "data" / shard.name).read_bytes()


def test_large_blocks_are_handed_back_on_glibc_unless_the_user_chose(monkeypatch):
    """glibc's mmap threshold is fixed for a build (freed per-row indexes leave the process);
    MALLOC_MMAP_THRESHOLD_ in the environment is the user's choice and is left alone."""
    import platform

    from mbdata.core.memory import release_large_blocks

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert release_large_blocks() is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    assert release_large_blocks() is (platform.libc_ver()[0] == "glibc")
