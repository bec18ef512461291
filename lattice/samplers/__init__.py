"""Samplers of e^{−S}: pure ``init``/``step`` kernels (see :mod:`lattice.samplers.base`)."""

from lattice.samplers.base import Sampler as Sampler
from lattice.samplers.base import StepInfo as StepInfo
from lattice.samplers.cluster import swendsen_wang as swendsen_wang
from lattice.samplers.cluster import with_clusters as with_clusters
from lattice.samplers.hmc import hmc as hmc
from lattice.samplers.langevin import langevin as langevin
from lattice.samplers.mala import mala as mala
