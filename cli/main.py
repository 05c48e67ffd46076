"""Entry point of the ``mb`` command.

Commands only parse arguments and call the Python API. Errors a user can fix are
:class:`mbdata.core.errors.MBError`; they are printed as one line and exit with status 2. Ctrl-C exits
with 130 and SIGTERM the same way with 143: both unwind through the atomic writers, so nothing
half-written is left behind (see docs/safety.md).
"""

from __future__ import annotations

import importlib
import pkgutil
import signal
import sys
import threading

import click

from mbdata.core.atomic import os_error_message
from mbdata.core.errors import EXIT_USER_ERROR, MBError, printable

from . import commands as _commands


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mbdefense", prog_name="mb")
def cli() -> None:
    """mbdefense: build, audit and train on MB-Defense immunization datasets."""


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(_commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{_commands.__name__}.{info.name}")
        for command in getattr(module, "COMMANDS", []):
            cli.add_command(command)


_register_commands()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every ``finally`` and atomic writer cleans up."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def close_progress_bars() -> None:
    """Close every open tqdm bar, so a message printed next starts on a clean line of its own
    (an error raised mid-build would otherwise land after the bar's text)."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def fail(message: str) -> None:
    """Print an error message on its own line of stderr, after any progress bar is cleared."""
    close_progress_bars()
    click.echo(message, err=True)


def main(argv: list[str] | None = None) -> int:
    """Run ``mb``; returns the exit code (used by the console script and by tests)."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _run(argv)
    except Terminated:  # arrived outside _run's handlers (e.g. while printing)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(argv: list[str] | None) -> int:
    try:
        cli.main(args=argv, prog_name="mb", standalone_mode=False)
    except MBError as exc:
        fail(f"error: {exc}")
        return EXIT_USER_ERROR
    except OSError as exc:  # a full disk or a permission problem outside an atomic writer
        message = os_error_message(exc)
        if message is None:
            raise
        fail(f"error: {printable(message)}")
        return EXIT_USER_ERROR
    except Terminated:
        fail("terminated")
        return 143
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, Terminated):  # click wraps KeyboardInterrupt in Abort
            fail("terminated")
            return 143
        fail("aborted")
        return 130
    except KeyboardInterrupt:
        fail("interrupted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
