"""Whether mbdata may draw a progress bar: the one rule behind every bar it shows.

A bar redraws its line with carriage returns. On a terminal that is a bar; in a file (``2> log``,
CI, ``| tee``) it is ``^M``-separated debris, and an error printed afterwards shares a line with it
(issue 24). So a bar is drawn only when it is asked for *and* stderr is a terminal; ``--quiet``
(``progress=False``) draws nothing anywhere.
"""

from __future__ import annotations

import sys


def stderr_is_terminal() -> bool:
    """True when ``sys.stderr`` is an interactive terminal (False for files, pipes, a closed or
    replaced stream without ``isatty``)."""
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def show_progress(requested: bool | None) -> bool:
    """A bar is drawn when ``requested`` (None: the caller's default, here "yes") and stderr is a
    terminal; never otherwise."""
    return requested is not False and stderr_is_terminal()
