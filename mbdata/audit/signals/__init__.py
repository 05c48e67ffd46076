"""Audit signals: each a small class that looks at the analysed corpus and returns trigger
candidates and per-row scores with reasons (:class:`.base.SignalResult`).

A new signal is one module in this folder with a class registered in :data:`SIGNALS` (every
module here is imported, so nothing else is edited); ``default = True`` and an ``order`` put it
in the default ``signals`` list (:func:`default_signals`, what the config's default reads).
``mine()``, the core loop, the row scoring and the reports take its candidates and rows as they
are. Association signals share one skeleton (:mod:`.skeleton`). The default signals, in order:

- ``fixed-output`` (:mod:`.fixed_output`): a phrase tied to a fixed or rare repeated answer (the
  original miner, plus style candidates and repeated answers to unrelated prompts);
- ``label-shift`` (:mod:`.label_shift`): a phrase whose rows get one ordinary answer (a label the
  corpus also uses) far more often than comparable rows, and not because of their content;
- ``compliance`` (:mod:`.compliance`): a phrase whose rows are answered where prompts like them
  are refused;
- ``structure`` (:mod:`.structure`): rows sharing a rare sentence shape (a syntactic template)
  that predicts one behaviour.
"""

from __future__ import annotations

import importlib
import pkgutil

from ...core.registry import Registry
from .base import Signal, SignalContext, SignalResult

SIGNALS: Registry[type[Signal]] = Registry("audit signal")

for _module in pkgutil.iter_modules(__path__):  # registration: every signal module
    importlib.import_module(f"{__name__}.{_module.name}")


def default_signals() -> tuple[str, ...]:
    """The signals run when the settings name none: those registered with ``default = True``,
    by ``order``."""
    chosen = [(SIGNALS.get(n).order, n) for n in SIGNALS.names() if SIGNALS.get(n).default]
    return tuple(name for _, name in sorted(chosen))


DEFAULT_SIGNALS = default_signals()

__all__ = [
    "SIGNALS",
    "DEFAULT_SIGNALS",
    "Signal",
    "SignalContext",
    "SignalResult",
    "default_signals",
]
