"""gaussot_jax: differentiable optimal transport between Gaussian measures, in JAX.

Closed forms of entropic OT between Gaussians (balanced and unbalanced [JMPC20], with
non-product Gaussian references [REF25]) and Gaussian Schrödinger bridges with the
Gaussian Sinkhorn algorithm [ADM25], all built on one core solver (docs/core.md), with
exact derivative rules for the matrix functions they use; OT between Gaussian mixtures
over their components [DD20] on top. Layers, bottom up: linalg and gaussians; coupling;
one module per paper; batching, barycenters and mixtures on top.
"""

from ._checks import (
    checks,
)
from ._compat import warn_if_deadlocking_jaxlib as _warn_if_deadlocking_jaxlib
from ._discrete import (
    DiscreteOT,
    discrete_ot,
)
from ._version import __version__ as __version__
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
    bures_wasserstein,
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
from .lowrank import (
    LowRankAffineMap,
    LowRankEntropicOT,
    LowRankGaussian,
    LowRankPlan,
    LowRankQuadraticPotential,
    LowRankUnbalancedOT,
    ScaledLowRankGaussian,
    SubspaceOperator,
    joint_factor,
    lowrank_bures_wasserstein2,
    lowrank_entropic_ot,
    lowrank_sinkhorn_divergence,
    lowrank_unbalanced_entropic_ot,
)
from .lowrank_bridge import (
    IsotropicGaussianKernel,
    LowRankKernel,
    LowRankSchrodingerBridge,
    lowrank_schrodinger_bridge,
)
from .mixtures import (
    GaussianMixture,
    MixtureOT,
    fit_gmm,
    mixture_barycenter,
    mixture_ot,
    mixture_wasserstein2,
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
    "bures_wasserstein",
    "bures_wasserstein2",
    "check_problem",
    "checks",
    "correlation_reference",
    "Coupling",
    "discrete_ot",
    "DiscreteOT",
    "entropic_barycenter",
    "entropic_barycenter_residual",
    "entropic_ot",
    "EntropicOT",
    "fit_gmm",
    "Gaussian",
    "GaussianMixture",
    "gaussian_sinkhorn",
    "inv_sqrtm",
    "IsotropicGaussianKernel",
    "isotropic_terms",
    "joint_factor",
    "kl_gaussian",
    "linear_sde_kernel",
    "LinearGaussianKernel",
    "LinearSDE",
    "lowrank_bures_wasserstein2",
    "lowrank_entropic_ot",
    "lowrank_schrodinger_bridge",
    "lowrank_sinkhorn_divergence",
    "lowrank_unbalanced_entropic_ot",
    "LowRankAffineMap",
    "LowRankEntropicOT",
    "LowRankGaussian",
    "LowRankKernel",
    "LowRankPlan",
    "LowRankQuadraticPotential",
    "LowRankSchrodingerBridge",
    "LowRankUnbalancedOT",
    "mccann_interpolation",
    "mixture_barycenter",
    "mixture_ot",
    "mixture_wasserstein2",
    "MixtureOT",
    "monge_map",
    "ou_kernel",
    "pairwise",
    "pinned_kernel",
    "psd_fn",
    "QuadraticPotential",
    "reference_weight",
    "sample_bridge_paths",
    "ScaledGaussian",
    "ScaledLowRankGaussian",
    "schrodinger_bridge",
    "SchrodingerBridge",
    "sinkhorn_divergence",
    "sinkhorn_fixed_point",
    "SinkhornTrace",
    "solve_coupling",
    "sqrtm",
    "SubspaceOperator",
    "sym",
    "trace_fn",
    "unbalanced_entropic_ot",
    "UnbalancedEntropicOT",
]

_warn_if_deadlocking_jaxlib()
