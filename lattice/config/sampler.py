"""``[sampler]``: one schema per sampler kind, as a union discriminated on ``kind``.

Each kind is one pydantic model. It owns its keys and their defaults, refuses the keys of
other kinds with a message naming the kinds that use them, declares its traits (exactness,
order, accept/reject, weights: :class:`lattice.samplers.base.Traits`) and builds its
:class:`~lattice.samplers.base.Sampler`. The sampler factories of :mod:`lattice.samplers`
take every parameter explicitly, so these classes hold the only copy of the defaults.

Adding a sampler, or an option of one, is one class (or one field) here, its row in
docs/config.md and its tests (docs/architecture.md).

>>> s = Hmc(steps=4)
>>> s.kind, s.scheme, s.trajectory_length, s.leapfrog_step
('hmc', 'leapfrog', 1.0, 0.25)
>>> Langevin(step_size=0.02).traits.order
1
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, PlainValidator, StrictBool, StrictStr, field_validator, model_validator

from lattice.config.base import PosFloat, PosInt, Section, positive_or_auto, rule, show
from lattice.numerics.exact import free_field_observables
from lattice.numerics.fourier import fourier_mass2_auto
from lattice.numerics.phi4 import Phi4
from lattice.samplers import diffusion as diffusion_sampler
from lattice.samplers import hmc as hmc_sampler
from lattice.samplers import langevin as langevin_sampler
from lattice.samplers import mala as mala_sampler
from lattice.samplers.base import Sampler, Traits
from lattice.samplers.cluster import with_clusters
from lattice.score import flow

__all__ = [
    "SamplerSchema",
    "Langevin",
    "Mala",
    "Hmc",
    "Diffusion",
    "SamplerSection",
    "SCHEMAS",
    "KINDS",
    "SCHEMES",
    "DIFFUSION_DENSITY_METHODS",
]

# Keys several kinds share, each with its one default.
FourierAcceleration = Annotated[StrictBool, Field(default=False)]
FourierMass2 = Annotated[float | str, PlainValidator(positive_or_auto), Field(default="auto")]
Cluster = Annotated[Literal["none", "sw"], Field(default="none")]
ClusterEvery = Annotated[PosInt, Field(default=1)]


class SamplerSchema(Section):
    """What every kind's schema declares. Field order is the order of ``to_toml``."""

    #: the kind's integrators; the first one is the default
    SCHEMES: ClassVar[tuple[str, ...]] = ()
    #: keys of other kinds this kind refuses with a reason of its own (else "only used by …")
    REFUSED: ClassVar[dict[str, str]] = {}
    #: whether ``fourier_acceleration = true`` is available for the kind
    FOURIER: ClassVar[bool] = False

    kind: str

    @model_validator(mode="before")
    @classmethod
    def _before(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        cls._refuse_keys_of_other_kinds(data)
        return cls._resolve(data)

    @classmethod
    def _resolve(cls, data: Mapping[str, Any]) -> Mapping[str, Any]:
        """The kind's own resolution of the raw table (defaults that depend on other keys)."""
        return data

    @classmethod
    def _refuse_keys_of_other_kinds(cls, data: Mapping[str, Any]) -> None:
        kind = cls.model_fields["kind"].default
        for key in data:
            if key in cls.model_fields:
                continue
            if key in cls.REFUSED:
                raise rule(key, cls.REFUSED[key])
            users = [k for k, s in SCHEMAS.items() if key in s.model_fields]
            if users:
                raise rule(key, f"only used by {', '.join(users)} (kind = {kind!r})")
        if data.get("fourier_acceleration") is True and not cls.FOURIER:
            raise rule(
                "fourier_acceleration",
                f"only available for {', '.join(k for k, s in SCHEMAS.items() if s.FOURIER)}"
                f" (got true with kind = {kind!r})",
            )

    @model_validator(mode="after")
    def _scheme_fits_kind(self) -> SamplerSchema:
        scheme = getattr(self, "scheme", None)
        if scheme not in self.SCHEMES:
            raise rule(
                "scheme",
                f"must be one of {', '.join(self.SCHEMES)} for kind = {self.kind!r}"
                f" (got {show(scheme)})",
            )
        return self

    @property
    def leapfrog_step(self) -> float | None:
        """HMC's integrator step trajectory_length / steps (None for other kinds)."""
        return None

    @property
    def traits(self) -> Traits:
        """The sampler's declared traits, without building it."""
        raise NotImplementedError

    def needs_model(self) -> bool:
        """Whether :meth:`build` needs a trained model (loaded by the run layer)."""
        return False

    def needs_pilot(self) -> bool:
        """Whether a run starts with the path-length pilot (:mod:`lattice.samplers.pilot`)."""
        return False

    def is_multilevel(self) -> bool:
        """Whether the sampler is the multilevel proposal (docs/multilevel.md)."""
        return False

    def lacks_model_defaults(self) -> bool:
        """Whether some key's default depends on the model (:meth:`with_model_defaults`)."""
        return False

    def with_model_defaults(self, model: Any) -> SamplerSchema:
        """This section with the defaults that depend on the trained ``model`` filled in."""
        return self

    def divergence_hint(self) -> str:
        """What to change after a run with this sampler diverged (the run's message)."""
        return "check the sampler's settings"

    def free_field_reference(self, theory: Phi4) -> tuple[dict[str, Any], str]:
        """(the exact values of what this sampler samples on a free field, a description):
        the e^{−S} values (:func:`lattice.numerics.exact.free_field_observables`), unless the
        kind's stationary law differs at a finite step (Langevin)."""
        return free_field_observables(theory), "exact free field"

    def build(self, theory: Phi4, **resources: Any) -> Sampler:
        """The sampler of this section for ``theory`` (with cluster updates if asked for).

        ``resources`` are what the kind needs from files, loaded by the caller (the run layer):
        the diffusion sampler's ``model`` and ``norm`` table."""
        base = self._build(theory, **resources)
        if getattr(self, "cluster", "none") == "sw":
            return with_clusters(base, theory, self.cluster_every)
        return base

    def _build(self, theory: Phi4, **resources: Any) -> Sampler:
        raise NotImplementedError


class Langevin(SamplerSchema):
    """Langevin in fictitious time (asymptotically exact as ε → 0)."""

    SCHEMES: ClassVar[tuple[str, ...]] = ("euler", "rk2")
    FOURIER: ClassVar[bool] = True

    kind: Literal["langevin"] = "langevin"
    step_size: PosFloat = 0.01
    scheme: StrictStr = "euler"
    fourier_acceleration: FourierAcceleration
    fourier_mass2: FourierMass2
    noise_precision: Literal["single", "full"] = "single"
    cluster: Cluster
    cluster_every: ClusterEvery

    @property
    def traits(self) -> Traits:
        return langevin_sampler.traits(self.scheme)

    def divergence_hint(self) -> str:
        return f"lower sampler.step_size (now {self.step_size:g})"

    def free_field_reference(self, theory: Phi4) -> tuple[dict[str, Any], str]:
        """The exact finite-ε values of the scheme (with Fourier acceleration if used)."""
        m2 = None
        if self.fourier_acceleration:
            auto = self.fourier_mass2 == "auto"
            m2 = fourier_mass2_auto(theory) if auto else self.fourier_mass2
        vals = free_field_observables(
            theory, step_size=self.step_size, scheme=self.scheme, fourier_mass2=m2
        )
        what = f"exact free field at the run's step size ({self.scheme}, eps = {self.step_size})"
        return vals, what

    def _build(self, theory: Phi4, **resources: Any) -> Sampler:
        return langevin_sampler.langevin(
            theory,
            self.step_size,
            scheme=self.scheme,
            fourier_acceleration=self.fourier_acceleration,
            fourier_mass2=self.fourier_mass2,
            noise_precision=self.noise_precision,
        )


class Mala(SamplerSchema):
    """The Metropolis-adjusted Langevin algorithm (exact)."""

    SCHEMES: ClassVar[tuple[str, ...]] = ("euler",)
    REFUSED: ClassVar[dict[str, str]] = {
        "noise_precision": "only used by langevin (kind = 'mala'; exact samplers always draw "
        "at the run's precision)",
    }

    kind: Literal["mala"] = "mala"
    step_size: PosFloat = 0.01
    scheme: StrictStr = "euler"
    fourier_acceleration: FourierAcceleration
    fourier_mass2: FourierMass2
    cluster: Cluster
    cluster_every: ClusterEvery

    @property
    def traits(self) -> Traits:
        return mala_sampler.traits()

    def divergence_hint(self) -> str:
        return f"lower sampler.step_size (now {self.step_size:g})"

    def _build(self, theory: Phi4, **resources: Any) -> Sampler:
        return mala_sampler.mala(theory, self.step_size)


class Hmc(SamplerSchema):
    """Hybrid Monte Carlo: ``steps`` integrator steps per trajectory (exact), with a
    Fourier-space mass if ``fourier_acceleration`` (:mod:`lattice.samplers.hmc` eq. (1))."""

    SCHEMES: ClassVar[tuple[str, ...]] = ("leapfrog", "omelyan")
    REFUSED: ClassVar[dict[str, str]] = {
        "step_size": "not used by hmc (its step is trajectory_length / steps)",
        "noise_precision": "only used by langevin (kind = 'hmc'; exact samplers always draw "
        "at the run's precision)",
    }

    FOURIER: ClassVar[bool] = True

    kind: Literal["hmc"] = "hmc"
    scheme: StrictStr = "leapfrog"
    fourier_acceleration: FourierAcceleration
    fourier_mass2: FourierMass2
    trajectory_length: PosFloat = 1.0
    steps: PosInt = 10
    cluster: Cluster
    cluster_every: ClusterEvery
    #: tune the integrator step for this mean acceptance during the first half of
    #: thermalization (:mod:`lattice.samplers.tuning`); None: the configured step, untuned
    target_acceptance: float | None = None

    @field_validator("target_acceptance")
    @classmethod
    def _acceptance_is_a_probability(cls, v: float | None) -> float | None:
        if v is not None and not 0 < v < 1:
            raise rule("", f"must be between 0 and 1, exclusive (got {show(v)})")
        return v

    def tuned(self, step_size: float) -> Hmc:
        """This sampler with the integrator step ``step_size`` frozen by the tuner: the same
        ``steps``, trajectory_length = steps × step_size, no tuning."""
        return self.model_copy(
            update={"trajectory_length": self.steps * step_size, "target_acceptance": None}
        )

    @property
    def leapfrog_step(self) -> float:
        return self.trajectory_length / self.steps

    def divergence_hint(self) -> str:
        return f"raise sampler.steps (leapfrog step {self.leapfrog_step:g})"

    @property
    def traits(self) -> Traits:
        return hmc_sampler.traits()

    def _build(self, theory: Phi4, **resources: Any) -> Sampler:
        return hmc_sampler.hmc(
            theory,
            self.trajectory_length,
            self.steps,
            self.scheme,
            fourier_acceleration=self.fourier_acceleration,
            fourier_mass2=self.fourier_mass2,
        )


#: diffusion methods whose proposals carry an exact weight (Metropolis or reweighting)
DIFFUSION_DENSITY_METHODS = diffusion_sampler.DENSITY_METHODS
DIFFUSION_PATH_METHODS = diffusion_sampler.PATH_METHODS


class Diffusion(SamplerSchema):
    """A trained score model as the proposal of an independence sampler (docs/diffusion.md).

    The keys of each method default here; a key of another method is refused."""

    SCHEMES: ClassVar[tuple[str, ...]] = ("none",)
    REFUSED: ClassVar[dict[str, str]] = {
        "step_size": "not used by diffusion",
        "trajectory_length": "not used by diffusion",
        "noise_precision": "only used by langevin (kind = 'diffusion'; exact samplers always "
        "draw at the run's precision)",
    }
    #: the defaults of each method's keys; the keys themselves are the kernel's
    #: (``diffusion_sampler.OPTIONS``). A key without a default here stays unset unless given
    #: (None: the kernel's default), so that the resolved configs of runs made before the key
    #: existed keep their bits (``solver`` of ``method = "ode"``).
    METHOD_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "ode": {"rtol": 1e-5, "atol": 1e-5, "max_steps": 4096, "divergence": "exact"},
        "sde": {},  # kernel: resolved against the model when a run starts (runs layer)
        "pc": {"snr": 0.16, "corrector_steps": 1},
        "annealed": {"steps_per_level": 5, "step_scale": 0.1},
        "multilevel": {"transfer": False},
    }

    kind: Literal["diffusion"] = "diffusion"
    scheme: StrictStr = "none"
    fourier_acceleration: FourierAcceleration
    fourier_mass2: FourierMass2
    steps: PosInt = 100
    cluster: Cluster
    cluster_every: ClusterEvery
    model: StrictStr
    method: Literal["ode", "sde", "pc", "annealed", "multilevel"] = "sde"
    metropolis: StrictBool
    rtol: PosFloat | None = None
    atol: PosFloat | None = None
    max_steps: PosInt | None = None
    divergence: Literal["exact", "hutchinson"] | None = None
    solver: Literal[tuple(flow.SOLVERS)] | None = None  # None: flow.DEFAULT_SOLVER
    kernel: Literal["spectral", "analytic", "em"] | None = None
    snr: PosFloat | None = None
    corrector_steps: PosInt | None = None
    steps_per_level: PosInt | None = None
    step_scale: PosFloat | None = None
    #: multilevel: sample 2^k times the model's extents (the finest level's network at the
    #: added levels, ``lattice.score.multilevel``)
    transfer: StrictBool | None = None
    #: multilevel: K per level of the model, finest first (level0, …, coarse; added levels of
    #: a transfer take level0's); unset: ``steps`` at every level
    level_steps: tuple[PosInt, ...] | None = None
    #: pick the number of reverse steps for this MH acceptance by a pilot before the run
    #: (:mod:`lattice.samplers.pilot`); ``steps`` is then the cap. "cost": the K of the
    #: pilot's ladder with the fewest steps per independent proposal. None: ``steps`` as given
    target_acceptance: float | Literal["cost"] | None = None

    @field_validator("target_acceptance", mode="plain")
    @classmethod
    def _acceptance_or_cost(cls, v: Any) -> float | str | None:
        if v is None or v == "cost":
            return v
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise rule("", f"must be a number between 0 and 1, or 'cost' (got {show(v)})")
        return Hmc._acceptance_is_a_probability.__func__(cls, float(v))

    @classmethod
    def _resolve(cls, data: Mapping[str, Any]) -> Mapping[str, Any]:
        """Fill the chosen method's defaults; refuse keys of other methods and Metropolis
        without a density."""
        if "model" not in data:
            raise rule("model", "required key is missing (kind = 'diffusion': a model directory)")
        method = data.get("method", "sde")
        if method not in cls.METHOD_DEFAULTS:
            return data  # reported by the field validation
        mine = cls.method_keys(method)
        for m in cls.METHOD_DEFAULTS:
            for key in cls.method_keys(m):
                if m != method and key in data and key not in mine:
                    raise rule(key, f"only used by method = {m!r} (method = {method!r})")
        exact = method in DIFFUSION_DENSITY_METHODS
        if data.get("metropolis", exact) is True and not exact:
            raise rule(
                "metropolis",
                "needs method = 'sde', 'multilevel' or 'ode', the ones with a density"
                f" (method = {method!r});"
                " set metropolis = false for raw, approximate samples",
            )
        out = {"method": method, "metropolis": exact, **cls.METHOD_DEFAULTS[method], **data}
        if out.get("target_acceptance") is not None and not (
            method in DIFFUSION_PATH_METHODS and out["metropolis"] is True
        ):
            raise rule(
                "target_acceptance",
                f"the path-length pilot needs method = 'sde' or 'multilevel' with metropolis ="
                f" true (method = {method!r}, metropolis = {out['metropolis']!r})",
            )
        ls = out.get("level_steps")
        if ls is not None:
            if out.get("target_acceptance") is not None:
                raise rule(
                    "level_steps",
                    "fixes K per level; the path-length pilot picks one K for all of them "
                    "(unset sampler.target_acceptance, or level_steps)",
                )
            if isinstance(ls, list | tuple) and (
                not ls or any(isinstance(k, int) and not isinstance(k, bool) and k < 2 for k in ls)
            ):
                raise rule("level_steps", f"must be a non-empty list of integers >= 2 (got {ls})")
        steps = out.get("steps")
        if (
            method in DIFFUSION_PATH_METHODS
            and isinstance(steps, int)
            and not isinstance(steps, bool)
            and steps < 2
        ):
            raise rule("steps", f"must be >= 2 for method = {method!r} (got {steps})")
        return out

    @field_validator("model")
    @classmethod
    def _model_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise rule("", "must name a trained model directory (got '')")
        return v

    @classmethod
    def method_keys(cls, method: str) -> tuple[str, ...]:
        """Every key of ``method``, as the kernel names them."""
        return diffusion_sampler.OPTIONS[method]

    def options(self) -> dict[str, Any]:
        """The keys of the chosen method and their values (None: unset)."""
        return {k: getattr(self, k) for k in self.method_keys(self.method)}

    @property
    def traits(self) -> Traits:
        return diffusion_sampler.traits(self.method, self.metropolis, self.divergence)

    def needs_model(self) -> bool:
        return True

    def needs_pilot(self) -> bool:
        return self.target_acceptance is not None

    def is_multilevel(self) -> bool:
        return self.method == "multilevel"

    def lacks_model_defaults(self) -> bool:
        return self.method == "sde" and self.kernel is None

    def with_model_defaults(self, model: Any) -> Diffusion:
        """A path sampler (``method = "sde"``) without ``kernel`` gets ``"spectral"`` when the
        model carries its per-mode table, else ``"analytic"``
        (:func:`lattice.score.spectral.default_kernel`)."""
        # lazy: the score layer loads equinox, which a run without a model never needs
        from lattice.score.spectral import default_kernel

        if not self.lacks_model_defaults():
            return self
        return self.model_copy(update={"kernel": default_kernel(model)})

    def with_path_steps(self, steps: int) -> Diffusion:
        """This sampler with the ``steps`` the pilot chose, and no pilot."""
        return self.model_copy(update={"steps": steps, "target_acceptance": None})

    def _build(self, theory: Phi4, **resources: Any) -> Sampler:
        opts = self.options()
        if self.method == "sde":
            opts["norm"] = resources.get("norm")
            opts["table"] = resources.get("table")
        return diffusion_sampler.diffusion(
            theory,
            resources["model"],
            method=self.method,
            metropolis_step=self.metropolis,
            steps=self.steps,
            **opts,
        )


#: the schema of each kind, in the order of the docs
SCHEMAS: dict[str, type[SamplerSchema]] = {
    s.model_fields["kind"].default: s for s in (Langevin, Mala, Hmc, Diffusion)
}
KINDS = tuple(SCHEMAS)
#: allowed integrators per sampler kind; the first one is the default
SCHEMES = {k: s.SCHEMES for k, s in SCHEMAS.items()}

#: the ``[sampler]`` table: one of the schemas, chosen by ``kind``
SamplerSection = Annotated[Union[Langevin, Mala, Hmc, Diffusion], Field(discriminator="kind")]  # noqa: UP007
