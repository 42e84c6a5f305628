"""What every edgeport CLI shares: ``--debug`` and the end of a failed command, through the one
error-type → exit-code table (``errors.EXIT_CODES``)."""

from __future__ import annotations

import traceback
from contextlib import contextmanager
from typing import Callable, Iterator

import click

from .errors import ExitCode, exit_code_for

__all__ = ["debug_option", "exit_on_error"]

debug_option = click.option("--debug", is_flag=True, help="On an internal error, print the full traceback.")


@contextmanager
def exit_on_error(debug: bool = False, echo: Callable[[str], None] = lambda m: click.echo(m, err=True)) -> Iterator[None]:
    """Turn an exception into its documented exit code and a one-line message on stderr.

    click's own usage errors and ``SystemExit`` pass through; an error edgeport raises on purpose exits
    with its type's code; anything else is an internal error (exit 1), with the traceback under ``--debug``.
    """
    try:
        yield
    except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
        raise
    except BaseException as exc:
        kind, code = exit_code_for(exc)
        if code == ExitCode.INTERNAL:
            if debug:
                traceback.print_exc()
            echo(f"Internal error: {type(exc).__name__}: {exc}"
                 + ("" if debug else " (run again with --debug for the traceback, and report it)"))
        elif code == ExitCode.INTERRUPTED:
            echo("Interrupted.")
        else:
            echo(f"Error ({kind.replace('_', ' ')}): {exc}")
        raise SystemExit(code) from exc
