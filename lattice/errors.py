"""The one exception root of the package: every error a user can cause is a :class:`LatticeError`.

A ``LatticeError`` carries the process exit status the CLI ends with (docs/conventions.md §3):

* 2: bad input: a config key, a path, a file, the environment, or an I/O failure;
* 3: a run that diverged (:class:`lattice.runs.directory.DivergedError`).

The CLI catches ``LatticeError`` in one place, prints the one-line message and exits with
``exit_code``; library code never prints and never calls ``sys.exit``. The subclasses (one per
kind of input: :class:`~lattice.config.base.ConfigError`,
:class:`~lattice.io.ensemble.EnsembleError`,
:class:`~lattice.score.model.ModelError`, :class:`~lattice.runs.directory.RunError`, …) exist
so that a caller can catch one kind, not so that the CLI has to know them.

``hard``: after an I/O failure HDF5 may be unable to flush the objects of the failed file, and
freeing them at interpreter exit can crash h5py; the CLI then ends the process at once after the
message (``os._exit``), with nothing left to save.
"""

from __future__ import annotations

__all__ = ["LatticeError", "InputError"]


class LatticeError(Exception):
    """A user error with the exit status the CLI ends with (2 unless said otherwise)."""

    exit_code: int = 2
    hard: bool = False

    def __init__(self, message: str, exit_code: int | None = None, *, hard: bool = False):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
        self.hard = hard


class InputError(LatticeError, ValueError):
    """Bad input found by a library function (an option out of range, a file that does not
    fit the request); a ``ValueError`` too, for Python callers."""
