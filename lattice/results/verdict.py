"""The verdict of a sampler comparison, computed from a :class:`Comparison`: which runs agree,
which exact sampler is cheapest per independent |m|, and when a learned sampler's training
pays for itself. ``lattice compare`` shows it at the top of its report and under ``"verdict"``
in ``--json`` (docs/compare.md).

* Agreement: for each pair of runs the largest |z| over the observables, eq. (1) of
  :mod:`lattice.results.compare`; a pair agrees when it has no flagged observable, i.e. no
  |z| above the family-wise threshold z* (``Comparison.z_flag``).
* The cheapest exact sampler: among the runs whose status is complete and whose exactness is
  ``exact``, the fewest seconds and the fewest evaluations per independent |m|, 2 τ_int × the
  cost per measurement (:func:`cost_per_independent_sample`).
* Break-even of a learned sampler (a run with a trained model, ``cost.training_seconds`` T):
  with s_L its seconds per independent |m| and s_C those of the cheapest complete exact
  classical run (one without a model), training plus sampling costs T + N s_L against N s_C
  for N independent samples, equal at::

      N* = T / (s_C − s_L)        when s_L < s_C;                                    (1)

  otherwise the learned sampler never catches up and there is no break-even.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from lattice.results.compare import Comparison, RunSummary, cost_per_independent_sample

__all__ = ["Agreement", "BreakEven", "Pick", "Verdict", "comparison_json", "verdict"]


def _json(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


@dataclass(frozen=True)
class Agreement:
    """Runs ``a`` and ``b`` (1-based numbers and paths): their largest |z| over the
    observables (NaN when no z is finite), which observable it is, and whether they agree (no
    observable of the pair flagged above z*)."""

    a: int
    b: int
    path_a: str
    path_b: str
    max_abs_z: float
    observable: str | None
    agree: bool

    def to_json(self) -> dict[str, Any]:
        return _json(self)


@dataclass(frozen=True)
class Pick:
    """A run (1-based number, path, sampler) and its seconds and evaluations per independent
    |m|, 2 τ_int × the cost per measurement."""

    run: int
    path: str
    sampler: str
    seconds: float
    evals: float
    evals_unit: str

    def to_json(self) -> dict[str, Any]:
        return _json(self)


@dataclass(frozen=True)
class BreakEven:
    """A learned sampler's training seconds T, its seconds per independent |m| s_L, the
    cheapest complete exact classical run (``classical``, seconds s_C) and the break-even
    ensemble size N* = T / (s_C − s_L), eq. (1): None, with ``note`` saying why, when there
    is none."""

    learned: Pick
    exactness: str
    training_seconds: float
    classical: Pick | None
    samples: float | None
    note: str

    def to_json(self) -> dict[str, Any]:
        out = _json(self)
        out["learned"] = self.learned.to_json()
        out["classical"] = None if self.classical is None else self.classical.to_json()
        return out


@dataclass(frozen=True)
class Verdict:
    """What :func:`verdict` computes (module docstring); :meth:`to_json` is ``"verdict"`` of
    ``lattice compare --json`` and :meth:`sentences` its words in the report."""

    agree: bool
    max_abs_z: float
    observable: str | None
    z_flag: float
    pairs: tuple[Agreement, ...]
    cheapest_seconds: Pick | None
    cheapest_evals: Pick | None
    learned: tuple[BreakEven, ...]
    not_complete: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        """``{"agree", "max_abs_z", "observable", "z_flag", "pairs": [...], "cheapest_seconds",
        "cheapest_evals": {run, path, sampler, seconds, evals, evals_unit} | null, "learned":
        [{learned, exactness, training_seconds, classical, samples, note}], "not_complete"}``."""
        out = _json(self)
        out["pairs"] = [p.to_json() for p in self.pairs]
        for k in ("cheapest_seconds", "cheapest_evals"):
            out[k] = None if out[k] is None else out[k].to_json()
        out["learned"] = [b.to_json() for b in self.learned]
        out["not_complete"] = list(self.not_complete)
        return out

    def sentences(self) -> list[str]:
        """The verdict in words, one sentence per finding, for the report's top."""
        out = []
        z = "no finite z" if not math.isfinite(self.max_abs_z) else f"{self.max_abs_z:.2f}"
        where = f" ({self.observable})" if self.observable else ""
        if self.agree:
            out.append(f"All runs agree: max |z| = {z}{where}, below z* = {self.z_flag:.3g}.")
        else:
            bad = [f"{p.a} and {p.b}" for p in self.pairs if not p.agree]
            out.append(
                f"The runs do not all agree: max |z| = {z}{where} above z* = "
                f"{self.z_flag:.3g}; flagged pairs: {', '.join(bad)}."
            )
        if self.not_complete:
            runs = ", ".join(map(str, self.not_complete))
            out.append(f"Not complete, left out of the costs: run {runs}.")
        s, e = self.cheapest_seconds, self.cheapest_evals
        learned = {b.learned.run for b in self.learned}
        if s is None or e is None:
            out.append("No complete exact run: no cheapest exact sampler.")
        else:
            out.append(
                f"Cheapest exact sampler per independent |m|: run {s.run} ({s.sampler}) in "
                f"seconds, {s.seconds:.3g} s; run {e.run} ({e.sampler}) in evaluations, "
                f"{e.evals:.3g} {e.evals_unit}"
                + (" (model training not included)." if learned & {s.run, e.run} else ".")
            )
        for b in self.learned:
            L = b.learned
            head = (
                f"Learned sampler, run {L.run} ({L.sampler}, {b.exactness}): training "
                f"{b.training_seconds:.3g} s, then {L.seconds:.3g} s per independent |m|"
            )
            if b.samples is None:
                out.append(f"{head}; no break-even: {b.note}.")
            else:
                c = b.classical
                out.append(
                    f"{head}; it pays off against run {c.run} ({c.sampler}, {c.seconds:.3g} s) "
                    f"after N* = {b.samples:,.0f} independent |m| samples."
                )
        return out


