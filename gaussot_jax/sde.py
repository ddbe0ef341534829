r"""Linear SDE references and the dynamic Schrödinger bridge (docs/adm25.md) [ADM25].

A time-homogeneous linear SDE ``dX = (M X + c) dt + G dW`` has Gaussian transitions
``X_T | X_0 = x ~ N(alpha + beta x, tau)`` [ADM25, Rmk 2.3, §3.3]::

    beta  = e^{M T}
    alpha = ∫_0^T e^{M (T - s)} c ds
    tau   = ∫_0^T e^{M (T - s)} G G^T e^{M^T (T - s)} ds

computed without any inverse of ``M`` (which may be singular) by one block-matrix
exponential (Van Loan, 1978), block upper triangular with diagonal ``(0, -M, M^T)``::

    F = [[0, 0, c^T], [0, -M, G G^T], [0, 0, M^T]],
    e^{F h} = [[1, 0, alpha(h)^T], [0, e^{-M h}, X(h)], [0, 0, e^{M^T h}]],
    beta(h) = (e^{M^T h})^T,   tau(h) = beta(h) X(h).

Taken at ``h = T``, ``e^{-M T}`` overflows (float32: ``||M|| T ≈ 90``) and ``tau`` loses
digits by cancellation long before; so the block is exponentiated on a short step
``h = T / 2^k`` with ``||M h||_1 <= 1/2`` (a fixed-degree Taylor series suffices there) and
the transition is then doubled ``k`` times by the semigroup (Chapman–Kolmogorov) law, a sum
of PSD terms with no cancellation::

    beta(2h) = beta(h)^2,  alpha(2h) = alpha(h) + beta(h) alpha(h),
    tau(2h) = tau(h) + beta(h) tau(h) beta(h)^T.

The dynamic bridge: a static coupling ``plan`` of ``(X_0, X_T)`` (e.g. the Schrödinger
bridge) is completed into a path measure by running the reference process pinned at both
ends. Given ``X_0 = x``, ``X_T = y`` the reference's ``X_t`` is Gaussian (Kalman update of
``N(alpha_t + beta_t x, tau_t)`` by the observation ``y = alpha_r + beta_r X_t + noise``,
``r = T - t``)::

    P = beta_r tau_t beta_r^T + tau_r  (= tau_T),   g = tau_t beta_r^T P^{-1}
    X_t | x, y ~ N(u + B_x x + B_y y, Sigma_t),
    B_x = beta_t - g beta_T,  B_y = g,  u = alpha_t - g alpha_T,
    Sigma_t = (I - g beta_r) tau_t (I - g beta_r)^T + g tau_r g^T   (Joseph form, PSD)

and its time-``t`` marginal is this kernel pushed forward through the plan.

The code lives in private modules, one concept each: ``_sde_kernels`` (the Van Loan
transition), ``_sde_checks`` (argument checks), ``_linear_sde`` (the reference kernels and
:class:`LinearSDE`) and ``_sde_bridge`` (the pinned process and the dynamic bridge); this
module is their public face.
"""

from __future__ import annotations

from ._linear_sde import LinearSDE, brownian_kernel, linear_sde_kernel, ou_kernel
from ._sde_bridge import bridge_marginal, pinned_kernel, sample_bridge_paths

__all__ = [
    "LinearSDE",
    "bridge_marginal",
    "brownian_kernel",
    "linear_sde_kernel",
    "ou_kernel",
    "pinned_kernel",
    "sample_bridge_paths",
]
