"""Samplers of e^{−S}: pure ``init``/``step`` kernels (see :mod:`lattice.samplers.base`)."""

from .base import Sampler as Sampler
from .base import StepInfo as StepInfo
from .cluster import swendsen_wang as swendsen_wang
from .cluster import with_clusters as with_clusters
from .hmc import hmc as hmc
from .langevin import langevin as langevin
from .mala import mala as mala
