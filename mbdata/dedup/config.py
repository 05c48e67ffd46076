"""The recipe's ``dedup:`` block.

Defaults are chosen for short instruction rows (Alpaca-sized, 10-100 words): word *bigrams* over
the whole row. A one-word edit in a 30-word row changes ``n`` of its ~30 shingles, so with 5-word
shingles such a near-copy scores Jaccard ~0.68 and is missed at threshold 0.8, with bigrams it
scores ~0.87 and is caught. ``fields: all`` by default because two rows with the same prompt but
different answers are *different* training signals (one of them may be the poison the audit must
see); dedup on the prompt alone is available but merges them.

Decontamination compares prompts only, which are short (~10-20 words): one substituted word in a
13-word prompt leaves word-bigram Jaccard ~0.71, hence its own, lower ``decontaminate_threshold``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..core.config import spec
from ..core.errors import RecipeError

FieldGroup = Literal["prompt", "output", "all"]
ShingleKind = Literal["word", "char"]
HashName = Literal["xxhash", "sha1"]
Scheme = Literal["affine32", "affine64", "legacy"]

# Default n-gram size per shingle kind (used when ``ngram`` is null).
DEFAULT_NGRAM = {"word": 2, "char": 5}
# Derivation weight of false negatives when candidates are verified (a spurious candidate then only
# costs one exact Jaccard; a missed pair is a silent miss) and when they are not (datasketch's 0.5).
FN_WEIGHT_VERIFIED = 0.95
FN_WEIGHT_UNVERIFIED = 0.5
# ``verify: null`` verifies candidates with exact Jaccard up to this many rows (the shingle-hash
# sets it needs take ~4 bytes per shingle, ~0.3 GB per million Alpaca rows).
VERIFY_AUTO_MAX_ROWS = 1_000_000


@dataclasses.dataclass(frozen=True)
class DedupConfig:
    """Exact and MinHash-LSH near deduplication, and near decontamination against eval prompts."""

    exact: bool = spec(
        True,
        doc="drop rows whose normalised `fields` equal an earlier row's "
        "(NFKC, case-folded, whitespace collapsed)",
    )
    near: bool = spec(
        True,
        doc="drop rows whose shingle Jaccard similarity to an earlier kept "
        "row is >= `threshold` (MinHash + LSH)",
    )
    fields: FieldGroup = spec(
        "all", doc="what is compared: prompt (system+instruction+input), output, or all text fields"
    )
    shingle: ShingleKind = spec(
        "word",
        doc="shingles: word n-grams or character n-grams "
        "(char suits short rows and unspaced scripts)",
    )
    ngram: int | None = spec(None, ge=1, le=64, doc="shingle size; null: 2 for word, 5 for char")
    num_perm: int = spec(128, ge=2, le=4096, doc="MinHash permutations (signature length)")
    threshold: float = spec(
        0.8, gt=0.0, le=1.0, doc="Jaccard similarity at or above which two rows are near duplicates"
    )
    bands: int | None = spec(
        None,
        ge=1,
        doc="LSH bands; null: derived from `threshold` by "
        "datasketch's MinHashLSH rule (see "
        "`false_negative_weight`)",
    )
    rows: int | None = spec(None, ge=1, doc="signature rows per LSH band (give with `bands`)")
    false_negative_weight: float | None = spec(
        None,
        gt=0.0,
        lt=1.0,
        doc="weight of missed pairs vs. spurious candidates when deriving "
        "bands/rows (false positives weigh 1 - this); null: 0.95 when "
        "candidates are verified, 0.5 (datasketch's) when not",
    )
    verify: bool | None = spec(
        None,
        doc="check LSH candidates with exact Jaccard; false: "
        "accept every candidate (datasketch semantics); null: "
        f"true up to {VERIFY_AUTO_MAX_ROWS:,} rows",
    )
    max_bucket_targets: int = spec(
        32,
        ge=1,
        doc="kept rows an LSH bucket offers as comparison targets (its earliest): "
        "bounds the work on template-heavy corpora; raise it to trade time for "
        "recall there",
    )
    hash: HashName = spec(
        "xxhash",
        doc="shingle hash: xxhash (fast) or sha1 (datasketch's default); width follows `scheme`",
    )
    scheme: Scheme = spec(
        "affine32", doc="MinHash permutation scheme, as datasketch 2.0's `scheme` argument"
    )
    hash_seed: int = spec(1, ge=0, le=2**32 - 1, doc="MinHash seed (datasketch's `seed`)")
    keep_all: bool = spec(
        False, doc="drop nothing: tag cluster members (`dup_cluster=<id>`, `dup_role=...`) instead"
    )
    decontaminate: bool = spec(
        True,
        doc="remove training rows whose prompt exactly or nearly "
        "matches an eval prompt (one-sided; read by `mb build`)",
    )
    decontaminate_threshold: float = spec(
        0.7,
        gt=0.0,
        le=1.0,
        doc="Jaccard threshold of a near prompt match in decontamination "
        "(lower than `threshold`: prompts are short, and a leaked eval "
        "prompt costs more than a lost training row)",
    )

    def validate(self, path: str) -> None:
        prefix = f"{path}." if path else ""
        if (self.bands is None) != (self.rows is None):
            missing = "rows" if self.rows is None else "bands"
            raise RecipeError(
                f"{prefix}{missing}: give `bands` and `rows` together (or neither "
                "to derive them from `threshold`)"
            )
        if (
            self.bands is not None
            and self.rows is not None
            and self.bands * self.rows > self.num_perm
        ):
            raise RecipeError(
                f"{prefix}bands: bands * rows = {self.bands * self.rows} exceeds "
                f"num_perm = {self.num_perm}"
            )

    @property
    def resolved_ngram(self) -> int:
        return self.ngram if self.ngram is not None else DEFAULT_NGRAM[self.shingle]

    def resolved_verify(self, n_rows: int) -> bool:
        return self.verify if self.verify is not None else n_rows <= VERIFY_AUTO_MAX_ROWS

    def resolved_fn_weight(self, verify: bool) -> float:
        if self.false_negative_weight is not None:
            return self.false_negative_weight
        return FN_WEIGHT_VERIFIED if verify else FN_WEIGHT_UNVERIFIED
