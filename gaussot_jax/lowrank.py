r"""Low-rank-plus-isotropic Gaussians: closed forms in high dimension (docs/lowrank.md).

A :class:`LowRankGaussian` is ``N(a, U U^T + s I)`` on ``R^d`` with ``U`` of shape ``(d, k)``.
For a pair ``A = U_a U_a^T + s_a I``, ``B = U_b U_b^T + s_b I`` stack ``M = [U_a, U_b]``
(``d x k``, ``k = k_a + k_b``) and take a thin QR factorisation ``M = Z F``: ``Z`` (``d x r``,
``r = min(d, k)``) has orthonormal columns and ``F`` is ``r x k``. Householder QR gives an
orthonormal ``Z`` also when ``M`` is rank-deficient (dependent or identical factors), and
``span(Z)`` contains ``span(M)``, which is all the reduction needs:

    A = Z (F_a F_a^T + s_a I_r) Z^T + s_a (I - Z Z^T),   F_a = F[:, :k_a]   (B alike)

so ``A`` and ``B`` map ``span(Z)`` into itself and are the scalars ``s_a``, ``s_b`` on its
complement. Every matrix built from ``A``, ``B`` by products, sums, inverses and square roots
splits the same way; for a scalar ``g``,
``Tr g(AB) = Tr g(A_r B_r) + (d - r) g(s_a s_b)`` with ``A_r = F_a F_a^T + s_a I_r``. Hence

    W2^2    = ||a - b||^2 + W2^2(N(0, A_r), N(0, B_r)) + (d - r) (sqrt(s_a) - sqrt(s_b))^2
    OT_eps  = ||a - b||^2 + OT_eps(N(0, A_r), N(0, B_r)) + (d - r) OT_eps(N(0, s_a), N(0, s_b))
    S_eps   = ||a - b||^2 + S_eps(N(0, A_r), N(0, B_r)) + (d - r) S_eps(N(0, s_a), N(0, s_b))

(the mean enters these only through ``||a - b||^2``, so it needs no projection), each
``r``-dimensional and 1-D term computed by the dense functions unchanged. The entropic
cross-covariance and map matrix are ``Z C_r Z^T + c (I - Z Z^T)`` (:class:`SubspaceOperator`).
Unbalanced OT ([JMPC20, Thm 2]): its cost ``gamma (m_a + m_b - 2 m_pi) + eps (m_a m_b - m_pi)``
is not additive over coordinates, but ``log m_pi`` is: in the form of
:mod:`gaussot_jax.unbalanced`, ``log m_pi = (log m_a + log m_b - u^T X^{-1} u / 2) / (1 + tau)
+ [terms additive over an invariant splitting: d, logdet, Tr g(At Bt)]``, ``u = b - a``,
``X = A + B + lam I``, ``tau = gamma / (gamma + eps)``. So ``log m_pi`` is the unit-mass,
zero-mean log-mass of the ``r``-dimensional problem plus ``d - r`` times that of the 1-D one,
plus the mass and mean term, ``u^T X^{-1} u`` by the Woodbury identity.

Cost ``O(d k^2)`` time and ``O(d k)`` memory; no ``d x d`` matrix.

Derivatives. The values above are ``O(d)``-invariant functions of ``(M, s_a, s_b)``, hence
functions ``phi(G)`` of the Gram matrix ``G = M^T M = F^T F`` alone, and the reduced
computation ``psi(F)`` equals ``phi(F^T F)`` for *every* ``F``. So any tangent ``dF`` with
``F^T dF + dF^T F = dG = dM^T M + M^T dM`` gives the exact derivative
``dpsi = phi'(G)[dG]``; ``dF = Z^T dM`` is one (``M = Z F``), linear in ``dM``, and needs no
derivative of ``Z`` — which does not exist where ``M`` loses rank (identical factors), while
the values are smooth there. :func:`joint_factor` carries this rule. The factored outputs
(``Z core(F) Z^T``: cross-covariance, plan, potentials, maps) use ``Z`` itself, and then
``Z`` and ``F`` come from one QR differentiated by JAX's rule (exact where ``M`` has full
column rank): ``joint_factor``'s tangent differs from the QR's by ``(Z^T dZ) F``, an
infinitesimal rotation of the basis coordinates that ``core`` would follow and ``Z`` not.

Plan and potentials ([JMPC20], dense form in :mod:`gaussot_jax.entropic`). The plan's
covariance ``[[A, C], [C^T, B]]`` is, on ``span(Z) ⊕ span(Z)``, the reduced zero-mean
plan's ``2r x 2r`` covariance, and on each complementary direction the 1-D plan's
``2 x 2`` one (:class:`LowRankPlan`). The potentials are quadratic with ``u = x - a``:
``f(x) = f0(u) + 2 (a - b)^T x - ||a||^2 + a^T b``, ``f0(u) = 1/2 u^T (2 I - eps P) u +
eps KL / 2`` the zero-mean potential, ``P = W S W^T``, ``S = Cov(y | x)``, and ``KL`` the
plan's ``KL(pi || mu ⊗ nu)``; ``2 I - eps P`` splits over the basis, ``KL`` is additive
(``-1/2 logdet M`` of the core solver), so ``f0``'s Hessian is ``Z Q_r Z^T + q (I - Z Z^T)``
and ``f0(0) = f0_r(0) + (d - r) f0_1(0)`` from the two dense problems (``g`` alike, with
``a, b`` swapped).
"""

from __future__ import annotations

from typing import cast

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from . import _checks
from ._cholesky import chol_logdet
from ._pretty import Pretty
from .bures import bures_wasserstein2
from .entropic import EntropicOT, entropic_ot, sinkhorn_divergence
from .gaussians import AffineMap, Gaussian, QuadraticPotential, ScaledGaussian
from .linalg import spectral_trace_unchecked as spectral_trace
from .linalg import sym
from .unbalanced import UnbalancedEntropicOT, unbalanced_entropic_ot

__all__ = [
    "LowRankAffineMap",
    "LowRankEntropicOT",
    "LowRankGaussian",
    "LowRankPlan",
    "LowRankQuadraticPotential",
    "LowRankUnbalancedOT",
    "ScaledLowRankGaussian",
    "SubspaceOperator",
    "joint_factor",
    "lowrank_bures_wasserstein2",
    "lowrank_entropic_ot",
    "lowrank_sinkhorn_divergence",
    "lowrank_unbalanced_entropic_ot",
]

_LOG_2PI = 1.8378770664093453

MIXED_MAX_DIM = 2048
"""A low-rank/dense pair is computed densely (``to_dense()``) up to this dimension."""


