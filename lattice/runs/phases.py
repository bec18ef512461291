"""The phases of an ensemble run: step-size tuning, the path-length pilot, thermalization and
measurement, each over blocks of steps (docs/conventions.md §4).

Tuning, thermalization and measurement are one loop, :func:`run_blocks`: it dispatches the
jitted ``lax.scan`` of block k+1 before it reads block k back to the host, so the device runs
ahead while the host checks, writes and checkpoints. What differs between the phases is the
jitted function (``tune``, ``evolve``, ``sample`` of :mod:`lattice.samplers`) and what the host
does with a block (nothing but a check while tuning, a checkpoint while thermalizing, a write,
a commit and a checkpoint on the writer thread while measuring).

Because every random number is a function of (seed, chain, step) and the chain states are
checkpointed bit for bit, a run resumed from any checkpoint produces exactly the same bits as
an uninterrupted run; dispatching ahead changes no number.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from lattice.io.writer import BackgroundWriter
from lattice.runs.assemble import Job, tuned, with_path_steps
from lattice.runs.compilations import Compilations, compilations
from lattice.runs.directory import JobError, RunDirectory
from lattice.runs.progress import Reporter
from lattice.runs.resources import block_size
from lattice.samplers.chains import evolve, sample
from lattice.samplers.tuning import dual_averaging, frozen_step, restart, tail_start, tune, windows

__all__ = [
    "Progress",
    "Diverged",
    "first_nonfinite",
    "checkpoint",
    "run_blocks",
    "tune_step",
    "choose_path_steps",
    "thermalize",
    "measure",
]


@dataclass
class Progress:
    """Where a run stands: the next step, the committed measurements and saved
    configurations, the seconds spent and the tuned step (the checkpoint's attributes)."""

    step: int = 0
    committed: int = 0
    saved_committed: int = 0
    seconds: float = 0.0
    tuned_step_size: float | None = None
    tuned_path_steps: int | None = None


class Diverged(Exception):
    """Raised where a block's values are found non-finite (possibly on the writer thread);
    the run turns it into :class:`~lattice.runs.directory.DivergedError`."""

    def __init__(self, chain: int, step: int, what: str):
        super().__init__(chain, step, what)
        self.chain, self.step, self.what = chain, step, what


def first_nonfinite(values: np.ndarray) -> tuple[int, int] | None:
    """(chain, index) of the earliest non-finite entry of ``values`` [n, chains, ...], or
    None when every entry is finite."""
    v = np.asarray(values)
    if v.dtype.kind not in "fc":
        return None
    bad = ~np.isfinite(v.reshape(v.shape[0], v.shape[1], -1)).all(-1)  # [n, chains]
    if not bad.any():
        return None
    n, chain = np.argwhere(bad)[0]  # row-major: the earliest index, then the lowest chain
    return int(chain), int(n)


def no_finite_weight(sampler, diag: dict[str, np.ndarray]) -> int | None:
    """The first chain none of whose proposals in a block ([n, chains]) had a finite
    log-weight, for a sampler with a density (Metropolis or weighted), else None. Such a chain
    rejects everything, or carries no weight: its measurements would describe its start."""
    log_w = diag.get("proposal_log_w")
    if log_w is None or not (sampler.traits.accept_reject or sampler.traits.weighted):
        return None
    dead = ~np.isfinite(np.asarray(log_w)).any(0)
    return int(np.argmax(dead)) if dead.any() else None


def _check_field(phi, step: int) -> None:
    """Raise :class:`Diverged` when a chain's field (host copy, [chains, ...]) is not finite
    after ``step`` steps."""
    bad = first_nonfinite(np.asarray(phi)[None])
    if bad is not None:
        raise Diverged(bad[0], step, "the field")


def checkpoint(job: Job, d: RunDirectory, states, p: Progress) -> None:
    """The chain states after ``p.step`` steps and the run's position, atomically."""
    tree = {"state": states, "keys": job.key_data}
    attrs = {
        "next_step": p.step,
        "committed": p.committed,
        "saved_committed": p.saved_committed,
        "seconds": p.seconds,
        "config_toml": job.cfg.to_toml(),
    }
    if job.ensemble_uuid is not None:
        attrs["ensemble_uuid"] = job.ensemble_uuid
    if job.tuned_step_size is not None:
        attrs["tuned_step_size"] = job.tuned_step_size
    if job.tuned_path_steps is not None:
        attrs["tuned_path_steps"] = job.tuned_path_steps
    d.save(jax.tree_util.tree_map(np.asarray, tree), attrs)


class Clock:
    """Where a phase's seconds go: the jitted loops' dispatch calls (tracing and compilation
    happen inside the call; the loop itself runs asynchronously after it returns, so a cached
    call takes well under a millisecond), and the wall time from the end of the first call
    (the first compilation) to the end of the phase, the loop's own time."""

    def __init__(self):
        self.first = 0.0  # the first call: tracing + compilation
        self.t_loop: float | None = None  # when the first call returned
        self.compiled = Compilations()  # the XLA compilations of the first call

    def call(self, fn, *args):
        t, before = time.perf_counter(), compilations()
        out = fn(*args)
        if self.t_loop is None:
            self.t_loop = time.perf_counter()
            self.first = self.t_loop - t
            self.compiled = compilations() - before
        return out

    def summary(self, job: Job, steps: int) -> str:
        """'N steps in X s (R steps/s, S site-updates/s), after compiling for Y s'."""
        loop = time.perf_counter() - (self.t_loop or time.perf_counter())
        sites = math.prod(job.theory.shape) * job.cfg.run.chains
        rate = steps / loop if loop > 0 else float("nan")
        return (
            f"{steps} steps in {loop:.2f} s ({rate:.0f} steps/s, {rate * sites:.3g} "
            f"site-updates/s) after the first call's compilation ({self.first:.2f} s)"
        )


#: dispatch(carry, first, n) -> (carry, outputs): one block's jitted loop (asynchronous)
Dispatch = Callable[[Any, int, int], tuple[Any, Any]]
#: on_block(first, n, carry, outputs) -> (progress position, mean acceptance): the host's part
OnBlock = Callable[[int, int, Any, Any], tuple[int, float]]


def run_blocks(
    name: str,
    blocks: list[tuple[int, int]],
    carry,
    dispatch: Dispatch,
    on_block: OnBlock,
    *,
    d: RunDirectory,
    reporter: Reporter,
    total: int,
    start: int,
) -> tuple[Any, Clock]:
    """The one phase loop. ``blocks`` are (first, count) pairs; block k+1 is dispatched
    before ``on_block`` reads block k back, so the device computes while the host works.
    The first dispatch (tracing and compilation) is logged; the progress bar ``name`` runs
    from ``start`` to ``total``. Returns the last carry and the phase's :class:`Clock`."""
    clock = Clock()
    if not blocks:
        return carry, clock
    pending = clock.call(dispatch, carry, *blocks[0])
    d.log(reporter, f"compiled the {name} loop in {clock.first:.2f} s "
                    f"({clock.compiled.describe()})", show=False)  # fmt: skip
    reporter.start(name, total, start)
    for k, (first, n) in enumerate(blocks):
        carry, out = pending
        if k + 1 < len(blocks):
            pending = clock.call(dispatch, carry, *blocks[k + 1])  # the device runs ahead
        reporter.advance(*on_block(first, n, carry, out))
    return carry, clock


def _tuning_blocks(n_tune: int, block: int) -> list[tuple[int, int]]:
    """Blocks of at most ``block`` steps that never cross a tuning window's start."""
    starts, out, step = windows(n_tune), [], 0
    while step < n_tune:
        end = min((w for w in starts if w > step), default=n_tune)
        n = min(block, end - step)
        out.append((step, n))
        step += n
    return out


def tune_step(job: Job, d: RunDirectory, writer, states, p: Progress, reporter, elapsed):
    """The step-size tuner over the first ``cfg.tuning_steps`` steps of thermalization
    (:mod:`lattice.samplers.tuning`); its state lives in memory only, so a run killed while
    tuning resumes from step 0 and tunes again, to the same bits. The frozen step is recorded
    in the ensemble's /config and in every later checkpoint. Returns the states and the job
    with the tuned sampler."""
    r, n_tune = job.cfg.run, job.cfg.tuning_steps
    target = job.cfg.sampler.target_acceptance
    if p.step != 0:
        raise JobError(f"{d.checkpoint}: a checkpoint inside the tuning steps; start again")
    da = dual_averaging(job.sampler.step_size, r.chains, job.dtype)
    if job.sharding is not None:
        da = jax.device_put(da, job.sharding)
    starts, tail0 = windows(n_tune), tail_start(n_tune)
    blocks = _tuning_blocks(n_tune, r.checkpoint_every * r.measure_every)
    last: list[Any] = []

    def dispatch(carry, first, n):
        states, da = carry
        w0 = max(w for w in starts if w <= first)
        if first == w0 and w0 > 0:
            da = restart(da)
        states, da, acc = tune(job.sampler, job.keys, states, da, first, w0, tail0, n, target)
        return (states, da), acc

    def on_block(first, n, carry, acc):
        _check_field(carry[0].phi, first + n)
        p.step = first + n
        last[:] = [np.asarray(acc, np.float64)]
        return p.step, float(np.mean(last[0]))

    (states, da), _ = run_blocks(
        "tuning", blocks, (states, da), dispatch, on_block, d=d, reporter=reporter,
        total=n_tune, start=0,
    )  # fmt: skip
    job = tuned(job, frozen_step(da, n_tune))
    acceptance = float(np.mean(last[0]))
    writer.record_config_attrs(
        {
            "sampler.tuned_step_size": job.sampler.step_size,
            "sampler.tuned_trajectory_length": job.cfg.sampler.steps * job.tuned_step_size,
            "sampler.tuned_steps": n_tune,
            "sampler.tuned_acceptance": acceptance,
        }
    )
    p.seconds = elapsed()
    checkpoint(job, d, states, p)
    d.log(
        reporter,
        f"tuned the step over {n_tune} steps: {job.sampler.step_size:.6g} x "
        f"{job.cfg.sampler.steps} steps; mean acceptance {acceptance:.3f} in the last "
        f"{blocks[-1][1]} tuning steps, target {target:g}",
    )
    return states, job


def choose_path_steps(job: Job, d: RunDirectory, writer, states, p: Progress, reporter, elapsed):
    """The path-length pilot (:mod:`lattice.samplers.pilot`) before the first step: K for the
    target acceptance, from ``PILOT_PROPOSALS`` proposals per K drawn from the seed's pilot
    stream. Its estimates live in memory until it ends, so a run killed during the pilot
    starts it again, to the same K. K and the ladder go to /config and every later
    checkpoint. Returns the job with the sampler at K."""
    # lazy: the estimator's module loads scipy, which a classical run never needs
    from lattice.samplers.pilot import PILOT_PROPOSALS, PLATEAU, cost, pilot, pilot_keys

    s, r = job.cfg.sampler, job.cfg.run
    if p.step != 0:
        raise JobError(f"{d.checkpoint}: a checkpoint after step 0 without the pilot's K")
    cap, target = s.steps, s.target_acceptance
    reporter.start("pilot", cap, 0)

    def told(k: int, a: float) -> None:
        reporter.advance(k, a)
        d.log(reporter, f"pilot: K = {k}, acceptance {a:.3f}", show=False)

    result = pilot(
        lambda k: with_path_steps(job, k).sampler,
        cap,
        target,
        pilot_keys(r.seed, PILOT_PROPOSALS, r.prng),
        job.theory.shape,
        job.dtype,
        told,
    )
    job = with_path_steps(job, result.chosen)
    writer.record_config_attrs(
        {
            "sampler.tuned_path_steps": result.chosen,
            "sampler.pilot_path_steps": np.asarray(result.path_steps, np.int64),
            "sampler.pilot_acceptance": np.asarray(result.acceptance, np.float64),
            "sampler.pilot_proposals": PILOT_PROPOSALS,
        }
    )
    p.seconds = elapsed()
    checkpoint(job, d, states, p)
    a = result.acceptance[result.path_steps.index(result.chosen)]
    msg = (
        f"chose K = {result.chosen} reverse steps by the pilot ({PILOT_PROPOSALS} proposals "
        f"per K, K = {', '.join(map(str, result.path_steps))}): acceptance {a:.3f}, "
        + (
            f"the fewest steps per independent proposal, K (2 - a)/a = {cost(result.chosen, a):.4g}"
            if target == "cost"
            else f"target {target:g}"
        )
    )
    if not result.reached:
        msg += (
            f"; the target was not reached up to the cap sampler.steps = {cap}, so K is the "
            f"smallest within {PLATEAU} of the best acceptance (the model limits it: train "
            "longer or a larger network to reach the target)"
        )
    d.log(reporter, msg)
    return job


def thermalize(job: Job, d: RunDirectory, states, p: Progress, reporter, elapsed):
    """Thermalization in blocks of checkpoint_every × measure_every steps, each checkpointed
    after a check that every chain's field is finite."""
    r = job.cfg.run
    block, step0 = r.checkpoint_every * r.measure_every, p.step
    blocks = [(s, min(block, r.thermalization - s)) for s in range(p.step, r.thermalization, block)]

    def dispatch(states, first, n):
        return evolve(job.sampler, job.keys, states, first, n)

    def on_block(first, n, states, acc):
        host = jax.device_get(states)  # the copy the checkpoint needs
        _check_field(host.phi, first + n)
        p.step, p.seconds = first + n, elapsed()
        checkpoint(job, d, host, p)
        return p.step, float(np.mean(acc))

    states, clock = run_blocks(
        "thermalization", blocks, states, dispatch, on_block, d=d, reporter=reporter,
        total=r.thermalization, start=step0,
    )  # fmt: skip
    if blocks:
        summary = clock.summary(job, p.step - step0)
        d.log(reporter, f"thermalized after {p.step} steps: {summary}", show=False)
    return states


def measure(job: Job, d: RunDirectory, writer, states, p: Progress, reporter, elapsed) -> None:
    """The measurement blocks: while the device computes block k+1, a
    :class:`~lattice.io.writer.BackgroundWriter` thread checks block k, writes it, commits it
    and checkpoints the states after it. A block with a non-finite observable or field is not
    written (:class:`Diverged`)."""
    r, sampler, theory, keys = job.cfg.run, job.sampler, job.theory, job.keys
    size = block_size(r.checkpoint_every, r.save_every)
    blocks = [(c, min(size, r.samples - c)) for c in range(p.committed, r.samples, size)]

    def at(measurements: int) -> int:
        """The step after ``measurements`` measurements."""
        return r.thermalization + measurements * r.measure_every

    def dispatch(states, first, n):
        states, *out = sample(sampler, theory, keys, states, at(first), n, r.measure_every,
                              r.save_every)  # fmt: skip
        return states, out

    def store(first, n, states, obs, diag, saved, saved_start):
        """Runs on the writer thread: check, write, commit, then checkpoint one block."""
        for name, v in [*obs.items(), ("the field", np.asarray(states.phi)[None])]:
            bad = first_nonfinite(v)
            if bad is not None:
                m = first + bad[1] if name != "the field" else first + n - 1
                raise Diverged(bad[0], at(m + 1), name)
        dead = no_finite_weight(sampler, diag)
        if dead is not None:
            raise Diverged(dead, at(first + n), "every proposal's log-weight in a block")
        obs = {name: np.swapaxes(v, 0, 1) for name, v in obs.items()}
        diag = {name: np.swapaxes(v, 0, 1) for name, v in diag.items()}
        writer.write_block(first, obs, diag)
        idx = np.arange(first, first + n)
        idx = idx[idx % r.save_every == 0] if r.save_every else idx[:0]
        if len(idx):
            writer.write_configs(saved, saved_start, idx)
        done = Progress(at(first + n), first + n, saved_start + len(idx), elapsed())
        writer.commit(done.committed, done.saved_committed, done.seconds, done.step)
        checkpoint(job, d, states, done)
        return done

    saved, step0 = p.saved_committed, p.step
    with BackgroundWriter() as bg:

        def on_block(first, n, states, out):
            nonlocal saved
            host = jax.device_get((states, *out))  # waits for block k only
            bg.submit(store, first, n, *host, saved)
            saved += len(range(first, first + n, r.save_every)) if r.save_every else 0
            return at(first + n), float(np.mean(host[2]["acceptance"]))

        _, clock = run_blocks(
            "sampling", blocks, states, dispatch, on_block, d=d, reporter=reporter,
            total=at(r.samples), start=p.step,
        )  # fmt: skip
        results = bg.drain()
    if results:
        p.step, p.committed, p.saved_committed = (
            results[-1].step,
            results[-1].committed,
            results[-1].saved_committed,
        )
        d.log(reporter, f"sampled {clock.summary(job, p.step - step0)}", show=False)
