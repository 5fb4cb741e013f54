"""The ``geoseg`` group: one-line errors, verbosity, and how the process meets signals.

Errors from geoseg are printed as one line (``Error: <file>: <problem>``, options named
as flags) with exit code 1; bad arguments exit 2 (click's usage errors). ``--debug`` shows
the traceback instead. ``-q`` leaves only errors; ``-v`` says more (geoseg's loggers and
GDAL's). ``--progress-json`` makes progress, log lines, warnings and the error JSON lines
on stderr, for programs that run geoseg (:mod:`geoseg.progress`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from geoseg import __version__, progress
from geoseg.errors import GeoSegError, GeoSegWarning


class GeoSegGroup(click.Group):
    """A click group that turns exceptions into one-line errors (unless ``--debug``)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.ClickException as exc:
            if not progress.JSON:
                raise
            _error(exc.format_message(), exc.exit_code)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            hint = " (run it again with --resume to finish)" if ctx.invoked_subcommand == "run" else ""
            _error(f"interrupted{hint}", 130)
            ctx.exit(130)
        except BrokenPipeError:  # e.g. `geoseg info x.tif | head`: the reader left, not an error
            stdout_to_devnull()
            ctx.exit(0)
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            text = exc.text("cli") if isinstance(exc, GeoSegError) else (
                f"unexpected {type(exc).__name__}: {exc} (run with --debug for details)")
            _error(text, 1)
            ctx.exit(1)


def _error(message: str, exit_code: int) -> None:
    """The one-line error: ``Error: …`` on stderr, or its JSON event."""
    message = " ".join(message.split())
    if progress.JSON:
        progress.emit("error", message=message, exit_code=exit_code)
    else:
        click.echo(f"Error: {message}", err=True)


@click.group(cls=GeoSegGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geoseg")
@click.option("--show-versions", is_flag=True, expose_value=False, is_eager=True,
              callback=lambda ctx, _param, value: _show_versions(ctx) if value else None,
              help="Show the versions of geoseg, Python, GDAL, PROJ and every dependency, "
                   "and exit.")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("--progress-json", is_flag=True,
              help="Report progress, log lines, warnings and errors as JSON lines on stderr "
                   "(for programs that run geoseg, such as its QGIS plugin).")
@click.option("-v", "--verbose", count=True, help="More messages.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, progress_json: bool, verbose: int,
        quiet: bool) -> None:
    """geoseg: land-cover maps from large satellite and aerial GeoTIFFs.

    \b
    Quick start:
      geoseg sample-data data/ --size 2048
      geoseg predict data/scene_0.tif -o out/scene_0.mask.tif
    """
    import warnings

    ctx.obj = {"quiet": quiet}
    progress.JSON = progress_json
    if not (verbose or debug):  # GDAL default handler lines; its errors still reach us as exceptions
        os.environ.setdefault("CPL_LOG", os.devnull)
        # Dask distributed logs every worker start and stop at INFO; read at its import.
        os.environ.setdefault("DASK_DISTRIBUTED__LOGGING__DISTRIBUTED", "warning")
    level = logging.ERROR if quiet else (logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    _geoseg_logging(logging.ERROR if quiet else (logging.DEBUG if verbose else logging.INFO))
    if not verbose:
        warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.showwarning = _show_warning
    if quiet:
        warnings.filterwarnings("ignore", category=GeoSegWarning)


def _show_versions(ctx: click.Context) -> None:
    from geoseg.versions import show_versions

    click.echo(show_versions())
    ctx.exit(0)


class _StderrHandler(logging.StreamHandler):
    """Plain lines to ``sys.stderr`` as it is when each is written (a runner may swap it);
    with ``--progress-json``, ``log`` events."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if not progress.JSON:
            super().emit(record)
            return
        try:
            progress.emit("log", level=record.levelname.lower(), message=self.format(record))
        except Exception:  # as logging does: a broken handler never stops the work
            self.handleError(record)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler sets it; stderr it stays
        pass


def _geoseg_logging(level: int) -> None:
    """geoseg's own loggers speak to stderr in plain lines (``epoch 3/20  loss …``)."""
    logger = logging.getLogger("geoseg")
    logger.setLevel(level)
    logger.propagate = False
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """geoseg's own warnings as one line ``Warning: <file>: <problem>``; others as Python does."""
    import warnings

    if isinstance(message, GeoSegWarning):
        _warning(message.text("cli"))
    elif progress.JSON:  # another library's: one event, its category named
        _warning(f"{category.__name__}: {message}")
    else:
        click.echo(warnings.formatwarning(message, category, filename, lineno, line).rstrip(),
                   err=True)


def _warning(text: str) -> None:
    """A warning as one line: ``Warning: …`` on stderr, or its JSON event."""
    text = " ".join(text.split())
    if progress.JSON:
        progress.emit("warning", message=text)
    else:
        click.echo("Warning: " + text, err=True)


def say(ctx: click.Context, text: str) -> None:
    """Report a result on stdout (not with ``-q``)."""
    if not (ctx.obj or {}).get("quiet"):
        click.echo(text)


def say_on(ctx: click.Context, text: str) -> None:
    """Report progress; if the reader went away (``geoseg run ... | head``), the run goes on
    silently rather than stopping half done."""
    try:
        say(ctx, text)
    except BrokenPipeError:
        stdout_to_devnull()


def stdout_to_devnull() -> None:
    """After the reader of stdout left: later output goes nowhere instead of failing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main() -> None:
    import signal

    # A batch system stops jobs with SIGTERM (on Windows a program sends CTRL_BREAK, that
    # is SIGBREAK): unwind like Ctrl-C, so no temp file stays.
    signal.signal(signal.SIGTERM, _interrupt)
    if hasattr(signal, "SIGBREAK"):
        signal.signal(signal.SIGBREAK, _interrupt)
    sys.unraisablehook = redeliver_interrupts(sys.unraisablehook)
    cli(prog_name="geoseg")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def redeliver_interrupts(hook: Callable[[Any], None]) -> Callable[[Any], None]:
    """An interrupt that lands in a ``__del__`` is swallowed there (Python prints "Exception
    ignored in …" and a traceback): send it again instead, to be raised in ordinary code."""
    import signal

    if not hasattr(signal, "SIGALRM"):  # Windows: no timer signal to send it again with
        return hook
    signal.signal(signal.SIGALRM, _interrupt)

    def handle(unraisable: Any) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            signal.setitimer(signal.ITIMER_REAL, 0.01)  # after this hook has returned
        else:
            hook(unraisable)

    return handle
