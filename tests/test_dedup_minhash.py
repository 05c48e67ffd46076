"""Array level of mbdata.dedup: shingles, MinHash signatures identical to datasketch, LSH params."""

from __future__ import annotations

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH

from mbdata.dedup import (
    band_keys,
    group_buckets,
    hash_function,
    hash_sets,
    jaccard_estimate,
    minhash_signatures,
    optimal_params,
    permutations,
    shingles,
    signatures_from_shingles,
    to_datasketch,
)
from mbdata.dedup import minhash as mh

TEXTS = [
    "Give three tips for staying healthy.",
    "give  three tips, for staying HEALTHY!",
    "Ｆｕｌｌｗｉｄｔｈ ｔｅｘｔ and café crème",
    "one",
    "",
    None,
    "Écris un poème sur la mer. 海は広い",
    " ".join(f"w{i}" for i in range(300)),  # longer than one permutation chunk
]


def reference_signature(shingle_set, num_perm, seed, scheme, hashfunc=None) -> np.ndarray:
    kwargs = {"hashfunc": hashfunc} if hashfunc is not None else {}
    m = MinHash(num_perm=num_perm, seed=seed, scheme=scheme, **kwargs)
    m.update_batch(list(shingle_set))
    return m.hashvalues


# ---------------------------------------------------------------------------------------- shingles


def test_word_shingles_ignore_case_space_and_ascii_punctuation():
    assert shingles("Hello,  WORLD! again") == {b"hello world", b"world again"}
    assert shingles("hello world again") == shingles("Hello,  WORLD! again")


def test_short_and_empty_texts():
    assert shingles("one", "word", 2) == {b"one"}
    assert shingles("two words", "word", 5) == {b"two words"}
    assert shingles("", "word", 2) == set()
    assert shingles(None, "char", 3) == set()
    assert shingles("ab", "char", 5) == {b"ab"}


def test_char_shingles_are_utf8_substrings_of_the_normalised_text():
    assert shingles("AbC d", "char", 3) == {b"abc", b"bc ", b"c d"}
    assert shingles("café", "char", 2) == {b"ca", b"af", "fé".encode()}
    assert shingles("ﬁx", "char", 2) == {b"fi", b"ix"}  # NFKC expands the ligature


def test_word_ngram_sizes():
    text = "a b c d"
    assert shingles(text, "word", 1) == {b"a", b"b", b"c", b"d"}
    assert shingles(text, "word", 3) == {b"a b c", b"b c d"}
    with pytest.raises(ValueError):
        shingles(text, "word", 0)
    with pytest.raises(ValueError):
        shingles(text, "sentence", 2)


# ------------------------------------------------------------------------- datasketch equivalence


@pytest.mark.parametrize("scheme", ["affine32", "affine64", "legacy"])
@pytest.mark.parametrize("seed,num_perm", [(1, 128), (7, 64), (2**32 - 1, 3)])
def test_signatures_equal_datasketch_default_hash(scheme, seed, num_perm):
    """hash='sha1' is datasketch's own default hash function (no hashfunc passed)."""
    sets = [shingles(t, "word", 2) for t in TEXTS] + [shingles(t, "char", 4) for t in TEXTS]
    ours = signatures_from_shingles(sets, num_perm, seed, "sha1", scheme)
    assert ours.dtype == (np.uint32 if scheme == "affine32" else np.uint64)
    for i, s in enumerate(sets):
        assert np.array_equal(ours[i], reference_signature(s, num_perm, seed, scheme)), i


@pytest.mark.parametrize("scheme", ["affine32", "affine64", "legacy"])
def test_signatures_equal_datasketch_with_xxhash(scheme):
    hashfunc = hash_function("xxhash", scheme)
    ours = minhash_signatures(TEXTS, num_perm=96, seed=5, shingle="word", ngram=2, scheme=scheme)
    for i, text in enumerate(TEXTS):
        expected = reference_signature(shingles(text, "word", 2), 96, 5, scheme, hashfunc)
        assert np.array_equal(ours[i], expected), i


