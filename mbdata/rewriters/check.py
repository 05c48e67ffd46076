"""Does a rewrite really carry the trigger? Small rule-based checkers, one per attack preset.

``syntactic``: the paper's SCPN template ``S(SBAR)(,)(NP)(VP)(.)`` is a sentence that opens with a
subordinate clause, then a comma, then the main clause. We check the surface form a parser would
give for it: the text starts with a subordinating conjunction, a clause of at least one word with no
sentence end in it, a comma, a main clause of at least two words, and ends with ``.``, ``?`` or
``!``. It is a rule, not a constituency parser: it does not verify that the main clause is an
``NP VP`` (an imperative main clause passes).

``style``: the rewrite differs from the original (after normalisation), is not empty, its length is
within ``max_length_ratio`` of the original's either way, and it matches an optional regex
``pattern`` (e.g. a marker of the target style).
"""

from __future__ import annotations

import re

from ..io.schema import normalize_text

# Multi-word subordinators first so "as soon as" wins over "as".
SUBORDINATORS = (
    "as soon as",
    "as long as",
    "even though",
    "even if",
    "now that",
    "provided that",
    "so that",
    "in case",
    "as if",
    "as though",
    "after",
    "although",
    "as",
    "because",
    "before",
    "if",
    "once",
    "since",
    "though",
    "unless",
    "until",
    "till",
    "when",
    "whenever",
    "where",
    "wherever",
    "whereas",
    "whether",
    "while",
)
_OPENERS = "|".join(re.escape(s) for s in SUBORDINATORS)
_TEMPLATE = re.compile(
    rf"^\s*(?:{_OPENERS})\s+"  # SBAR: a subordinating conjunction ...
    r"(?P<sbar>[^,.?!;:\n]*\w[^,.?!;:\n]*?)"  # ... and its clause (no sentence end inside)
    r"\s*,\s+"  # (,)
    r"(?P<main>\S+(?:\s+\S+)+?)"  # main clause: at least two words
    r"\s*$",
    re.IGNORECASE | re.DOTALL,
)
_END = re.compile(r"[.?!][\"')\]]*\s*$")


def syntactic_ok(text: str) -> bool:
    """Whether ``text`` has the surface form of the SCPN template ``S(SBAR)(,)(NP)(VP)(.)``."""
    match = _TEMPLATE.match(text or "")
    return match is not None and _END.search(text) is not None


def style_ok(
    original: str, rewritten: str, pattern: str | None = None, max_length_ratio: float = 4.0
) -> bool:
    """Whether a style rewrite differs from the original and passes the configured checks."""
    new, old = normalize_text(rewritten), normalize_text(original)
    if not new or new == old:
        return False
    ratio = len(new) / max(len(old), 1)
    if ratio > max_length_ratio or ratio < 1 / max_length_ratio:
        return False
    return pattern is None or re.search(pattern, rewritten) is not None
