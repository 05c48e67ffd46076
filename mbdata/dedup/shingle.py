"""Shingles: the sets whose Jaccard similarity near-dedup estimates.

The definitions are exact and byte-level so that anyone can rebuild the same sets (and, with the
same hash function, the same datasketch ``MinHash``) from a text:

* the text is first normalised with :func:`mbdata.io.schema.normalize_text` (Unicode NFKC, case-fold,
  whitespace collapsed to single spaces);
* ``word`` shingles: the normalised text is UTF-8 encoded, every ASCII punctuation byte becomes a
  space, and the tokens are the space-separated runs. A shingle is ``n`` consecutive tokens joined
  by one space (bytes). Punctuation is ignored so ``"Hello, world!"`` and ``"hello world"`` agree;
  non-ASCII punctuation (curly quotes, CJK marks) stays inside tokens. Scripts without spaces
  should use ``char`` shingles;
* ``char`` shingles: every ``n``-character substring of the normalised text (punctuation and spaces
  included), UTF-8 encoded;
* a text shorter than ``n`` tokens/characters gives one shingle, the whole text; an empty text gives
  the empty set (such rows take no part in near dedup: their similarity is undefined).

The public functions return ``set`` objects of ``bytes``; the hot path uses ordered lists (repeats
included) and hashes all of a batch's shingles in one call (:mod:`.minhash`).
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from ..io.schema import normalize_text

_ASCII_PUNCT = string.punctuation.encode("ascii")
_PUNCT_TO_SPACE = bytes.maketrans(_ASCII_PUNCT, b" " * len(_ASCII_PUNCT))


def word_tokens(normalized: str) -> list[bytes]:
    """UTF-8 word tokens of an already normalised text (ASCII punctuation separates tokens)."""
    return normalized.encode("utf-8").translate(_PUNCT_TO_SPACE).split()


def word_shingle_list(normalized: str, n: int) -> list[bytes]:
    """Word ``n``-gram shingles of an already normalised text, in order (repeats included).

    The hot path uses lists: building a set costs more than hashing the few repeats, which change
    neither the MinHash signature nor the Jaccard similarity (computed on unique hash values).
    """
    tokens = word_tokens(normalized)
    if len(tokens) <= n:
        return [b" ".join(tokens)] if tokens else []
    if n == 1:
        return tokens
    if n == 2:
        return list(map(b" ".join, zip(tokens, tokens[1:])))
    return list(map(b" ".join, zip(*[tokens[i:] for i in range(n)])))


def char_shingle_list(normalized: str, n: int) -> list[bytes]:
    """Character ``n``-gram shingles of an already normalised text, in order (repeats included)."""
    if len(normalized) <= n:
        return [normalized.encode("utf-8")] if normalized else []
    if normalized.isascii():
        data = normalized.encode("ascii")
        return [data[i : i + n] for i in range(len(data) - n + 1)]
    return [normalized[i : i + n].encode("utf-8") for i in range(len(normalized) - n + 1)]


def word_shingles(normalized: str, n: int) -> set[bytes]:
    """Word ``n``-gram shingle set of an already normalised text."""
    return set(word_shingle_list(normalized, n))


_SHINGLERS = {"word": word_shingle_list, "char": char_shingle_list}


def shingler(kind: str):
    """The hot-path shingle function for ``kind`` (``word``/``char``): ``(normalised text, n)`` ->
    list of shingles (repeats included)."""
    try:
        return _SHINGLERS[kind]
    except KeyError:
        raise ValueError(
            f"unknown shingle kind {kind!r}; expected one of {', '.join(_SHINGLERS)}"
        ) from None


def shingles(
    text: str | None, kind: str = "word", n: int = 2, *, normalize: bool = True
) -> set[bytes]:
    """The shingle set of one text, as used by dedup (feed it to ``datasketch.MinHash.update_batch``
    to get the same signature as :func:`mbdata.dedup.minhash_signatures`)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    norm = normalize_text(text) if normalize else (text or "")
    return set(shingler(kind)(norm, n))


def shingle_sets(
    texts: Iterable[str | None], kind: str = "word", n: int = 2, *, normalize: bool = True
) -> list[set[bytes]]:
    """:func:`shingles` of many texts."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    make = shingler(kind)
    if normalize:
        return [set(make(normalize_text(t), n)) for t in texts]
    return [set(make(t or "", n)) for t in texts]
