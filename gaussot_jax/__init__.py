"""gaussot_jax: differentiable optimal transport between Gaussian measures, in JAX.

Closed forms of entropic OT between Gaussians (balanced and unbalanced [JMPC20], with
non-product Gaussian references [REF25]) and Gaussian Schrödinger bridges with the
Gaussian Sinkhorn algorithm [ADM25], all built on one core solver (MATH.md §2), with
exact derivative rules for the matrix functions they use.
"""

from .barycenter import (
    bures_barycenter as bures_barycenter,
)
from .barycenter import (
    bures_barycenter_residual as bures_barycenter_residual,
)
from .barycenter import (
    entropic_barycenter as entropic_barycenter,
)
from .barycenter import (
    entropic_barycenter_residual as entropic_barycenter_residual,
)
from .batching import (
    pairwise as pairwise,
)
from .bures import (
    bures_wasserstein2 as bures_wasserstein2,
)
from .bures import (
    mccann_interpolation as mccann_interpolation,
)
from .bures import (
    monge_map as monge_map,
)
from .coupling import (
    Coupling as Coupling,
)
from .coupling import (
    isotropic_terms as isotropic_terms,
)
from .coupling import (
    solve_coupling as solve_coupling,
)
from .entropic import (
    EntropicOT as EntropicOT,
)
from .entropic import (
    entropic_ot as entropic_ot,
)
from .entropic import (
    sinkhorn_divergence as sinkhorn_divergence,
)
from .gaussians import (
    AffineMap as AffineMap,
)
from .gaussians import (
    Gaussian as Gaussian,
)
from .gaussians import (
    LinearGaussianKernel as LinearGaussianKernel,
)
from .gaussians import (
    QuadraticPotential as QuadraticPotential,
)
from .gaussians import (
    ScaledGaussian as ScaledGaussian,
)
from .gaussians import (
    kl_gaussian as kl_gaussian,
)
from .linalg import (
    inv_sqrtm as inv_sqrtm,
)
from .linalg import (
    psd_fn as psd_fn,
)
from .linalg import (
    sqrtm as sqrtm,
)
from .linalg import (
    sym as sym,
)
from .linalg import (
    trace_fn as trace_fn,
)

__version__ = "0.1.0"
