"""The ``lattice`` command (docs/conventions.md §3): thin over the library — parse, validate, call.

Exit status: 0 success, 1 a check failed, 2 bad input (config, paths, files) or an I/O
failure, 3 a run that diverged (docs/ensembles.md); never a traceback for bad input.

Every command imports what it uses inside its function, not at the top: measured on the 2-core
development machine, ``lattice --help`` takes 0.17 s so, against 3.35 s with the commands'
modules (jax, equinox, matplotlib, rich tables, the run and result layers) imported at the
top. Nothing else in the package imports inside functions without a comment saying why.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from typer.core import TyperGroup

from lattice.errors import LatticeError


class _Commands(TyperGroup):
    """The one place a command's error ends (docs/conventions.md §3):

    * a :class:`~lattice.errors.LatticeError` raised anywhere below a command is printed as
      one line and exits with its status (2 for bad input, 3 for a diverged run);
    * an anticipated failure of the system (an ``OSError``, HDF5's I/O ``RuntimeError``, input
      nested past Python's recursion limit, a number too large to convert) is one line and
      exit status 2;
    * anything else is a bug: one line, "please report", the path of a file holding the
      traceback (:func:`lattice.app.crash.crash_report`), and exit status 1. With
      ``LATTICE_TRACEBACK=1`` the traceback is printed instead.
    """

    def invoke(self, ctx):
        out.width = _out_width()  # per command: COLUMNS may differ between in-process calls
        try:
            return super().invoke(ctx)
        except LatticeError as e:
            _fail(str(e), e.exit_code, e.hard)
        except Exception as e:
            if type(e).__module__.startswith(("typer", "click")):
                raise  # the command line's own exits and usage errors
            _unanticipated(e)


def _unanticipated(e: Exception) -> None:
    """:class:`_Commands`' ending of an exception that is not a :class:`LatticeError`."""
    from lattice.app.crash import crash_report  # on the way out only (module docstring)
    from lattice.io.failure import io_failure

    reason = io_failure(e)
    if reason is not None:
        _fail(reason)
    if isinstance(e, RecursionError):
        _fail("the input is nested too deeply (Python's recursion limit was reached)")
    if isinstance(e, OverflowError):
        _fail(f"a number is too large ({str(e).splitlines()[0][:160]})")
    if os.environ.get("LATTICE_TRACEBACK") == "1":
        raise e
    where = crash_report(e, sys.argv)
    _fail(
        f"internal error {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''} "
        f"(a bug: please report it with the traceback in {where})",
        1,
    )


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Stochastic quantization of lattice phi^4 theory: ensembles, errors, samplers.",
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def _out_width() -> int | None:
    """The width stdout's tables are laid out for, read when a command starts: ``COLUMNS``
    when set, else the terminal's (None: rich asks it), else 120 (a pipe or a file)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    return None if sys.stdout.isatty() else 120


def _enable_x64() -> None:
    """Runs and checks compute in JAX's x64 mode (:func:`lattice.numerics.compile.require_x64`):
    the app is the one place that turns it on, before anything builds a JAX array. The
    persistent compilation cache goes on with it (:mod:`lattice.app.cache`)."""
    import jax  # here, like every import of a command (module docstring)

    jax.config.update("jax_enable_x64", True)
    _enable_cache()


def _enable_cache() -> None:
    from lattice.app.cache import enable_cache  # here, like every import of a command

    enable_cache()


def _fail(message: str, code: int = 2, hard: bool = False) -> None:
    err.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    if hard:  # after an I/O failure (lattice.runs.directory.RunError.hard): nothing to save
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise typer.Exit(code)


SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key: section.key=value (repeatable)."),
]


DistributedOpt = Annotated[
    bool,
    typer.Option(
        "--distributed",
        help="Multi-process run (jax.distributed): processes detected from Slurm or Open MPI.",
    ),
]
CoordinatorOpt = Annotated[
    str | None,
    typer.Option("--coordinator", help="host:port of process 0 of a multi-process run."),
]
ProcessesOpt = Annotated[
    int | None, typer.Option("--processes", help="Process count of a multi-process run.")
]
ProcessIdOpt = Annotated[
    int | None, typer.Option("--process-id", help="This process's index (0 … processes-1).")
]


def _processes(
    distributed, coordinator, processes, process_id, chains: int | None = None
) -> tuple[int, int] | None:
    """(index, count) of this process in a multi-process run, or None for a plain run.
    Bad options are refused before ``jax.distributed.initialize`` waits for the others."""
    if not (distributed or coordinator or processes is not None or process_id is not None):
        return None
    from lattice.runs.distributed import initialize

    if not distributed and (coordinator is None or processes is None or process_id is None):
        raise _Usage(
            "a multi-process run needs --coordinator, --processes and --process-id together "
            "(or --distributed to detect them from Slurm / Open MPI)"
        )
    if processes is not None and not (processes >= 1 and 0 <= (process_id or 0) < processes):
        raise _Usage(f"--process-id must be in 0 … {processes - 1} (got {process_id})")
    if chains is not None and processes is not None and chains % processes:
        raise _Usage(
            f"run.chains: {chains} chains cannot be split over {processes} processes "
            f"(allowed: a multiple of {processes})"
        )
    return initialize(coordinator, processes, process_id)


class _Usage(LatticeError):
    """Options of a command that do not go together."""


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Run config (TOML).")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Run directory.")] = None,
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing run.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    distributed: DistributedOpt = False,
    coordinator: CoordinatorOpt = None,
    processes: ProcessesOpt = None,
    process_id: ProcessIdOpt = None,
) -> None:
    """Generate an ensemble: thermalize, measure, save configurations, checkpoint.

    With --distributed (or --coordinator/--processes/--process-id) every process runs its
    share of the chains into RUN_DIR/shard-NNNN and RUN_DIR/manifest.json joins them
    (docs/scaling.md)."""
    from lattice.app.console import make_reporter
    from lattice.config.run import load_config
    from lattice.runs.sampling import default_run_dir, run_job

    _enable_x64()
    cfg = load_config(config, set_ or [])
    run_dir = output or default_run_dir(config)
    where = _processes(distributed, coordinator, processes, process_id, cfg.run.chains)
    if where is None:
        path = run_job(cfg, run_dir, force=force, reporter=make_reporter(quiet))
    else:
        from lattice.runs.distributed import run_sharded

        path = run_sharded(cfg, run_dir, *where, force=force, reporter=make_reporter(quiet))
    if not quiet:
        err.print(f"ensemble written to {path}")


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Training config (TOML) with [train] ensemble.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Model directory.")] = None,
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing model.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Train a score model by denoising score matching on an ensemble's saved configurations."""
    from lattice.app.console import make_reporter
    from lattice.app.plots import write_training_plots
    from lattice.config.train import load_train_config
    from lattice.runs.sampling import default_run_dir
    from lattice.runs.training import train_model

    cfg = load_train_config(config, set_ or [])
    _enable_cache()
    path = train_model(
        cfg,
        output or default_run_dir(config),
        force=force,
        reporter=make_reporter(quiet),
        config_dir=config.parent,
        on_trained=write_training_plots,
    )
    if not quiet:
        err.print(f"model written to {path}")


@app.command()
def resume(
    run_dir: Annotated[
        Path, typer.Argument(help="Run directory of an interrupted run, or a model directory.")
    ],
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    distributed: DistributedOpt = False,
    coordinator: CoordinatorOpt = None,
    processes: ProcessesOpt = None,
    process_id: ProcessIdOpt = None,
) -> None:
    """Continue an interrupted run or training from its last checkpoint (bitwise identical).

    A multi-process run resumes on the same number of processes (the same options as its
    `lattice run`), or shard by shard: `lattice resume RUN_DIR/shard-0001`."""
    from lattice.app.console import make_reporter
    from lattice.app.plots import write_training_plots
    from lattice.runs.sampling import resume_job
    from lattice.runs.training import is_training_dir, resume_training

    if is_training_dir(run_dir):
        _enable_cache()
        path = resume_training(
            run_dir, reporter=make_reporter(quiet), on_trained=write_training_plots
        )
        if not quiet:
            err.print(f"model complete: {path}")
        return
    _enable_x64()
    where = _processes(distributed, coordinator, processes, process_id)
    if where is None:
        from lattice.io.manifest import is_sharded

        if is_sharded(run_dir):
            raise _Usage(
                f"{run_dir}: a multi-process run; resume it with the options it ran with "
                f"(--distributed or --coordinator/--processes/--process-id), or resume "
                f"each of its shard directories"
            )
        path = resume_job(run_dir, reporter=make_reporter(quiet))
    else:
        from lattice.runs.distributed import resume_sharded

        path = resume_sharded(run_dir, *where, reporter=make_reporter(quiet))
    if not quiet:
        err.print(f"ensemble complete: {path}")


#: below this Kish ESS a log Z estimate is flagged as dominated by its largest weights
LOG_Z_MIN_ESS = 100


def _log_z_note(lz) -> str:
    """The line under a table with log Z: where it came from, and a warning for heavy tails."""
    note = (
        f"log_z = log mean(e^-S/q) over {lz.proposals} proposals (Lebesgue measure in the"
        f" config's field; jackknife error), importance ESS {lz.ess:.1f}"
    )
    if lz.ess < LOG_Z_MIN_ESS:
        note += (
            f"\n[yellow]heavy-tailed weights[/]: ESS {lz.ess:.1f} < {LOG_Z_MIN_ESS}, so log_z is"
            " dominated by its largest weights, biased low and its error too small; use more"
            " steps or proposals"
        )
    return note


@app.command()
def info(
    file: Annotated[
        Path, typer.Argument(help="ensemble.h5, a run directory, or a model directory.")
    ],
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Shape, action, sampler, chains, samples, and whether the run is complete (or, for a
    model directory, what the score model was trained on and how well)."""
    from lattice.app.console import json_line
    from lattice.results.info import TrainingInfo, describe

    what = describe(file)
    if json_:
        sys.stdout.write(json_line(what.to_json()))
    elif isinstance(what, TrainingInfo):
        out.print(what.text(), soft_wrap=True)
    else:
        from rich.markup import escape

        rows = what.rows()
        pad = max(len(k) for k, _ in rows)
        for k, v in rows:
            out.print(f"[bold]{k:>{pad}}[/]  {escape(v)}")


@app.command()
def measure(
    target: Annotated[Path, typer.Argument(help="Run directory or ensemble.h5.")],
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    discard: Annotated[int, typer.Option("--discard", help="Measurements dropped per chain.")] = 0,
    s_tau: Annotated[float, typer.Option("--S", help="Wolff's S_tau for the window.")] = 1.5,
    plots: Annotated[Path | None, typer.Option("--plots", help="Write PNG plots to DIR.")] = None,
) -> None:
    """Observables with Γ-method errors and integrated autocorrelation times."""
    from lattice.app.console import json_line
    from lattice.io.reader import open_ensemble
    from lattice.results.measure import measure_ensemble

    ens = open_ensemble(target)
    res = measure_ensemble(ens, discard=discard, S=s_tau)
    if plots is not None:
        from lattice.app.plots import write_measure_plots

        paths = write_measure_plots(ens, res, plots, discard=discard)
        err.print(f"{len(paths)} plots written to {plots}")
    if json_:
        sys.stdout.write(json_line(res.to_json()))
        return
    from lattice.app.tables import measure_tables

    for part in measure_tables(res, ens.path, out.width):
        out.print(part)
    lz, st = res.log_z, res.status
    if lz is not None:
        out.print(_log_z_note(lz))
    failed = [n for n, o in res.observables.items() if o.gamma.windowing_failed]
    if failed:
        out.print(
            f"[yellow]windowing failed[/] for {', '.join(failed)}: no window W ≤ N/2 met Wolff's "
            "criterion, so their τ_int and errors are lower bounds; run longer"
        )
    pairs = zip(res.G.value, res.G.error, strict=True)
    out.print("G(t): " + ", ".join(f"{v:.4g} ± {e:.2g}" for v, e in pairs))
    if res.exact_kind is not None:
        out.print(f"exact: {res.exact_kind}")
    from lattice.results.info import cluster_summary

    cl = cluster_summary(ens)
    if cl:
        out.print(f"clusters: {cl}")
    rw = res.reweighting
    if rw is not None:
        out.print(
            f"reweighted with the importance weights /weights/log_w (self-normalized): "
            f"ESS {rw.ess:.1f} of {rw.samples} samples ({rw.ess / rw.samples:.1%})"
            + (f", {rw.dropped} failed solves dropped" if rw.dropped else "")
        )
    diff = res.diffusion
    if diff is not None and diff.log_w_mean is None:
        out.print(
            f"diffusion proposals: acceptance {diff.acceptance:.3f}; no density, so no "
            f"weights (sampler exactness {res.exactness}); {diff.score_evaluations:.3g} score "
            f"evaluations and {diff.seconds:.3g} s per proposal"
        )
    elif diff is not None:
        out.print(
            f"diffusion proposals: acceptance {diff.acceptance:.3f}, log(e^-S/q) "
            f"mean {diff.log_w_mean:.3g}, std {diff.log_w_std:.3g}; importance ESS "
            f"{diff.ess_fraction:.1%} per proposal; {diff.score_evaluations:.3g} score "
            f"evaluations and {diff.seconds:.3g} s per proposal"
        )
        if diff.level_log_w_std:
            out.print(
                "per-level std of log(e^-S/q) (its parts, which sum to it): "
                + ", ".join(f"{k} {v:.3g}" for k, v in diff.level_log_w_std.items())
            )
    if not st.ok:
        err.print(f"note: the run is {st.state}: {st.detail}")


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (or ensemble.h5 files).")],
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    plots: Annotated[Path | None, typer.Option("--plots", help="Write PNG plots to DIR.")] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write a self-contained FILE.md or .html.")
    ] = None,
    discard: Annotated[int, typer.Option("--discard", help="Measurements dropped per chain.")] = 0,
    s_tau: Annotated[float, typer.Option("--S", help="Wolff's S_tau for the window.")] = 1.5,
) -> None:
    """Runs of one theory by different samplers: observables, τ_int, acceptance, cost per
    measurement and per independent sample, and z-scores between every pair (flagged above 4,
    or above the family-wise threshold when many runs are compared)."""
    import tempfile

    from lattice.app.console import json_line
    from lattice.results.compare import compare_runs, cost_per_independent_sample, unsure_note

    if report is not None and report.suffix.lower() not in (".md", ".html", ".htm"):
        _fail(f"--report: {report} must end in .md or .html")
    res = compare_runs(runs, discard=discard, S=s_tau)
    files = []
    if plots is not None or report is not None:
        from lattice.app.plots import write_compare_plots

        with tempfile.TemporaryDirectory() as tmp:
            files = write_compare_plots(res, plots if plots is not None else tmp)
            if report is not None:
                from lattice.app.report import write_report

                write_report(res, report, files)
                err.print(f"report written to {report}")
        if plots is not None:
            err.print(f"{len(files)} plots written to {plots}")
    if json_:
        from lattice.results.verdict import comparison_json

        sys.stdout.write(json_line(comparison_json(res)))
        return
    from lattice.app.tables import compare_tables

    for part in compare_tables(res, out.width):
        out.print(part)
    for i, r in enumerate(res.runs, 1):
        tr = r.cost.training_seconds
        extra = f"; model training {tr:.0f} s (not included above)" if tr is not None else ""
        lz = r.measurement.log_z
        if lz is not None:
            extra += f"; log_z {lz.value:.8g} ± {lz.error:.2g} (ESS {lz.ess:.0f})"
        out.print(f"{i}: {r.sampler}, {r.path} ({r.exactness}){extra}")
        if not r.status.ok:
            out.print(
                f"   [bold red]{r.status.state}[/]: {r.status.detail}; its cost (in parentheses)"
                " is not a finished run's and is left out of the cost verdict"
            )
    best = res.cheapest()
    if best is not None:
        k = res.runs.index(best) + 1
        sec, evals = cost_per_independent_sample(best)
        out.print(
            f"cheapest per independent |m| among the complete runs: {k} ({best.sampler}), "
            f"{sec:.3g} s and {evals:.3g} {best.cost.evals_unit}"
        )
    else:
        out.print("[bold red]no complete run[/]: no cost verdict")
    zs = ", ".join(f"{n} {z:.2f}" for n, z in res.consistency.items())
    out.print(f"max |z| between runs: {zs} (flagged above {res.z_flag:.3g})")
    for f in res.flagged:
        out.print(
            f"[bold red]FLAGGED[/] {f.observable}: {f.a} vs {f.b}: z = {f.z:+.2f}" + unsure_note(f)
        )


@app.command()
def levels(
    target: Annotated[Path, typer.Argument(help="A multilevel run directory or its ensemble.h5.")],
    ensemble: Annotated[
        Path | None,
        typer.Option("--ensemble", help="Configurations of the same theory (default: the run's)."),
    ] = None,
    configs: Annotated[int, typer.Option("--configs", help="Configurations redrawn.")] = 32,
    draws: Annotated[int, typer.Option("--draws", help="Redraws per configuration (M).")] = 16,
    steps: Annotated[
        int | None, typer.Option("--steps", help="K per level (default: the run's).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG plot to FILE.")] = None,
) -> None:
    """Which level limits a multilevel sampler: the acceptance of redrawing every level below
    each one, the coarser field kept (docs/multilevel.md §6)."""
    from lattice.app.console import json_line, make_reporter
    from lattice.results.levels import diagnose_run

    if not target.exists():
        _fail(f"{target}: no such run directory or ensemble")
    if plot is not None:  # a directory that cannot be made fails before the redraws
        from lattice.app.output import output_dir

        output_dir(plot.parent)
    _enable_x64()
    rep = make_reporter(json_)

    def progress(i, n, name):
        if i == 0:
            rep.start("redraws", n, 0)
        rep.advance(i, note=f"up to {name}")

    try:
        res = diagnose_run(
            target, ensemble, configurations=configs, draws=draws, steps=steps, seed=seed,
            progress=progress,
        )  # fmt: skip
        rep.advance(len(res.levels))
    finally:
        rep.finish()
    if plot is not None:
        from lattice.app.plots import plot_levels

        plot_levels(res, plot)
        err.print(f"plot written to {plot}")
    if json_:
        sys.stdout.write(json_line(res.to_json()))
        return
    from lattice.app.tables import levels_tables

    for part in levels_tables(res, out.width):
        out.print(part)
    for note in res.notes:
        out.print(note)


@app.command()
def check(
    target: Annotated[Path, typer.Argument(help="A run config (TOML) or a run directory.")],
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    plots: Annotated[Path | None, typer.Option("--plots", help="Write PNG plots to DIR.")] = None,
    samples: Annotated[
        int | None, typer.Option("--samples", help="Measurements per chain of the check runs.")
    ] = None,
    set_: SetOpt = None,
    no_extrapolation: Annotated[bool, typer.Option("--no-extrapolation")] = False,
    no_thermalization: Annotated[bool, typer.Option("--no-thermalization")] = False,
    no_fokker_planck: Annotated[bool, typer.Option("--no-fokker-planck")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Boltzmann-equilibrium checks; exit status 1 when one fails."""
    from lattice.app.console import json_line, make_reporter
    from lattice.results.checks import run_checks

    if samples is not None and samples < 20:
        _fail(f"--samples must be >= 20 (got {samples})")
    if not target.exists():
        _fail(f"{target}: no such config or run directory")
    if plots is not None:  # a directory that cannot be made fails before the checks run
        from lattice.app.output import output_dir

        output_dir(plots)
    _enable_x64()
    report = run_checks(
        target,
        samples=samples,
        overrides=tuple(set_ or ()),
        extrapolate=not no_extrapolation,
        thermalization=not no_thermalization,
        fokker_planck=not no_fokker_planck,
        reporter=make_reporter(quiet or json_),
    )
    if plots is not None:
        from lattice.app.plots import write_check_plots

        report.plots = [str(p) for p in write_check_plots(report, plots)]
    if json_:
        sys.stdout.write(json_line(report.as_dict()))
    else:
        from rich.table import Table

        t = Table(title=f"lattice check {target} ({report.seconds:.0f} s)")
        for col in ("check", "statistic", "tolerance", "result", "detail"):
            t.add_column(col, overflow="fold")
        for c in report.checks:
            res = ("[green]pass[/]" if c.passed else "[red]FAIL[/]") if c.verdict else "info"
            t.add_row(
                c.name, f"{c.statistic:.3g}", f"{c.relation} {c.tolerance:.3g}", res, c.detail
            )
        out.print(t)
        verdict = "all checks passed" if report.passed else "some checks FAILED"
        out.print(f"[bold]{verdict}[/]")
    raise typer.Exit(0 if report.passed else 1)


@app.command()
def cache(
    clear: Annotated[bool, typer.Option("--clear", help="Remove every cached program.")] = False,
) -> None:
    """The persistent compilation cache: where it is, its programs and their size
    (LATTICE_CACHE_DIR moves it, LATTICE_CACHE=off turns it off)."""
    from lattice.app.cache import cache_info, clear_cache

    info = clear_cache() if clear else cache_info()
    if info.directory is None:
        out.print("compilation cache: off (LATTICE_CACHE=off)")
        return
    size = f"{info.entries} programs, {info.bytes / 1e6:.1f} MB"
    text = f"compilation cache: {info.directory}: " + (f"removed {size}" if clear else size)
    out.print(text, soft_wrap=True)  # one line: a path is not broken


def main() -> None:
    app()


if __name__ == "__main__":
    main()
