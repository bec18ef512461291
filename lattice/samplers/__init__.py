"""Samplers of e^{−S} (layer 3, pure): ``init``/``step`` kernels behind the contract of
:mod:`lattice.samplers.base`, and the jitted loops over many chains
(:mod:`lattice.samplers.chains`). Their parameters and defaults are the schemas of
:mod:`lattice.config.sampler`."""

from lattice.samplers.base import Sampler as Sampler
from lattice.samplers.base import StepInfo as StepInfo
from lattice.samplers.cluster import swendsen_wang as swendsen_wang
from lattice.samplers.cluster import with_clusters as with_clusters
