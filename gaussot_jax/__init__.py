"""gaussot_jax: differentiable optimal transport between Gaussian measures, in JAX.

Closed forms of entropic OT between Gaussians (balanced and unbalanced [JMPC20], with
non-product Gaussian references [REF25]) and Gaussian Schrödinger bridges with the
Gaussian Sinkhorn algorithm [ADM25], all built on one core solver (MATH.md §2), with
exact derivative rules for the matrix functions they use. Layers, bottom up: linalg and
gaussians; coupling; one module per paper; batching and barycenters on top.
"""

from ._checks import (
    checks,
)
from .barycenter import (
    bures_barycenter,
    bures_barycenter_residual,
    entropic_barycenter,
    entropic_barycenter_residual,
)
from .batching import (
    pairwise,
)
from .bridge import (
    SchrodingerBridge,
    check_problem,
    reference_weight,
    schrodinger_bridge,
)
from .bures import (
    bures_wasserstein2,
    mccann_interpolation,
    monge_map,
)
from .coupling import (
    Coupling,
    isotropic_terms,
    solve_coupling,
)
from .entropic import (
    EntropicOT,
    correlation_reference,
    entropic_ot,
    sinkhorn_divergence,
)
from .gaussians import (
    AffineMap,
    Gaussian,
    LinearGaussianKernel,
    QuadraticPotential,
    ScaledGaussian,
    kl_gaussian,
)
from .linalg import (
    inv_sqrtm,
    psd_fn,
    sqrtm,
    sym,
    trace_fn,
)
from .sde import (
    LinearSDE,
    bridge_marginal,
    brownian_kernel,
    linear_sde_kernel,
    ou_kernel,
    pinned_kernel,
    sample_bridge_paths,
)
from .sinkhorn import (
    SinkhornTrace,
    gaussian_sinkhorn,
    sinkhorn_fixed_point,
)
from .unbalanced import (
    UnbalancedEntropicOT,
    unbalanced_entropic_ot,
)

__all__ = [
    "AffineMap",
    "bridge_marginal",
    "brownian_kernel",
    "bures_barycenter",
    "bures_barycenter_residual",
    "bures_wasserstein2",
    "check_problem",
    "checks",
    "correlation_reference",
    "Coupling",
    "entropic_barycenter",
    "entropic_barycenter_residual",
    "entropic_ot",
    "EntropicOT",
    "Gaussian",
    "gaussian_sinkhorn",
    "inv_sqrtm",
    "isotropic_terms",
    "kl_gaussian",
    "linear_sde_kernel",
    "LinearGaussianKernel",
    "LinearSDE",
    "mccann_interpolation",
    "monge_map",
    "ou_kernel",
    "pairwise",
    "pinned_kernel",
    "psd_fn",
    "QuadraticPotential",
    "reference_weight",
    "sample_bridge_paths",
    "ScaledGaussian",
    "schrodinger_bridge",
    "SchrodingerBridge",
    "sinkhorn_divergence",
    "sinkhorn_fixed_point",
    "SinkhornTrace",
    "solve_coupling",
    "sqrtm",
    "sym",
    "trace_fn",
    "unbalanced_entropic_ot",
    "UnbalancedEntropicOT",
]

__version__ = "0.1.0"
