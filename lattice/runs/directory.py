"""The run directory: one lifecycle for ``lattice run`` and ``lattice train``
(docs/conventions.md §3).

A run directory belongs to one command. It holds that command's resolved ``config.toml``, a
``checkpoint.h5`` (:mod:`lattice.io.checkpoint`), a log and the command's products (an
ensemble, or a model). Its lifecycle:

1. **claim** (a new run): refuse a directory that holds a run of this command — finished or
   not — unless ``force``, and always refuse one that holds another command's files; with
   ``force`` remove only the files this command owns, then write the config;
2. **open** (a resume): the directory must hold this command's config;
3. **checkpoint** after every block of work, atomically, and **restore** from it with the
   structure check of :func:`lattice.io.checkpoint.read_checkpoint`;
4. **log**: a timestamped line in the log file, shown by the reporter unless asked not to.

A killed command therefore never loses more than one block, and a finished run, or another
command's directory, is never overwritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lattice.config.base import ConfigError, load_toml, read_config_text
from lattice.errors import LatticeError
from lattice.io.atomic import write_file_atomic
from lattice.io.checkpoint import (
    CheckpointError,
    read_checkpoint,
    read_checkpoint_attrs,
    write_checkpoint,
)
from lattice.io.failure import io_failure, io_reason, quiet_freed_hdf5
from lattice.runs.kinds import CONFIG, KIND_OF
from lattice.runs.progress import Reporter

__all__ = ["RunError", "JobError", "DivergedError", "RunDirectory", "free_space", "human_bytes"]


def free_space(path: Path) -> str:
    """ "X free" on the file system holding ``path`` (for messages about a full disk)."""
    try:
        return f"{human_bytes(shutil.disk_usage(path).free)} free"
    except OSError:
        return "free space unknown"


def human_bytes(n: float) -> str:
    """``1.08 MB``: a byte count in decimal units, three digits."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"


class RunError(LatticeError):
    """A command that cannot start (bad directory, data, edited config) or was stopped (an I/O
    failure, ``hard``: :class:`lattice.errors.LatticeError`)."""


class JobError(RunError):
    """An ensemble job (``lattice run``, ``resume``) that cannot start or was stopped."""


class DivergedError(JobError):
    """A run whose fields or observables stopped being finite: it stops, keeps what it
    committed before and its last good checkpoint, is marked ``diverged`` (never complete),
    and the CLI exits with status 3."""

    exit_code = 3


