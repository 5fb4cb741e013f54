"""Running the geoseg command line out of process, for QGIS.

QGIS's own Python never imports torch or geoseg: each algorithm runs ``geoseg
--progress-json COMMAND …`` from the environment the settings name, reads its JSON lines
(progress, warnings, log lines, the one-line error) from stderr and relays them to the
Processing feedback. Cancel sends the process SIGTERM, on which geoseg unwinds as on
Ctrl-C: its outputs are whole or absent.

This module imports nothing from QGIS at module level, so the pieces that do not need it
(finding geoseg, parsing its events) can be used and tested without QGIS.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

SETTING = "GEOSEG_EXECUTABLE"  # the Processing setting: geoseg, or its environment's folder
ENV_VARIABLE = "GEOSEG_EXECUTABLE"
STOP_SECONDS = 30  # after SIGTERM, how long geoseg gets to clean up before it is killed
EOF_SECONDS = 5  # after geoseg ended, how long its last lines may take to arrive
OWN_EXIT_CODES = (0, 1, 2, 130)  # ok, geoseg's one-line error, a usage error, interrupted


class GeosegNotFound(Exception):
    """No geoseg executable where the settings, the environment or PATH say."""


def executable_in(place: str) -> str | None:
    """The geoseg executable that ``place`` names: the executable itself, or a venv's or
    conda environment's folder (``bin/geoseg``, ``Scripts/geoseg.exe``)."""
    path = Path(os.path.expanduser(place.strip()))
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    for candidate in (path / "bin" / "geoseg", path / "Scripts" / "geoseg.exe",
                      path / "geoseg", path / "geoseg.exe"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def find_geoseg(configured: str = "") -> str:
    """The geoseg executable: the setting, else ``$GEOSEG_EXECUTABLE``, else ``geoseg`` on
    PATH, else the usual places of a user install (``~/.local/bin``, a conda base)."""
    tried = []
    for source, place in (("the plugin's setting", configured),
                          (f"${ENV_VARIABLE}", os.environ.get(ENV_VARIABLE, ""))):
        if place:
            found = executable_in(place)
            if found:
                return found
            tried.append(f"{source} ({place})")
    on_path = shutil.which("geoseg")
    if on_path:
        return on_path
    home = Path.home()
    for guess in (home / ".local" / "bin", home / "miniforge3", home / "miniconda3",
                  home / "anaconda3", home / ".venv", home / "geoseg" / ".venv"):
        found = executable_in(str(guess))
        if found:
            return found
    where = "; ".join(tried) if tried else "no setting"
    raise GeosegNotFound(
        f"geoseg was not found ({where}, nor on PATH): install it (pip install geoseg, or "
        f"make install in a clone) and name its environment in Processing → Options → "
        f"Providers → geoseg")


def clean_environment() -> dict[str, str]:
    """The environment for geoseg: QGIS's Python paths removed, so geoseg's own Python
    sees only its own packages."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONUTF8"] = "1"  # its pipes in UTF-8 everywhere (Windows' default is not)
    return env


def parse_event(line: str) -> dict[str, Any] | None:
    """One of geoseg's JSON lines (``{"event": "progress", …}``), or None for other text."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


class Outcome:
    """What a geoseg run ended with."""

    def __init__(self) -> None:
        self.returncode: int | None = None
        self.error = ""
        self.cancelled = False
        self.stdout: list[str] = []


def run(args: Sequence[str], *, executable: str, on_progress: Callable[[float, str], None],
        on_info: Callable[[str], None], on_warning: Callable[[str], None],
        is_cancelled: Callable[[], bool], poll: float = 0.2) -> Outcome:
    """Run ``geoseg --progress-json ARGS`` and relay its events until it ends or
    ``is_cancelled()``; then it is stopped with SIGTERM (killed after STOP_SECONDS)."""
    command = [executable, "--progress-json", *args]
    on_info("geoseg " + " ".join(_quoted(a) for a in args))
    flags = subprocess.CREATE_NEW_PROCESS_GROUP if sys.platform == "win32" else 0
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, text=True, encoding="utf-8",
                               errors="replace", env=clean_environment(), creationflags=flags)
    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
    readers = [threading.Thread(target=_pump, args=(stream, name, lines), daemon=True)
               for stream, name in ((process.stdout, "stdout"), (process.stderr, "stderr"))]
    for reader in readers:
        reader.start()
    outcome = Outcome()
    open_streams = 2
    ended_at: float | None = None
    # Until both pipes close; a child that outlives geoseg and holds them open is not
    # waited for more than EOF_SECONDS after geoseg itself ended.
    while open_streams and (ended_at is None or time.monotonic() - ended_at < EOF_SECONDS):
        if ended_at is None and process.poll() is not None:
            ended_at = time.monotonic()
        if not outcome.cancelled and is_cancelled():
            outcome.cancelled = True
            _stop(process)
        try:
            name, line = lines.get(timeout=poll)
        except queue.Empty:
            continue
        if line is None:
            open_streams -= 1
            continue
        if name == "stdout":
            outcome.stdout.append(line.rstrip("\n"))
            on_info(line.rstrip("\n"))
            continue
        event = parse_event(line)
        if event is None:
            if line.strip():
                on_info(line.rstrip("\n"))
        elif event["event"] == "progress":
            on_progress(float(event.get("fraction", 0.0)), str(event.get("stage", "")))
        elif event["event"] == "warning":
            on_warning(str(event.get("message", "")))
        elif event["event"] == "error":
            outcome.error = str(event.get("message", ""))
        else:
            on_info(str(event.get("message", "")))
    outcome.returncode = process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    if not outcome.error and outcome.returncode not in (0, None) and not outcome.cancelled:
        outcome.error = f"geoseg stopped with exit code {outcome.returncode}"
    return outcome


def doctor(executable: str) -> list[str]:
    """``geoseg doctor``'s report, its warnings and its error, as lines."""
    warnings: list[str] = []
    outcome = run(["doctor"], executable=executable, on_progress=lambda *_: None,
                  on_info=lambda _line: None, on_warning=warnings.append,
                  is_cancelled=lambda: False)
    return [*outcome.stdout, *warnings, *([outcome.error] if outcome.error else [])]


def _pump(stream: Any, name: str, lines: queue.Queue[tuple[str, str | None]]) -> None:
    for line in iter(stream.readline, ""):
        lines.put((name, line))
    lines.put((name, None))


def _stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM (geoseg removes its temp files), then a kill if it does not end in time."""
    try:
        if sys.platform == "win32":
            process.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
        else:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
    except OSError:  # it had ended
        pass


def _quoted(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_./:=,+@%" for c in arg) else repr(arg)


def flag_args(values: Iterable[tuple[str, Any]]) -> list[str]:
    """``--flag value`` pairs from (flag, value); None, "" and False are left out, True is
    the flag alone."""
    out: list[str] = []
    for flag, value in values:
        if value is None or value == "" or value is False:
            continue
        out += [flag] if value is True else [flag, str(value)]
    return out
