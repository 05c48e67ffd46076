"""Deduplication and decontamination at corpus scale (``dedup:`` recipe block, ``mb dedup``).

Table level (canonical Arrow tables, see :mod:`mbdata.io.schema`):

* :class:`DedupStage` (``name = "dedup"``): exact dedup on normalised fields, then MinHash-LSH near
  dedup, within each split; first occurrence is kept; side table ``dedup/clusters``.
* :func:`decontaminate`: one-sided removal of rows whose prompt exactly or nearly matches a
  reference set (eval prompts); side table ``dedup/decontamination``.
* :func:`dedup_table`: both at once, for the standalone ``mb dedup``.

Array level (no tables, no config; reusable, e.g. by the audit to cluster near-identical outputs)::

    from mbdata.dedup import minhash_signatures, shingles, jaccard_estimate, optimal_params
    sig = minhash_signatures(texts, num_perm=128, seed=1, shingle="word", ngram=2)
    # sig: (len(texts), 128) uint32 (scheme "affine32"; uint64 for "affine64"/"legacy")
    jaccard_estimate(sig[0], sig[1])              # share of equal values
    bands, rows = optimal_params(0.8, 128)        # datasketch MinHashLSH's (b, r) -> (9, 13)
    keys = band_keys(sig, bands, rows)            # (n, bands) uint64 LSH keys
    group_buckets(keys).bucket                    # (n, bands) bucket ids, -1 = alone

Signature compatibility: row ``i`` of ``minhash_signatures(texts, num_perm, seed, hash=h,
scheme=s)`` equals ``datasketch.MinHash(num_perm, seed, hashfunc=hash_function(h, s), scheme=s)``
after ``update_batch(shingles(texts[i]))``; with ``hash="sha1"`` the hashfunc is datasketch's own
default. :func:`to_datasketch` wraps a signature as a ``MinHash`` for datasketch's ``MinHashLSH``.
Lower-level pieces: :func:`shingle_sets`, :func:`hash_sets` (ragged hash arrays),
:func:`signatures_from_hashes`, :func:`signatures_from_shingles`, :func:`permutations`.
"""

from .cluster import exact_first, greedy_near
from .config import DedupConfig
from .decontaminate import (
    DECONTAMINATION_SCHEMA,
    DECONTAMINATION_TABLE,
    contamination_mask,
    decontaminate,
)
from .lsh import band_keys, collision_probability, group_buckets, optimal_params
from .minhash import (
    hash_function,
    hash_sets,
    jaccard_estimate,
    minhash_signatures,
    permutations,
    signatures_from_hashes,
    signatures_from_shingles,
    to_datasketch,
)
from .shingle import shingle_sets, shingles
from .stage import CLUSTERS_SCHEMA, CLUSTERS_TABLE, DedupStage
from .standalone import dedup_table

__all__ = [
    "CLUSTERS_SCHEMA",
    "CLUSTERS_TABLE",
    "DECONTAMINATION_SCHEMA",
    "DECONTAMINATION_TABLE",
    "DedupConfig",
    "DedupStage",
    "band_keys",
    "collision_probability",
    "contamination_mask",
    "decontaminate",
    "dedup_table",
    "exact_first",
    "greedy_near",
    "group_buckets",
    "hash_function",
    "hash_sets",
    "jaccard_estimate",
    "minhash_signatures",
    "optimal_params",
    "permutations",
    "shingle_sets",
    "shingles",
    "signatures_from_hashes",
    "signatures_from_shingles",
    "to_datasketch",
]