@dataclass(frozen=True)
class RunDirectory:
    """The files of one command's run directory.

    Attributes:
        root: the directory.
        command: what the directory is for, in messages ("run", "training").
        log_name: the log file's name (``run.log``, ``train.log``).
        table: the config table only this command's config has (``run``, ``train``).
        products: the other files the command writes there (removed by ``force``).
        foreign: files that mark another command's directory (never removed).
        error: the exception type raised for a refused directory.
    """

    root: Path
    command: str
    log_name: str
    table: str
    products: tuple[str, ...] = ()
    foreign: tuple[str, ...] = ()
    error: type[RunError] = RunError

    CONFIG = CONFIG
    CHECKPOINT = "checkpoint.h5"

    @property
    def config(self) -> Path:
        return self.root / self.CONFIG

    @property
    def checkpoint(self) -> Path:
        return self.root / self.CHECKPOINT

    @property
    def log_file(self) -> Path:
        return self.root / self.log_name

    def path(self, name: str) -> Path:
        return self.root / name

    def owned(self) -> list[Path]:
        """Every file this command may have written here (temporary files included)."""
        names = (self.CONFIG, self.CHECKPOINT, self.log_name, *self.products)
        return [self.root / n for n in names] + [
            self.root / (n + ".tmp") for n in (self.CONFIG, self.CHECKPOINT, *self.products)
        ]

    def other_command(self) -> str | None:
        """What marks the directory as another command's, naming the kind that is there (None
        if nothing does): a file of ``foreign``, a checkpoint that records another command
        (attribute ``command``), or a config without this command's table."""
        for n in self.foreign:
            if (self.root / n).exists():
                return f"{KIND_OF.get(n, 'another command')}: {n}"
        if self.checkpoint.is_file():
            try:
                command = self.checkpoint_attrs().get("command", self.command)
            except CheckpointError:
                command = self.command  # damaged: resume says so
            if command != self.command:
                return f"{KIND_OF.get(command, command)}: its {self.CHECKPOINT}"
        if self.config.is_file():
            try:
                tables = load_toml(read_config_text(self.config), str(self.config))
            except ConfigError:
                return f"an unreadable {self.CONFIG}"
            if self.table not in tables:
                other = next((KIND_OF[t] for t in ("train", "run") if t in tables), "a config")
                return f"{other}: {self.CONFIG} without [{self.table}]"
        return None

    def in_use(self) -> bool:
        """Whether a run of this command (finished or not) is here."""
        return any((self.root / n).exists() for n in (self.CONFIG, self.CHECKPOINT, *self.products))

    # ---------------------------------------------------------------- lifecycle
    def claim(self, config_toml: str, *, force: bool, describe: Callable[[], str]) -> None:
        """Make the directory this new run's: refuse one in use (``describe()`` says what is
        there, e.g. "a finished run is there; pass --force …") unless ``force``, which removes
        the files this command owns; then write the resolved config. A directory of another
        command is refused even with ``force``."""
        if self.root.exists() and not self.root.is_dir():
            raise self.error(f"{self.root}: exists and is not a directory; choose another -o")
        other = self.other_command()
        if other is not None:
            raise self.error(
                f"{self.root}: not a {self.command} directory ({other}); choose another directory"
            )
        if self.in_use() and not force:
            raise self.error(f"{self.root}: {describe()}")
        try:
            if self.in_use():
                for p in self.owned():
                    p.unlink(missing_ok=True)
            self.root.mkdir(parents=True, exist_ok=True)
            write_file_atomic(self.config, config_toml)
            # the first line at once: a run killed while it compiles still leaves its log
            self.log(None, f"{self.command} started by process {os.getpid()}", show=False)
        except OSError as e:
            raise self.error(f"{self.root}: cannot write there ({io_reason(e)})") from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive lock (``flock``) on the directory while this process writes in
        it: a second ``run``, a ``--force`` or a ``resume`` of it refuses, naming the holder's
        PID, before it writes anything. The lock is on the directory itself (no extra file)
        and goes with the process, however it ends."""
        if self.root.exists() and not self.root.is_dir():
            raise self.error(f"{self.root}: exists and is not a directory; choose another -o")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root, os.O_RDONLY)
        except OSError as e:
            raise self.error(f"{self.root}: cannot write there ({io_reason(e)})") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _lock_holder(self.root)
                who = f"process {holder}" if holder else "another process"
                raise self.error(
                    f"{self.root}: {who} is writing there (it holds the directory's lock); "
                    "wait for it to end, or stop it first"
                ) from None
            yield
        finally:
            os.close(fd)  # releases the lock

    def require_config(self, recorded: Callable[[], tuple[str, str] | None] | None = None) -> None:
        """A resume needs the directory's config. If it was deleted, ``recorded()`` may give
        the config text the run recorded and where (its ensemble, its checkpoint): the file is
        written back from it, and the log says so. Call it holding the lock."""
        if self.config.exists():
            return
        found = recorded() if recorded is not None and self.root.is_dir() else None
        if found is None:
            raise self.error(f"{self.root}: not a {self.command} directory (no {self.CONFIG})")
        text, source = found
        write_file_atomic(self.config, text)
        self.log(None, f"{self.CONFIG} was missing: written back from {source}", show=False)

    def save(self, tree: Any, attrs: dict[str, Any]) -> None:
        """Checkpoint ``tree`` and ``attrs`` (atomically), with the command that wrote it (the
        directory's kind, as data: attribute ``command``)."""
        write_checkpoint(self.checkpoint, tree, {**attrs, "command": self.command})

    def restore(self, template: Any) -> tuple[Any, dict[str, Any]]:
        """The checkpointed tree (structure of ``template``) and its attributes."""
        return read_checkpoint(self.checkpoint, template)

    def checkpoint_attrs(self) -> dict[str, Any]:
        return read_checkpoint_attrs(self.checkpoint)

    @contextlib.contextmanager
    def guard_io(self) -> Iterator[None]:
        """Turn every I/O failure inside (a full disk, a read-only or vanished file, a damaged
        HDF5 file) into one line, a ``hard`` :attr:`error`: what happened, the free space,
        that what was committed and the last checkpoint are safe, and how to continue."""
        with quiet_freed_hdf5():
            try:
                yield
            except (OSError, RuntimeError) as e:
                reason = io_failure(e)
                if reason is None:
                    raise  # not an I/O failure
                raise self.error(
                    f"{self.root}: stopped by an I/O error ({reason}; {free_space(self.root)}); "
                    f"what was committed and the last checkpoint are safe: fix the cause, then "
                    f"`lattice resume {self.root}`",
                    hard=True,
                ) from None

    def log(self, reporter: Reporter | None, message: str, show: bool = True) -> None:
        """Append a timestamped line to the log; show it through ``reporter`` too."""
        with open(self.log_file, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        if show and reporter is not None:
            reporter.log(message)


def _lock_holder(path: Path) -> int | None:
    """The PID holding a ``flock`` on ``path``, from /proc/locks (Linux); None elsewhere."""
    try:
        st = os.stat(path)
        ino = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        with open("/proc/locks") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 5 and parts[1] == "FLOCK" and parts[5] == ino:
                    return int(parts[4])
    except (OSError, ValueError):
        pass
    return None
