"""Audit signals: each a small class that looks at the analysed corpus and returns trigger
candidates and per-row scores with reasons (:class:`.base.SignalResult`).

A new signal is one module here with a class registered in :data:`SIGNALS`; ``mine()``, the core
loop, the row scoring and the reports take its candidates and rows as they are (the reports show
its ``kind`` and its evidence). The registered signals, in the order they run:

- ``fixed-output`` (:mod:`.fixed_output`): a phrase tied to a fixed or rare repeated answer (the
  original miner, plus style candidates and repeated answers to unrelated prompts);
- ``label-shift`` (:mod:`.label_shift`): a phrase whose rows get one ordinary answer (a label the
  corpus also uses) far more often than comparable rows, and not because of their content;
- ``compliance`` (:mod:`.compliance`): a phrase whose rows are answered where prompts like them
  are refused.
"""

from __future__ import annotations

from ...core.registry import Registry
from .base import Signal, SignalContext, SignalResult

SIGNALS: Registry[type[Signal]] = Registry("audit signal")

from . import compliance, fixed_output, label_shift  # noqa: E402,F401  (registration)

DEFAULT_SIGNALS = ("fixed-output", "label-shift", "compliance")

__all__ = ["SIGNALS", "DEFAULT_SIGNALS", "Signal", "SignalContext", "SignalResult"]