class LowRankGaussian(Pretty):
    r"""``N(mean, factor factor^T + noise I)`` on ``R^d``, stored in ``O(d k)``.

    The probabilistic-PCA model (Tipping & Bishop 1999). :func:`gaussot_jax.bures_wasserstein2`,
    :func:`gaussot_jax.entropic_ot` and :func:`gaussot_jax.sinkhorn_divergence` accept pairs of
    them and cost ``O(d k^2)`` (module docstring, docs/lowrank.md).

    Args:
        mean: ``(..., d)``.
        factor: ``(..., d, k)``; ``k = 0`` (isotropic) allowed.
        noise: scalar ``>= 0`` (``(...)`` for a batch); ``0`` gives a rank-``k`` covariance.
        validate: check values (finite, ``noise >= 0``) when they are concrete; under ``jit``
            use :meth:`checked`.

    Examples:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> lr = gj.LowRankGaussian(jnp.zeros(1000), jnp.ones((1000, 2)), 0.5)
        >>> lr.dim, lr.rank
        (1000, 2)
    """

    mean: Float[Array, "*batch d"]
    factor: Float[Array, "*batch d k"]
    noise: Float[Array, "*batch"]

    def __init__(self, mean, factor, noise, *, validate: bool = True):
        mean, factor, noise = _checks.common_float(mean, factor, noise)
        if mean.ndim < 1:
            raise ValueError(f"mean must have shape (..., d), got {mean.shape}")
        if factor.ndim != mean.ndim + 1 or factor.shape[:-1] != mean.shape:
            raise ValueError(
                f"factor must have shape (..., d, k) matching mean {mean.shape}, got {factor.shape}"
            )
        if noise.shape != mean.shape[:-1]:
            raise ValueError(
                f"noise must have the batch shape {mean.shape[:-1]} of mean (a scalar for a "
                f"single Gaussian), got {noise.shape}"
            )
        if validate:
            _checks.check_finite("mean", mean)
            _checks.check_finite("factor", factor)
            _checks.check_finite("noise", noise)
            if _checks.is_concrete(noise) and not bool(jnp.all(noise >= 0)):
                raise ValueError(f"noise must be >= 0, got {noise}")
        self.mean, self.factor, self.noise = mean, factor, noise

    @property
    def dim(self) -> int:
        """Dimension ``d``."""
        return self.mean.shape[-1]

    @property
    def rank(self) -> int:
        """Number of columns ``k`` of the factor."""
        return self.factor.shape[-1]

    def checked(self) -> LowRankGaussian:
        """The same Gaussian with its value checks as ``eqx.error_if`` (use under jit)."""
        mean = _checks.error_if_not_finite("mean", self.mean)
        factor = _checks.error_if_not_finite("factor", self.factor)
        noise = _checks.error_if_not_finite("noise", self.noise)
        noise = eqx.error_if(noise, ~jnp.all(noise >= 0), "noise must be >= 0")
        return LowRankGaussian(mean, factor, noise, validate=False)

    def to_dense(self) -> Gaussian:
        """The same measure as a dense :class:`Gaussian` (a ``d x d`` covariance)."""
        U = self.factor
        eye = jnp.eye(self.dim, dtype=U.dtype)
        cov = jnp.einsum("...ik,...jk->...ij", U, U) + self.noise[..., None, None] * eye
        return Gaussian(self.mean, sym(cov), validate=False)

    def sample(self, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        """Samples ``mean + U z_1 + sqrt(noise) z_2`` of shape ``(*shape, d)`` (differentiable)."""
        k1, k2 = jax.random.split(key)
        dtype = self.mean.dtype
        z1 = jax.random.normal(k1, (*shape, self.rank), dtype=dtype)
        z2 = jax.random.normal(k2, (*shape, self.dim), dtype=dtype)
        return self.mean + z1 @ self.factor.T + jnp.sqrt(self.noise) * z2

    def log_prob(self, x: Float[Array, "... d"]) -> Array:
        r"""Log-density at points ``x`` of shape ``(..., d)`` (needs ``noise > 0``).

        Woodbury and the matrix determinant lemma with ``K = noise I_k + U^T U = L L^T``:
        ``u^T Sigma^{-1} u = (||u||^2 - ||L^{-1} U^T u||^2) / noise`` and
        ``logdet Sigma = (d - k) log noise + 2 sum log diag L``. ``O(d k)`` per point.
        """
        s, U = self.noise, self.factor
        d, k = self.dim, self.rank
        u = x - self.mean
        quad = jnp.sum(u**2, axis=-1)
        logdet = d * jnp.log(s)
        if k:
            L = jnp.linalg.cholesky(sym(U.T @ U) + s * jnp.eye(k, dtype=U.dtype))
            p = (u @ U).reshape(-1, k)
            z = jax.scipy.linalg.solve_triangular(L, p.T, lower=True)
            quad = quad - jnp.sum(z**2, axis=0).reshape(quad.shape)
            logdet = (d - k) * jnp.log(s) + chol_logdet(L)
        return -0.5 * (d * _LOG_2PI + quad / s + logdet)

    @classmethod
    def from_samples(cls, x: Float[Array, "n d"], rank: int) -> LowRankGaussian:
        r"""The probabilistic-PCA maximum-likelihood fit (Tipping & Bishop 1999).

        With ``l_1 >= ... >= l_d`` the eigenvalues of the sample covariance (``1/n``
        normalisation, the empirical measure's) and ``V_k`` the leading eigenvectors:
        ``noise = (l_{k+1} + ... + l_d) / (d - k)`` and
        ``factor = V_k diag(l_1 - noise, ..., l_k - noise)^{1/2}`` (docs/lowrank.md). Computed from
        a thin SVD of the centred ``(n, d)`` samples, ``O(n d min(n, d))``: for ``n << d``
        no ``d x d`` matrix is formed (``sum_i l_i = ||x - mean||_F^2 / n``).

        Args:
            x: ``(n, d)`` samples.
            rank: ``k``, with ``0 <= k < d`` and ``k <= n``.

        Examples:
            >>> import jax, gaussot_jax as gj
            >>> x = jax.random.normal(jax.random.PRNGKey(0), (50, 10_000))
            >>> gj.LowRankGaussian.from_samples(x, 8).factor.shape
            (10000, 8)
        """
        x = _checks.as_float(x)
        if x.ndim != 2:
            raise ValueError(f"x must have shape (n, d), got {x.shape}")
        n, d = x.shape
        if not isinstance(rank, int) or not 0 <= rank < d or rank > n:
            raise ValueError(f"rank must be an int with 0 <= rank < d={d} and <= n={n}, got {rank}")
        mean = jnp.mean(x, axis=0)
        xc = x - mean
        _, sv, Vt = jnp.linalg.svd(xc, full_matrices=False)
        lam = sv**2 / n
        total = jnp.sum(xc**2) / n
        noise = jnp.maximum(total - jnp.sum(lam[:rank]), 0.0) / (d - rank)
        factor = Vt[:rank].T * jnp.sqrt(jnp.maximum(lam[:rank] - noise, 0.0))
        return cls(mean, factor, noise, validate=False)


class SubspaceOperator(Pretty):
    """The ``d x d`` matrix ``basis core basis^T + scalar (I - basis basis^T)``, in ``O(d r)``.

    ``basis`` has orthonormal columns; results on :class:`LowRankGaussian` pairs (cross
    covariances, map matrices, conditional covariances, potentials' Hessians) have this
    form. Operators on one basis form an algebra: sums, products, transposes, inverses and
    functions act on ``(core, scalar)`` alone.

    Attributes:
        basis: ``(d, r)`` orthonormal columns spanning the subspace.
        core: ``(r, r)`` the matrix on the subspace, in that basis.
        scalar: the eigenvalue on the orthogonal complement.

    Examples:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> Z = jnp.eye(1000)[:, :2]
        >>> op = gj.SubspaceOperator(Z, jnp.diag(jnp.array([3.0, 2.0])), jnp.asarray(0.5))
        >>> round(float(op.logdet()), 2)  # log 6 + 998 log 0.5
        -689.97
        >>> round(float(op.inverse().apply(jnp.ones(1000)).sum()), 2)  # 1/3 + 1/2 + 998 * 2
        1996.83
    """

    basis: Float[Array, "d r"]
    core: Float[Array, "r r"]
    scalar: Float[Array, ""]

    @property
    def dim(self) -> int:
        """Dimension ``d``."""
        return self.basis.shape[0]

    def apply(self, x: Float[Array, "... d"]) -> Array:
        """``matrix @ x`` for points of shape ``(..., d)``."""
        p = x @ self.basis
        return self.scalar * x + (p @ self.core.T - self.scalar * p) @ self.basis.T

    def to_dense(self) -> Float[Array, "d d"]:
        """The ``d x d`` matrix (small ``d`` only)."""
        Z = self.basis
        eye = jnp.eye(Z.shape[0], dtype=Z.dtype)
        return Z @ self.core @ Z.T + self.scalar * (eye - Z @ Z.T)

    @property
    def T(self) -> SubspaceOperator:
        """The transpose (``core.T``; the basis and the scalar are unchanged)."""
        return SubspaceOperator(self.basis, self.core.T, self.scalar)

    def trace(self) -> Array:
        """``Tr = Tr core + (d - r) scalar``."""
        n_perp = self.basis.shape[0] - self.basis.shape[1]
        return jnp.trace(self.core) + n_perp * self.scalar

    def logdet(self) -> Array:
        """``log det`` of a symmetric positive-definite operator (a Cholesky factor of ``core``)."""
        n_perp = self.basis.shape[0] - self.basis.shape[1]
        value = n_perp * jnp.log(self.scalar)
        if self.core.shape[0]:
            value = value + chol_logdet(jnp.linalg.cholesky(sym(self.core)))
        return value

    def inverse(self) -> SubspaceOperator:
        """The inverse of a symmetric positive-definite operator (``core^{-1}``, ``1 / scalar``)."""
        r = self.core.shape[0]
        core = self.core
        if r:
            L = jnp.linalg.cholesky(sym(core))
            core = sym(jax.scipy.linalg.cho_solve((L, True), jnp.eye(r, dtype=core.dtype)))
        return SubspaceOperator(self.basis, core, 1.0 / self.scalar)

    def sqrt_apply(self, z: Float[Array, "... d"]) -> Array:
        """``matrix^{1/2} @ z`` for a symmetric PSD operator (eigenvalues clipped at 0).

        With ``z`` standard normal this samples ``N(0, matrix)`` in ``O(d r)``.
        """
        p = z @ self.basis
        root = jnp.sqrt(jnp.maximum(self.scalar, 0.0))
        out = root * z
        if self.core.shape[0]:
            w, V = jnp.linalg.eigh(sym(self.core))
            core_root = (V * jnp.sqrt(jnp.maximum(w, 0.0))) @ V.T
            out = out + (p @ core_root.T - root * p) @ self.basis.T
        return out

    def quad_form(self, x: Float[Array, "... d"]) -> Array:
        """``x^T matrix x`` for points of shape ``(..., d)``."""
        return jnp.sum(x * self.apply(x), axis=-1)


def _subspace(basis, core, scalar) -> SubspaceOperator:
    return SubspaceOperator(basis, core, jnp.asarray(scalar))


class LowRankAffineMap(Pretty):
    """The map ``x -> matrix @ x + offset`` with a factored ``matrix``, ``O(d r)`` per point.

    The low-rank counterpart of :class:`gaussot_jax.AffineMap` (entropic and bridge maps).

    Attributes:
        matrix: the linear part, a :class:`SubspaceOperator`.
        offset: ``(d,)``, the value at ``x = 0``.
    """

    matrix: SubspaceOperator
    """The linear part, a :class:`SubspaceOperator`."""
    offset: Float[Array, " d"]
    """``(d,)``, the value at ``x = 0``."""

    def __call__(self, x: Float[Array, "... d"]) -> Array:
        """Apply the map to points ``x`` of shape ``(..., d)``."""
        x = _checks.check_points("x", x, self.offset.shape[-1])
        return self.matrix.apply(x) + self.offset

    def to_dense(self) -> AffineMap:
        """The same map as a dense :class:`gaussot_jax.AffineMap` (small ``d`` only)."""
        return AffineMap(self.matrix.to_dense(), self.offset)


class LowRankQuadraticPotential(Pretty):
    """``f(x) = 1/2 x^T quad x + lin^T x + const`` with a factored Hessian, ``O(d r)`` per point.

    The low-rank counterpart of :class:`gaussot_jax.QuadraticPotential` (dual potentials).

    Attributes:
        quad: the Hessian, a symmetric :class:`SubspaceOperator`.
        lin: ``(d,)``, the gradient at 0.
        const: scalar, ``f(0)``.
    """

    quad: SubspaceOperator
    """The Hessian, a symmetric :class:`SubspaceOperator`."""
    lin: Float[Array, " d"]
    """``(d,)``, the gradient at 0."""
    const: Float[Array, ""]
    """Scalar, ``f(0)``."""

    def __call__(self, x: Float[Array, "... d"]) -> Array:
        """Evaluate at the points ``x`` of shape ``(..., d)``: one value per point."""
        x = _checks.check_points("x", x, self.lin.shape[-1])
        return 0.5 * self.quad.quad_form(x) + x @ self.lin + self.const

    def mean_under(self, g: LowRankGaussian) -> Array:
        """``E_g f = 1/2 Tr(quad Sigma) + f(mean)`` for ``g = N(mean, Sigma)``, in ``O(d r k)``."""
        U = g.factor.astype(self.lin.dtype)
        tr = jnp.sum(U * self.quad.apply(U.T).T) + g.noise * self.quad.trace()
        return 0.5 * tr + self(g.mean)

    def to_dense(self) -> QuadraticPotential:
        """The same function as a dense :class:`gaussot_jax.QuadraticPotential` (small ``d``)."""
        return QuadraticPotential(self.quad.to_dense(), self.lin, self.const)

    @staticmethod
    def centred(
        quad: SubspaceOperator, centre: Array, value_at_centre: Array, slope: Array
    ) -> LowRankQuadraticPotential:
        """``x -> 1/2 (x - c)^T quad (x - c) + slope^T x + value`` in the stored form."""
        q_c = quad.apply(centre)
        return LowRankQuadraticPotential(
            quad, slope - q_c, value_at_centre + 0.5 * jnp.dot(centre, q_c)
        )


class LowRankPlan(Pretty):
    r"""A Gaussian on ``R^{2d}`` whose covariance blocks share one subspace, in ``O(d r)``.

    ``N(mean, Sigma)`` with ``Sigma = (I_2 ⊗ Z) core (I_2 ⊗ Z)^T + scalar ⊗ (I - Z Z^T)``:
    on ``span(Z) ⊕ span(Z)`` the ``2r x 2r`` matrix ``core`` (``x`` block first), on each of
    the ``d - r`` complementary directions the same ``2 x 2`` matrix ``scalar`` coupling
    ``x_i`` and ``y_i``. The optimal plans between :class:`LowRankGaussian` pairs (entropic
    OT, Schrödinger bridges) have this form.

    Attributes:
        mean: ``(2d,)``, the means of ``x`` and of ``y``.
        basis: ``(d, r)`` orthonormal columns ``Z``.
        core: ``(2r, 2r)``, the joint covariance of ``(Z^T x, Z^T y)``.
        scalar: ``(2, 2)``, the joint covariance of ``(x, y)`` along a complementary direction.
    """

    mean: Float[Array, " 2d"]
    """``(2d,)``, the means of ``x`` and of ``y``."""
    basis: Float[Array, "d r"]
    """``(d, r)`` orthonormal columns ``Z``."""
    core: Float[Array, "2r 2r"]
    """``(2r, 2r)``, the joint covariance of ``(Z^T x, Z^T y)``."""
    scalar: Float[Array, "2 2"]
    """``(2, 2)``, the joint covariance of ``(x, y)`` along a complementary direction."""

    @property
    def dim(self) -> int:
        """``d``, the dimension of each marginal."""
        return self.basis.shape[0]

    def _block(self, i: int, j: int) -> SubspaceOperator:
        r = self.basis.shape[1]
        core = self.core[i * r : (i + 1) * r, j * r : (j + 1) * r]
        return SubspaceOperator(self.basis, core, self.scalar[i, j])

    @property
    def cov_x(self) -> SubspaceOperator:
        """``Cov(x)``, the first marginal's covariance."""
        return self._block(0, 0)

    @property
    def cov_y(self) -> SubspaceOperator:
        """``Cov(y)``, the second marginal's covariance."""
        return self._block(1, 1)

    @property
    def cross_cov(self) -> SubspaceOperator:
        """``Cov(x, y)``."""
        return self._block(0, 1)

    def to_dense(self) -> Gaussian:
        """The same Gaussian with a dense ``2d x 2d`` covariance (small ``d`` only)."""
        C = self.cross_cov.to_dense()
        cov = jnp.block([[self.cov_x.to_dense(), C], [C.T, self.cov_y.to_dense()]])
        return Gaussian(self.mean, sym(cov), validate=False)

    def _split_points(self, z):
        d = self.dim
        u = z - self.mean
        ux, uy = u[..., :d], u[..., d:]
        px, py = ux @ self.basis, uy @ self.basis
        return px, py, ux - px @ self.basis.T, uy - py @ self.basis.T

    def sample(self, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        """Samples of shape ``(*shape, 2d)`` (``x`` then ``y``), ``O(d r)`` each."""
        d, r = self.basis.shape
        k1, k2 = jax.random.split(key)
        dtype = self.mean.dtype
        xi = jax.random.normal(k1, (*shape, 2, d), dtype=dtype)
        # Complement: project both components, then mix them by the 2 x 2 root.
        w, V = jnp.linalg.eigh(sym(self.scalar))
        root = (V * jnp.sqrt(jnp.maximum(w, 0.0))) @ V.T
        perp = xi - (xi @ self.basis) @ self.basis.T
        out = jnp.einsum("ij,...jd->...id", root, perp)
        if r:
            wc, Vc = jnp.linalg.eigh(sym(self.core))
            core_root = (Vc * jnp.sqrt(jnp.maximum(wc, 0.0))) @ Vc.T
            zr = jax.random.normal(k2, (*shape, 2 * r), dtype=dtype) @ core_root.T
            out = out + jnp.stack([zr[..., :r], zr[..., r:]], axis=-2) @ self.basis.T
        return self.mean + out.reshape(*shape, 2 * d)

    def log_prob(self, z: Float[Array, "... 2d"]) -> Array:
        """Log-density at points ``(..., 2d)`` (needs a positive-definite covariance).

        The quadratic form and the log-determinant split as the covariance does: a
        ``2r``-dimensional Gaussian on the basis coordinates plus ``d - r`` independent
        2-D ones along the complement (their sums of squares enter through
        ``||x_perp||^2``, ``<x_perp, y_perp>``, ``||y_perp||^2``).
        """
        d, r = self.basis.shape
        z = _checks.check_points("z", z, 2 * d)
        px, py, qx, qy = self._split_points(z)
        s = self.scalar
        det = s[0, 0] * s[1, 1] - s[0, 1] * s[1, 0]
        quad = (
            s[1, 1] * jnp.sum(qx**2, -1)
            - (s[0, 1] + s[1, 0]) * jnp.sum(qx * qy, -1)
            + s[0, 0] * jnp.sum(qy**2, -1)
        ) / det
        logdet = (d - r) * jnp.log(det)
        if r:
            L = jnp.linalg.cholesky(sym(self.core))
            p = jnp.concatenate([px, py], axis=-1)
            y = jax.scipy.linalg.solve_triangular(L, p.reshape(-1, 2 * r).T, lower=True)
            quad = quad + jnp.sum(y**2, axis=0).reshape(quad.shape)
            logdet = logdet + chol_logdet(L)
        return -0.5 * (2 * d * _LOG_2PI + quad + logdet)


def _plan(mean_x, mean_y, basis, core, scalar) -> LowRankPlan:
    return LowRankPlan(jnp.concatenate([mean_x, mean_y]), basis, core, scalar)


class LowRankEntropicOT(Pretty):
    """Result of :func:`lowrank_entropic_ot`: the fields of :class:`gaussot_jax.EntropicOT`.

    Factored: no ``d x d`` matrix; ``to_dense()`` on each part gives the dense one.

    Attributes:
        cost: The optimal value ``OT_eps(mu, nu)``.
        cross_cov: ``C = Cov(x, y)`` under the optimal plan, factored.
        plan: The optimal plan, a Gaussian on ``R^{2d}`` with factored blocks.
        potentials: ``(f, g)``: ``d plan / d(mu ⊗ nu) = exp((f(x) + g(y) - ||x - y||^2) / eps)``
            and ``E_mu f + E_nu g = cost``; factored Hessians.
        map_matrix: ``T`` of the entropic map ``x -> E[y | x] = b + T (x - a)``, factored.
        map_offset: ``b - T a``.
        epsilon: The regularisation strength.
    """

    cost: Float[Array, ""]
    """The optimal value ``OT_eps(mu, nu)``."""
    cross_cov: SubspaceOperator
    """``C = Cov(x, y)`` under the optimal plan, factored."""
    plan: LowRankPlan
    """The optimal plan, a Gaussian on ``R^{2d}`` with factored blocks."""
    potentials: tuple[LowRankQuadraticPotential, LowRankQuadraticPotential]
    """``(f, g)``: ``d plan / d(mu ⊗ nu) = exp((f(x) + g(y) - ||x - y||^2) / eps)`` and
    ``E_mu f + E_nu g = cost``; factored Hessians."""
    map_matrix: SubspaceOperator
    """``T`` of the entropic map ``x -> E[y | x] = b + T (x - a)``, factored."""
    map_offset: Float[Array, " d"]
    """``b - T a``."""
    epsilon: Float[Array, ""]
    """The regularisation strength."""

    @property
    def transport_map(self) -> LowRankAffineMap:
        """The barycentric projection ``x -> E_plan[y | x]``, callable on points ``(..., d)``."""
        return LowRankAffineMap(self.map_matrix, self.map_offset)

    @property
    def entropic_map(self) -> LowRankAffineMap:
        """The same map as :attr:`transport_map` (the name [JMPC20]'s readers know)."""
        return self.transport_map


class ScaledLowRankGaussian(Pretty):
    r"""The positive measure ``mass * N(mean, factor factor^T + noise I)`` (unbalanced OT).

    The low-rank counterpart of :class:`gaussot_jax.ScaledGaussian`:
    :func:`gaussot_jax.unbalanced_entropic_ot` accepts pairs of them (and of
    :class:`LowRankGaussian`, mass 1) and costs ``O(d k^2)``.

    Args:
        mass: positive scalar.
        mean: ``(d,)``.
        factor: ``(d, k)``.
        noise: scalar ``>= 0``.
        validate: check values when they are concrete.

    Examples:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> a = gj.ScaledLowRankGaussian(2.0, jnp.zeros(10_000), jnp.ones((10_000, 1)) / 100, 1.0)
        >>> b = gj.ScaledLowRankGaussian(3.0, jnp.zeros(10_000), jnp.zeros((10_000, 0)), 0.9)
        >>> out = gj.unbalanced_entropic_ot(a, b, 1.0, 2.0)
        >>> float(out.log_mass) < 0.0
        True
    """

    mass: Float[Array, "*batch"]
    mean: Float[Array, "*batch d"]
    factor: Float[Array, "*batch d k"]
    noise: Float[Array, "*batch"]

    def __init__(self, mass, mean, factor, noise, *, validate: bool = True):
        g = LowRankGaussian(mean, factor, noise, validate=validate)
        mass = _checks.as_float(mass, g.mean.dtype)
        if jnp.shape(mass) != g.mean.shape[:-1]:
            raise ValueError(
                f"mass must have the batch shape {g.mean.shape[:-1]} of mean, got {jnp.shape(mass)}"
            )
        if validate:
            _checks.check_finite("mass", mass)
            _checks.check_positive("mass", mass)
        self.mass, self.mean, self.factor, self.noise = mass, g.mean, g.factor, g.noise

    @property
    def dim(self) -> int:
        """Dimension ``d``."""
        return self.mean.shape[-1]

    @property
    def normalized(self) -> LowRankGaussian:
        """The probability measure ``N(mean, factor factor^T + noise I)``."""
        return LowRankGaussian(self.mean, self.factor, self.noise, validate=False)

    def to_dense(self) -> ScaledGaussian:
        """The same measure as a dense :class:`gaussot_jax.ScaledGaussian` (small ``d``)."""
        g = self.normalized.to_dense()
        return ScaledGaussian(self.mass, g.mean, g.cov, validate=False)


class LowRankUnbalancedOT(Pretty):
    """Result of :func:`lowrank_unbalanced_entropic_ot`: value, mass and plan, factored.

    The fields of :class:`gaussot_jax.UnbalancedEntropicOT`, with the plan as a normalised
    :class:`LowRankPlan` and its mass ``exp(log_mass)`` (property ``mass``).

    Attributes:
        cost: The optimal value ``UOT`` (with its mass terms).
        log_mass: ``log m_pi``, the plan's log-mass.
        plan: The normalised plan ``N(mean_pi, Cov_pi)`` on ``R^{2d}``, factored.
        destroyed_mass: ``(m_a - m_pi, m_b - m_pi)``.
        epsilon: The entropic regularisation.
        gamma: The marginal relaxation strength.
    """

    cost: Float[Array, ""]
    """The optimal value ``UOT`` (with its mass terms)."""
    log_mass: Float[Array, ""]
    """``log m_pi``, the plan's log-mass."""
    plan: LowRankPlan
    """The normalised plan ``N(mean_pi, Cov_pi)`` on ``R^{2d}``, factored."""
    destroyed_mass: tuple[Float[Array, ""], Float[Array, ""]]
    """``(m_a - m_pi, m_b - m_pi)``: mass not transported (negative where created)."""
    epsilon: Float[Array, ""]
    """The entropic regularisation."""
    gamma: Float[Array, ""]
    """The marginal relaxation strength."""

    @property
    def mass(self) -> Array:
        """``m_pi = exp(log_mass)``, the transported mass."""
        return jnp.exp(self.log_mass)

    @property
    def cross_cov(self) -> SubspaceOperator:
        """``Cov(x, y)`` under the normalised plan."""
        return self.plan.cross_cov


@jax.custom_jvp
def joint_factor(M: Float[Array, "d k"]) -> Float[Array, "r k"]:
    r"""``F`` of a thin QR ``M = Z F``, with the tangent ``dF = Z^T dM``.

    ``F^T F = M^T M`` and ``dF`` solves ``F^T dF + dF^T F = d(M^T M)``: the exact derivative of
    every function of ``F`` that depends on ``F^T F`` only (module docstring), finite also
    where ``M`` is rank-deficient (then ``F`` itself is not differentiable).
    """
    return jnp.linalg.qr(M)[1]


@joint_factor.defjvp
def _joint_factor_jvp(primals, tangents):
    (M,), (dM,) = primals, tangents
    Z, F = jnp.linalg.qr(M)
    return F, Z.T @ dM


def involves(mu, nu) -> bool:
    """True when either argument is a :class:`LowRankGaussian` (dispatch test)."""
    return isinstance(mu, LowRankGaussian) or isinstance(nu, LowRankGaussian)


def involves_measure(a, b) -> bool:
    """True when either argument is a low-rank (scaled) measure (unbalanced dispatch)."""
    kinds = (LowRankGaussian, ScaledLowRankGaussian)
    return isinstance(a, kinds) or isinstance(b, kinds)


def _unscale(name: str, x):
    if isinstance(x, ScaledLowRankGaussian | ScaledGaussian):
        return x.normalized, x.mass
    if isinstance(x, LowRankGaussian):
        return x, 1.0
    raise ValueError(
        f"{name} must be a ScaledLowRankGaussian, a LowRankGaussian (mass 1) or a "
        f"ScaledGaussian, got {type(x).__name__}"
    )


def unbalanced_dispatch(a, b, epsilon, gamma) -> LowRankUnbalancedOT:
    """:func:`gaussot_jax.unbalanced_entropic_ot` on low-rank (scaled) measures."""
    (ga, ma), (gb, mb) = _unscale("a", a), _unscale("b", b)
    return lowrank_unbalanced_entropic_ot(ga, gb, epsilon, gamma, masses=(ma, mb))


def _pair(mu, nu, names=("mu", "nu")) -> tuple[Gaussian, Gaussian] | None:
    """Validate a pair; returns ``None`` for a low-rank pair, else the dense pair (mixed)."""
    for name, g in zip(names, (mu, nu)):
        if not isinstance(g, LowRankGaussian | Gaussian):
            raise ValueError(
                f"{name} must be a LowRankGaussian or a Gaussian, got {type(g).__name__}"
            )
        if g.mean.ndim != 1:
            raise ValueError(
                f"{name} must be a single {type(g).__name__} (not a batch), got mean shape "
                f"{g.mean.shape}; use jax.vmap for batches"
            )
    if mu.dim != nu.dim:
        raise ValueError(f"dimensions differ: {names[0]} has d={mu.dim}, {names[1]} d={nu.dim}")
    if isinstance(mu, LowRankGaussian) and isinstance(nu, LowRankGaussian):
        return None
    if mu.dim > MIXED_MAX_DIM:
        raise ValueError(
            f"a LowRankGaussian paired with a dense Gaussian at d={mu.dim} > {MIXED_MAX_DIM}: "
            "there is no low-rank reduction for a dense covariance; pass two LowRankGaussians "
            "(e.g. LowRankGaussian.from_samples) or call .to_dense() on purpose"
        )
    dense = [g.to_dense() if isinstance(g, LowRankGaussian) else g for g in (mu, nu)]
    return cast("tuple[Gaussian, Gaussian]", tuple(dense))  # two entries: (mu, nu)


class _Reduced(eqx.Module):
    A: Array  # r x r, zero-mean reduced covariances
    B: Array
    sa: Array
    sb: Array
    n_perp: int = eqx.field(static=True)  # d - r, the complement's dimension


def _reduce(mu: LowRankGaussian, nu: LowRankGaussian) -> _Reduced:
    """The reduced pair, ``F`` from :func:`joint_factor` (tangent ``Z^T dM``).

    Exact derivatives for the ``O(d)``-invariant values, also at rank-deficient ``M``.
    """
    return _reduce_impl(mu, nu, with_basis=False)[1]


def _reduce_with_basis(mu: LowRankGaussian, nu: LowRankGaussian) -> tuple[Array, _Reduced]:
    """``(Z, reduced pair)`` from one QR differentiated by JAX's rule.

    Factored outputs ``Z core(F) Z^T`` need the two tangents to agree (``joint_factor``'s
    differs from the QR's by ``(Z^T dZ) F``, an infinitesimal rotation that ``core``
    follows and ``Z`` does not); exact where ``M`` has full column rank.
    """
    Z, red = _reduce_impl(mu, nu, with_basis=True)
    assert Z is not None  # with_basis
    return Z, red


def _reduce_impl(mu, nu, *, with_basis: bool) -> tuple[Array | None, _Reduced]:
    dtype = jnp.result_type(mu.mean, nu.mean)
    Ua, Ub = mu.factor.astype(dtype), nu.factor.astype(dtype)
    sa, sb = mu.noise.astype(dtype), nu.noise.astype(dtype)
    ka, k = mu.rank, mu.rank + nu.rank
    if k == 0:
        empty = jnp.zeros((0, 0), dtype)
        return jnp.zeros((mu.dim, 0), dtype), _Reduced(empty, empty, sa, sb, mu.dim)
    M = jnp.concatenate([Ua, Ub], axis=1)
    Z, F = jnp.linalg.qr(M) if with_basis else (None, joint_factor(M))
    r = F.shape[0]
    eye = jnp.eye(r, dtype=dtype)
    Fa, Fb = F[:, :ka], F[:, ka:]
    return Z, _Reduced(sym(Fa @ Fa.T) + sa * eye, sym(Fb @ Fb.T) + sb * eye, sa, sb, mu.dim - r)


def _split(red: _Reduced, fn) -> Array:
    """``fn`` on the reduced pair plus ``d - r`` times ``fn`` on the 1-D pair (zero means)."""
    total = 0.0
    if red.A.shape[0]:
        z = jnp.zeros(red.A.shape[0], red.A.dtype)
        total = fn(Gaussian(z, red.A, validate=False), Gaussian(z, red.B, validate=False))
    if red.n_perp:
        z = jnp.zeros(1, red.sa.dtype)
        g_a = Gaussian(z, red.sa[None, None], validate=False)
        g_b = Gaussian(z, red.sb[None, None], validate=False)
        total = total + red.n_perp * fn(g_a, g_b)
    # d = r + n_perp >= 1 runs a branch (an array); only d = 0 leaves the float 0.0, which
    # every caller adds to an array.
    return cast(Array, total)


def _sqrt(x):
    return jnp.sqrt(x)


def _sq_dist(mu, nu) -> Array:
    return jnp.sum((mu.mean - nu.mean) ** 2)


def lowrank_bures_wasserstein2(
    mu: LowRankGaussian | Gaussian, nu: LowRankGaussian | Gaussian
) -> Float[Array, ""]:
    r"""``W2^2`` between low-rank-plus-isotropic Gaussians in ``O(d k^2)`` (docs/lowrank.md).

    ``||a - b||^2 + W2^2(N(0, A_r), N(0, B_r)) + (d - r)(sqrt(s_a) - sqrt(s_b))^2`` (module
    docstring); :func:`gaussot_jax.bures_wasserstein2` dispatches here for such pairs. Where a
    noise is exactly 0, say ``s_a``, it uses ``Tr (A^{1/2} B A^{1/2})^{1/2} = Tr (U_a^T B
    U_a)^{1/2}`` instead (a ``k_a x k_a`` matrix, no round-off-sized eigenvalue under a square
    root; chosen by ``lax.cond``, so under ``vmap`` both forms run). As for the dense form, the
    gradient in the noise is infinite where one noise is 0 and the other is not.

    Examples:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> d = 100_000
        >>> mu = gj.LowRankGaussian(jnp.zeros(d), jnp.ones((d, 1)) / 100, 1.0)
        >>> nu = gj.LowRankGaussian(jnp.zeros(d), jnp.zeros((d, 0)), 4.0)
        >>> w2 = gj.bures_wasserstein2(mu, nu)
    """
    dense = _pair(mu, nu)
    if dense is not None:
        return bures_wasserstein2(*dense)
    assert isinstance(mu, LowRankGaussian) and isinstance(nu, LowRankGaussian)  # _pair: None
    return _lowrank_w2(mu, nu)


@jax.jit  # jit policy (docs/conventions.md#jit)
def _lowrank_w2(mu: LowRankGaussian, nu: LowRankGaussian):
    dtype = jnp.result_type(mu.mean, nu.mean)
    Ua, Ub = mu.factor.astype(dtype), nu.factor.astype(dtype)
    sa, sb = mu.noise.astype(dtype), nu.noise.astype(dtype)
    d = mu.dim

    def generic():
        return _split(_reduce(mu, nu), bures_wasserstein2)

    def singular(U, V, s_other):
        # A = U U^T exactly (zero noise): the nonzero eigenvalues of AB are those of the
        # k_a x k_a matrix U^T B U, so Tr (A^{1/2} B A^{1/2})^{1/2} = Tr (U^T B U)^{1/2}. The
        # reduced r x r problem would instead take square roots of the round-off-sized
        # eigenvalues of its singular A_r (sqrt(eps)-accurate only, as the dense W2 is).
        tr = jnp.sum(U**2) + jnp.sum(V**2) + d * s_other
        if U.shape[1] == 0:
            return tr
        UV = U.T @ V
        X = sym(UV @ UV.T + s_other * (U.T @ U))
        return tr - 2.0 * spectral_trace(_sqrt, X)

    value = jax.lax.cond(
        sa == 0,
        lambda: singular(Ua, Ub, sb),
        lambda: jax.lax.cond(sb == 0, lambda: singular(Ub, Ua, sa), generic),
    )
    return _sq_dist(mu, nu) + value


def lowrank_entropic_ot(
    mu: LowRankGaussian | Gaussian, nu: LowRankGaussian | Gaussian, epsilon, reference=None
) -> LowRankEntropicOT | EntropicOT:
    r"""Balanced entropic OT [JMPC20, Thm 1] between low-rank-plus-isotropic Gaussians.

    Cost ``||a - b||^2 + OT_eps(N(0, A_r), N(0, B_r)) + (d - r) OT_eps(N(0, s_a), N(0, s_b))``;
    cross-covariance and entropic-map matrix ``Z M Z^T + c (I - Z Z^T)`` from the same two
    dense problems (module docstring). :func:`gaussot_jax.entropic_ot` dispatches here.
    Only the product reference ``mu ⊗ nu``. A mixed low-rank/dense pair (small ``d``) returns
    the dense :class:`gaussot_jax.EntropicOT`.

    Examples:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> d = 100_000
        >>> mu = gj.LowRankGaussian(jnp.zeros(d), jnp.ones((d, 1)) / 100, 1.0)
        >>> nu = gj.LowRankGaussian(jnp.ones(d), jnp.zeros((d, 0)), 4.0)
        >>> out = gj.entropic_ot(mu, nu, 0.5)
        >>> y = out.entropic_map(jnp.zeros(d))
    """
    if reference is not None:
        raise ValueError("reference: only the product reference (None) for LowRankGaussian pairs")
    dense = _pair(mu, nu)
    if dense is not None:
        return entropic_ot(*dense, epsilon)
    assert isinstance(mu, LowRankGaussian) and isinstance(nu, LowRankGaussian)  # _pair: None
    eps = _checks.check_epsilon(epsilon, jnp.result_type(mu.mean, nu.mean))
    return _lowrank_ot(mu, nu, eps)


@jax.jit  # jit policy (docs/conventions.md#jit)
def _lowrank_ot(mu: LowRankGaussian, nu: LowRankGaussian, eps: Array) -> LowRankEntropicOT:
    dtype = eps.dtype
    red = _reduce(mu, nu)
    cost = _sq_dist(mu, nu) + _split(red, lambda g, h: entropic_ot(g, h, eps).cost)
    Z, n_perp, out_r, out_1 = _reduced_results(mu, nu, lambda g, h: entropic_ot(g, h, eps))
    a, b = mu.mean.astype(dtype), nu.mean.astype(dtype)
    cross = _subspace(Z, out_r.cross_cov, out_1.cross_cov[0, 0])
    T = _subspace(Z, out_r.transport_map.matrix, out_1.transport_map.matrix[0, 0])
    plan = _plan(a, b, Z, out_r.plan.cov, out_1.plan.cov)
    # Potentials (module docstring): f = f0(x - a) + 2 (a - b)^T x - ||a||^2 + a^T b with f0
    # the zero-mean potential, whose Hessian and value at 0 split over the basis.
    (f_r, g_r), (f_1, g_1) = out_r.potentials, out_1.potentials
    f = LowRankQuadraticPotential.centred(
        _subspace(Z, f_r.quad, f_1.quad[0, 0]),
        a,
        f_r.const + n_perp * f_1.const - a @ a + a @ b,
        2.0 * (a - b),
    )
    g = LowRankQuadraticPotential.centred(
        _subspace(Z, g_r.quad, g_1.quad[0, 0]),
        b,
        g_r.const + n_perp * g_1.const - b @ b + a @ b,
        2.0 * (b - a),
    )
    return LowRankEntropicOT(
        cost=cost,
        cross_cov=cross,
        plan=plan,
        potentials=(f, g),
        map_matrix=T,
        map_offset=b - T.apply(a),
        epsilon=eps,
    )


def _reduced_results(mu, nu, solve):
    """``(Z, solve on the r-dim pair, solve on the 1-D pair)``, both pairs zero-mean.

    For ``r = 0`` (two isotropic Gaussians) the reduced result is the 1-D one with every
    array field cut to size 0 and every scalar field 0 (the value of an empty problem).
    """
    Z, red = _reduce_with_basis(mu, nu)
    dtype = red.sa.dtype
    z1 = jnp.zeros(1, dtype)
    g_a1 = Gaussian(z1, red.sa[None, None], validate=False)
    g_b1 = Gaussian(z1, red.sb[None, None], validate=False)
    out_1 = solve(g_a1, g_b1)
    if red.A.shape[0]:
        z = jnp.zeros(red.A.shape[0], dtype)
        out_r = solve(Gaussian(z, red.A, validate=False), Gaussian(z, red.B, validate=False))
    else:
        out_r = jax.tree_util.tree_map(_empty_like, out_1)
    return Z, red.n_perp, out_r, out_1


def _empty_like(x):
    """A field of a 1-D result with every axis cut to length 0, or 0 for a scalar (``r = 0``)."""
    x = jnp.asarray(x)
    if x.ndim == 0:
        return jnp.zeros_like(x)
    return x[tuple(slice(0, 0) for _ in range(x.ndim))]


def lowrank_sinkhorn_divergence(
    mu: LowRankGaussian | Gaussian, nu: LowRankGaussian | Gaussian, epsilon
) -> Float[Array, ""]:
    r"""Sinkhorn divergence between low-rank-plus-isotropic Gaussians in ``O(d k^2)``.

    ``||a - b||^2 + S_eps(N(0, A_r), N(0, B_r)) + (d - r) S_eps(N(0, s_a), N(0, s_b))``: each
    of its three ``OT_eps`` terms splits over the joint basis (module docstring).
    :func:`gaussot_jax.sinkhorn_divergence` dispatches here.
    """
    dense = _pair(mu, nu)
    if dense is not None:
        return sinkhorn_divergence(*dense, epsilon)
    assert isinstance(mu, LowRankGaussian) and isinstance(nu, LowRankGaussian)  # _pair: None
    eps = _checks.check_epsilon(epsilon, jnp.result_type(mu.mean, nu.mean))
    return _lowrank_sd(mu, nu, eps)


@jax.jit  # jit policy (docs/conventions.md#jit)
def _lowrank_sd(mu: LowRankGaussian, nu: LowRankGaussian, eps: Array) -> Array:
    div = lambda g, h: sinkhorn_divergence(g, h, eps)  # noqa: E731
    return _sq_dist(mu, nu) + _split(_reduce(mu, nu), div)


def _woodbury_quad(M: Array, s: Array, u: Array) -> Array:
    """``u^T (M M^T + s I)^{-1} u`` for ``s > 0`` in ``O(d k^2)``."""
    if M.shape[1] == 0:
        return jnp.sum(u**2) / s
    K = sym(M.T @ M) + s * jnp.eye(M.shape[1], dtype=M.dtype)
    L = jnp.linalg.cholesky(K)
    z = jax.scipy.linalg.solve_triangular(L, M.T @ u, lower=True)
    return (jnp.sum(u**2) - jnp.sum(z**2)) / s


def lowrank_unbalanced_entropic_ot(
    a: LowRankGaussian | Gaussian,
    b: LowRankGaussian | Gaussian,
    epsilon,
    gamma,
    *,
    masses=(1.0, 1.0),
) -> LowRankUnbalancedOT:
    r"""Unbalanced entropic OT [JMPC20, Thm 2] between ``m_a a`` and ``m_b b``, ``O(d k^2)``.

    ``log m_pi = l_r + (d - r) l_1 + (log m_a + log m_b - u^T X^{-1} u / 2) / (1 + tau)`` with
    ``l_r``, ``l_1`` the log-masses of the unit-mass, zero-mean ``r``-dimensional and 1-D
    problems (:func:`gaussot_jax.unbalanced_entropic_ot`), ``u = b - a``,
    ``X = [U_a, U_b][U_a, U_b]^T + (s_a + s_b + lam) I`` (Woodbury), ``lam = (eps + gamma)/2``,
    ``tau = gamma / (gamma + eps)``; then ``UOT = gamma (m_a + m_b - 2 m_pi) + eps (m_a m_b -
    m_pi)``. The cost is not additive over coordinates; ``log m_pi`` is (module docstring).

    Args:
        a: the first measure's shape ``N(a, A)``.
        b: the second's, ``N(b, B)``.
        epsilon: ``> 0``.
        gamma: marginal relaxation ``> 0``.
        masses: ``(m_a, m_b)``, positive.
    """
    dense = _pair(a, b, ("a", "b"))
    dtype = jnp.result_type(a.mean, b.mean)
    m_a, m_b = (jnp.asarray(m, dtype) for m in masses)
    for name, m in (("masses[0]", m_a), ("masses[1]", m_b)):
        _checks.check_positive(name, m)
    if dense is not None:
        da, db = dense
        out = unbalanced_entropic_ot(
            ScaledGaussian(m_a, da.mean, da.cov, validate=False),
            ScaledGaussian(m_b, db.mean, db.cov, validate=False),
            epsilon,
            gamma,
        )
        out = cast(UnbalancedEntropicOT, out)  # dense arguments: the dense result
        # The dense plan as a LowRankPlan on the basis I (r = d, no complement).
        eye = jnp.eye(a.dim, dtype=dtype)
        plan = LowRankPlan(out.plan.mean, eye, out.plan.cov, jnp.eye(2, dtype=dtype))
        return LowRankUnbalancedOT(
            cost=out.cost,
            log_mass=out.log_mass,
            plan=plan,
            destroyed_mass=out.destroyed_mass,
            epsilon=out.epsilon,
            gamma=out.gamma,
        )
    eps = _checks.check_epsilon(epsilon, dtype)
    assert isinstance(a, LowRankGaussian) and isinstance(b, LowRankGaussian)  # _pair: None
    gam = jnp.asarray(gamma, dtype)
    _checks.check_positive("gamma", gam)
    return _lowrank_uot(a, b, m_a, m_b, eps, gam)


@jax.jit  # jit policy (docs/conventions.md#jit)
def _lowrank_uot(a: LowRankGaussian, b: LowRankGaussian, m_a, m_b, eps, gam) -> LowRankUnbalancedOT:
    dtype = eps.dtype
    one = jnp.ones((), dtype)

    def log_mass(g, h):
        sa, sb = (ScaledGaussian(one, x.mean, x.cov, validate=False) for x in (g, h))
        return unbalanced_entropic_ot(sa, sb, eps, gam).log_mass

    lam = 0.5 * (eps + gam)
    M = jnp.concatenate([a.factor, b.factor], axis=1).astype(dtype)
    quad = _woodbury_quad(M, a.noise + b.noise + lam, (b.mean - a.mean).astype(dtype))
    rho = (eps + gam) / (eps + 2.0 * gam)  # = 1 / (1 + tau)
    log_m = _split(_reduce(a, b), log_mass) + rho * (jnp.log(m_a) + jnp.log(m_b) - 0.5 * quad)
    m_pi = jnp.exp(log_m)
    cost = gam * (m_a + m_b - 2.0 * m_pi) + eps * (m_a * m_b - m_pi)
    return LowRankUnbalancedOT(
        cost=cost,
        log_mass=log_m,
        plan=_unbalanced_plan(a, b, eps, gam, lam),
        destroyed_mass=(m_a - m_pi, m_b - m_pi),
        epsilon=eps,
        gamma=gam,
    )


def _unbalanced_plan(a: LowRankGaussian, b: LowRankGaussian, eps, gam, lam) -> LowRankPlan:
    """The normalised unbalanced plan, factored (module docstring).

    Its covariance depends on neither the means nor the masses, and every block of it
    (``(I + C/lam)(A - A X^{-1} A)``, ...) splits over the basis: the reduced and the 1-D
    zero-mean, unit-mass problems give the core and the scalar block. The means
    ``a + A X^{-1} u``, ``b - B X^{-1} u`` (``u = b - a``) use ``A X^{-1} = Z A_r X_r^{-1} Z^T +
    s_a / (s_a + s_b + lam) (I - Z Z^T)``.
    """
    from .unbalanced import _uot  # the dense kernel, on the r-dim and the 1-D problem

    Z, red = _reduce_with_basis(a, b)
    dtype = red.sa.dtype
    one = jnp.ones((), dtype)
    z1 = jnp.zeros(1, dtype)
    cov_1 = _uot(one, z1, red.sa[None, None], one, z1, red.sb[None, None], eps, gam).cov
    r = red.A.shape[0]
    if r:
        zr = jnp.zeros(r, dtype)
        cov_r = _uot(one, zr, red.A, one, zr, red.B, eps, gam).cov
        L = jnp.linalg.cholesky(sym(red.A + red.B + lam * jnp.eye(r, dtype=dtype)))
        cho = jax.scipy.linalg.cho_solve
        AX_r, BX_r = (cho((L, True), M).T for M in (red.A, red.B))  # M X^{-1} (symmetric M, X)
    else:
        cov_r = AX_r = BX_r = jnp.zeros((0, 0), dtype)
    x_perp = red.sa + red.sb + lam
    u = (b.mean - a.mean).astype(dtype)
    mean_x = a.mean.astype(dtype) + _subspace(Z, AX_r, red.sa / x_perp).apply(u)
    mean_y = b.mean.astype(dtype) - _subspace(Z, BX_r, red.sb / x_perp).apply(u)
    return _plan(mean_x, mean_y, Z, cov_r, cov_1)
