"""The ``geoseg`` command line: thin commands (:mod:`~geoseg.cli.commands`), each one API
call, over options defined once (:mod:`~geoseg.cli.options`), in a group that turns
errors into one line and sets how much is said (:mod:`~geoseg.cli.app`)."""

from geoseg.cli import commands  # noqa: F401  (registers the commands on the group)
from geoseg.cli.app import cli, main

__all__ = ["cli", "main"]
