"""The ``geoseg`` command line: thin commands that parse, call a pipeline and print.

Any :class:`~geoseg.errors.GeosegError` becomes one line on stderr and exit code 2;
``--debug`` shows the traceback instead. The group and shared helpers are in
:mod:`geoseg.cli.app`; each command module registers its commands on import.
"""

from geoseg.cli import (  # noqa: F401  (registers)
    calibrate,
    changes,
    imports,
    maps,
    models,
    plan,
    prompt,
    track,
)
from geoseg.cli.app import cli, main

__all__ = ["cli", "main"]