def _pick(runs: tuple[RunSummary, ...], ok: list[int], which: int) -> Pick | None:
    """The run of ``ok`` (0-based indices) with the least finite cost ``which`` (0: seconds,
    1: evaluations) per independent |m|."""
    costs = {i: cost_per_independent_sample(runs[i]) for i in ok}
    costs = {i: c for i, c in costs.items() if math.isfinite(c[which])}
    if not costs:
        return None
    i = min(costs, key=lambda k: costs[k][which])
    r = runs[i]
    return Pick(i + 1, r.path, r.sampler, *costs[i], r.cost.evals_unit)


def _break_even(runs: tuple[RunSummary, ...], i: int, classical: Pick | None) -> BreakEven:
    r = runs[i]
    T = float(r.cost.training_seconds)
    learned = Pick(i + 1, r.path, r.sampler, *cost_per_independent_sample(r), r.cost.evals_unit)
    n, note = None, ""
    if not r.status.ok:
        note = f"the run is {r.status.state}, its cost is not a finished run's"
    elif classical is None:
        note = "no complete exact classical run to compare with"
    elif not learned.seconds < classical.seconds:
        note = (
            f"{learned.seconds:.3g} s per independent |m| against {classical.seconds:.3g} s "
            f"for run {classical.run} ({classical.sampler}): never cheaper"
        )
    else:
        n = T / (classical.seconds - learned.seconds)  # eq. (1)
    return BreakEven(learned, r.exactness, T, classical, n, note)


def verdict(comparison: Comparison) -> Verdict:
    """The :class:`Verdict` of ``comparison`` (module docstring)."""
    runs = comparison.runs
    index = {r.path: k for k, r in enumerate(runs, 1)}
    flagged = {frozenset((f.a, f.b)) for f in comparison.flagged}
    pairs = []
    for p in comparison.pairs:
        finite = {n: abs(z) for n, z in p.z.items() if math.isfinite(z)}
        top = max(finite, key=finite.__getitem__, default=None)
        pairs.append(
            Agreement(
                index[p.a], index[p.b], p.a, p.b,
                finite[top] if top is not None else math.nan, top,
                frozenset((p.a, p.b)) not in flagged,
            )
        )  # fmt: skip
    finite = {n: z for n, z in comparison.consistency.items() if math.isfinite(z)}
    top = max(finite, key=finite.__getitem__, default=None)
    exact = [k for k, r in enumerate(runs) if r.status.ok and r.exactness == "exact"]
    classical = [k for k in exact if runs[k].cost.training_seconds is None]
    best_classical = _pick(runs, classical, 0)
    return Verdict(
        agree=not comparison.flagged,
        max_abs_z=finite[top] if top is not None else math.nan,
        observable=top,
        z_flag=comparison.z_flag,
        pairs=tuple(pairs),
        cheapest_seconds=_pick(runs, exact, 0),
        cheapest_evals=_pick(runs, exact, 1),
        learned=tuple(
            _break_even(runs, k, best_classical)
            for k, r in enumerate(runs)
            if r.cost.training_seconds is not None
        ),
        not_complete=tuple(k for k, r in enumerate(runs, 1) if not r.status.ok),
    )


def comparison_json(comparison: Comparison) -> dict[str, Any]:
    """The object of ``lattice compare --json``: :meth:`Comparison.to_json` and, under
    ``"verdict"``, :meth:`Verdict.to_json` (kept here: ``compare`` cannot import this module
    without an import cycle)."""
    return {**comparison.to_json(), "verdict": verdict(comparison).to_json()}
