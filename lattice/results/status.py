"""Whether a run's numbers are a finished run's: complete, incomplete, diverged or stuck.

``measure`` and ``compare`` report every run with its status (the tables and the ``status``
key of ``--json``; docs/conventions.md §3), so that a broken run never reads as a healthy one:

* ``diverged``: the run stopped on a non-finite field or observable (its ensemble's root
  attribute ``diverged``); what it committed before is kept, but it is not the planned run.
* ``stuck``: a chain never moved. Its sampler has an accept/reject step (and no cluster
  updates, which move a chain on their own) and the chain accepted nothing over every
  committed measurement, or the sampler has a density and none of the
  chain's proposal log-weights (or importance weights) is finite. Its measurements describe
  its start, whatever their error bars say.
* ``incomplete``: fewer measurements committed than planned (killed, or still running).
* ``complete``: none of the above.

The first that applies, in this order, is the status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lattice.io.ensemble import Ensemble

__all__ = ["RunStatus", "run_status", "STATES"]

STATES = ("complete", "incomplete", "diverged", "stuck")


@dataclass(frozen=True)
class RunStatus:
    """A run's status (one of :data:`STATES`) and one line saying why."""

    state: str
    detail: str

    @property
    def ok(self) -> bool:
        """Whether the run is a finished, healthy run (its cost may be compared)."""
        return self.state == "complete"

    def to_json(self) -> dict[str, Any]:
        return {"status": self.state, "status_detail": self.detail}


def _chains(mask: np.ndarray) -> str:
    idx = np.flatnonzero(mask)
    head = ", ".join(str(int(i)) for i in idx[:8])
    return head + (f" and {len(idx) - 8} more" if len(idx) > 8 else "")


def _stuck(ens: Ensemble) -> str | None:
    """Why a chain of ``ens`` never moved (module docstring), or None."""
    if ens.committed == 0:
        return None
    traits = ens.run_config.sampler.traits
    clusters = ens.config_attrs.get("sampler.cluster", "none") not in ("none", None)
    if traits.accept_reject and not clusters:  # cluster updates move a chain HMC does not
        acc = np.asarray(ens.acceptance, np.float64)
        dead = ~(acc != 0).any(axis=1)  # NaN counts as nothing accepted
        if dead.any():
            return (
                f"acceptance 0 over all {ens.committed} measurements in chain(s) "
                f"{_chains(dead)}: those chains never left their start"
            )
    diag = ens.diagnostics or {}
    weights = [("proposal log-weight", diag.get("proposal_log_w"))]
    weights.append(("importance weight", ens.weights))
    if traits.accept_reject or traits.weighted:
        for what, w in weights:
            if w is None:
                continue
            dead = ~np.isfinite(np.asarray(w, np.float64)).any(axis=1)
            if dead.any():
                return f"no finite {what} in chain(s) {_chains(dead)}"
    return None


def run_status(ens: Ensemble, stuck: bool = True) -> RunStatus:
    """The :class:`RunStatus` of an opened ensemble (module docstring). ``stuck=False`` leaves
    out the stuck-chain test, which validates the run's config and so imports JAX (``lattice
    info`` of a run does not)."""
    done = f"{ens.committed}/{ens.samples} measurements"
    if ens.diverged:
        why = ens.diverged.split(";")[0].removeprefix("diverged: ")
        return RunStatus("diverged", f"{why} ({done} committed)")
    why = _stuck(ens) if stuck else None
    if why is not None:
        return RunStatus("stuck", why)
    if not ens.complete:
        return RunStatus("incomplete", f"{done} committed")
    return RunStatus("complete", done)