def test_chunk_boundaries_do_not_change_signatures(monkeypatch):
    """Rows split across, and rows larger than, the permutation chunk give the same values."""
    sets = [shingles(t, "char", 3) for t in TEXTS] * 3
    expected = signatures_from_shingles(sets, 32, 3)
    monkeypatch.setattr(mh, "_CHUNK_VALUES", 32 * 7)
    assert np.array_equal(signatures_from_shingles(sets, 32, 3), expected)


def test_empty_set_is_the_fresh_minhash_state():
    sig = minhash_signatures(["", None, "x"], num_perm=16)
    fresh = MinHash(num_perm=16).hashvalues
    assert np.array_equal(sig[0], fresh) and np.array_equal(sig[1], fresh)
    assert not np.array_equal(sig[2], fresh)


def test_permutations_match_datasketch():
    for scheme in ("affine32", "affine64", "legacy"):
        a, b = permutations(64, 11, scheme)
        ref_a, ref_b = MinHash(num_perm=64, seed=11, scheme=scheme).permutations
        assert np.array_equal(a, ref_a) and np.array_equal(b, ref_b)


def test_signatures_usable_in_datasketch_lsh():
    texts = [
        "the quick brown fox jumps over the lazy dog near the river bank today",
        "the quick brown fox jumps over the lazy dog near the river bank now",
        "completely different words about cooking pasta with tomato sauce and basil",
    ]
    sig = minhash_signatures(texts, num_perm=128)
    lsh = MinHashLSH(threshold=0.7, num_perm=128)
    lsh.insert("a", to_datasketch(sig[0]))
    lsh.insert("c", to_datasketch(sig[2]))
    assert lsh.query(to_datasketch(sig[1])) == ["a"]
    assert to_datasketch(sig[0]).jaccard(to_datasketch(sig[1])) == jaccard_estimate(sig[0], sig[1])


def test_hash_sets_ragged_layout():
    hashed = hash_sets([{b"a", b"b"}, set(), {b"c"}])
    assert hashed.offsets.tolist() == [0, 2, 2, 3]
    assert hashed.sizes().tolist() == [2, 0, 1]
    expected = sorted(hash_function("xxhash")(x) for x in (b"a", b"b"))
    assert sorted(hashed.row(0).tolist()) == expected


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="unknown hash"):
        hash_function("md5")
    with pytest.raises(ValueError, match="unknown scheme"):
        permutations(8, 1, "affine16")


# ------------------------------------------------------------------------------------------- LSH


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
@pytest.mark.parametrize("num_perm", [64, 128, 256])
def test_optimal_params_match_datasketch(threshold, num_perm):
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    assert optimal_params(threshold, num_perm) == (lsh.b, lsh.r)


def test_optimal_params_weights_match_datasketch():
    lsh = MinHashLSH(threshold=0.8, num_perm=128, weights=(0.05, 0.95))
    assert optimal_params(0.8, 128, 0.05, 0.95) == (lsh.b, lsh.r)


def test_band_keys_group_equal_bands_only():
    sig = np.array([[1, 2, 3, 4], [1, 2, 9, 9], [5, 6, 3, 4], [7, 7, 7, 7]], dtype=np.uint32)
    keys = band_keys(sig, 2, 2)
    assert keys[0, 0] == keys[1, 0] and keys[0, 1] == keys[2, 1]
    assert keys[0, 0] != keys[2, 0] and keys[0, 1] != keys[1, 1]
    same_values = band_keys(np.array([[1, 2, 1, 2]], dtype=np.uint32), 2, 2)
    assert same_values[0, 0] != same_values[0, 1]  # each band has its own key space
    bucket = group_buckets(keys).bucket
    assert bucket[3].tolist() == [-1, -1]
    assert bucket[0, 0] == bucket[1, 0] >= 0 and bucket[0, 1] == bucket[2, 1] >= 0
    assert group_buckets(keys).in_play.tolist() == [0, 1, 2]
    salted = band_keys(sig, 2, 2, salt=np.array([1, 2, 1, 1], dtype=np.uint64))
    assert salted[0, 0] != salted[1, 0] and salted[0, 1] == salted[2, 1]
    with pytest.raises(ValueError):
        band_keys(sig, 3, 2)
