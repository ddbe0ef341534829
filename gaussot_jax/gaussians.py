"""Gaussian measures and linear-Gaussian kernels as equinox Modules.

All fields are arrays, so every type is a pytree that ``jax.vmap``, ``jax.jit`` and
``jax.grad`` pass through; a batch of ``n`` Gaussians is one ``Gaussian`` whose fields
carry a leading axis ``n`` (``mean (n, d)``, ``cov (n, d, d)``). Methods act on a single
object; ``jax.vmap`` them for batches.

Points follow ``jax.numpy`` conventions: ``log_prob``, maps and potentials take an array
of shape ``(..., d)`` (one point or any batch of points) and return ``(...)`` (or
``(..., k)`` for maps); a wrong last dimension raises ``ValueError`` naming the argument.

Validation (docs/conventions.md, ``_checks``): shapes are checked at construction; values
(finite, symmetric, PSD, mass > 0) are checked when the inputs are concrete, and for
tracers inside ``gj.checks()``. ``.checked(name=...)`` returns the same object with its
leaves wrapped in ``eqx.error_if`` whatever the switch; messages name the argument
(``mu.cov``) and, for a concrete batch, the failing member.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from . import _checks
from ._cholesky import chol_logdet
from ._pretty import Pretty
from .linalg import sqrtm_unchecked as sqrtm
from .linalg import sym

__all__ = [
    "AffineMap",
    "Gaussian",
    "LinearGaussianKernel",
    "QuadraticPotential",
    "ScaledGaussian",
    "kl_gaussian",
]

_LOG_2PI = 1.8378770664093453


def _check_mean_cov(mean, cov, mean_name: str, cov_name: str) -> None:
    if jnp.ndim(mean) < 1 or jnp.shape(mean)[-1] == 0:
        raise ValueError(f"{mean_name} must have shape (..., d), d >= 1, got {jnp.shape(mean)}")
    d = jnp.shape(mean)[-1]
    _checks.check_square(cov_name, cov, d)
    if jnp.shape(cov)[:-2] != jnp.shape(mean)[:-1]:
        raise ValueError(
            f"batch shapes of {mean_name} {jnp.shape(mean)} and {cov_name} "
            f"{jnp.shape(cov)} disagree"
        )


def _prefix(name: str | None, field: str) -> str:
    return field if name is None else f"{name}.{field}"


def _log_normal(L: Array, r: Array) -> Array:
    """``log N(r; 0, L L^T)`` for residuals ``r`` of shape ``(..., d)``."""
    d = L.shape[-1]
    flat = r.reshape(-1, d)
    z = jax.scipy.linalg.solve_triangular(L, flat.T, lower=True)
    quad = jnp.sum(z**2, axis=0).reshape(r.shape[:-1])
    return -0.5 * (d * _LOG_2PI + quad) - 0.5 * chol_logdet(L)


def _single(obj, what: str) -> None:
    leading = obj.mean if hasattr(obj, "mean") else obj.alpha
    if leading.ndim != 1:
        raise ValueError(
            f"{what} acts on a single {type(obj).__name__} (mean (d,)), got a batch with "
            f"field shape {leading.shape}; use jax.vmap over the batch"
        )


class Gaussian(Pretty):
    r"""The Gaussian measure ``N(mean, cov)`` on ``R^d``.

    Args:
        mean: ``(..., d)``.
        cov: ``(..., d, d)``, symmetric PSD (singular allowed).
        validate: check values (finite, symmetric, PSD) when they are concrete.

    Examples:
        >>> import jax.numpy as jnp, gaussot_jax as gj
        >>> mu = gj.Gaussian(jnp.zeros(2), jnp.eye(2))
        >>> mu.dim
        2
    """

    mean: Float[Array, "*batch d"]
    cov: Float[Array, "*batch d d"]

    def __init__(self, mean, cov, *, validate: bool = True):
        if validate:
            mean, cov = _checks.check_real("mean", mean), _checks.check_real("cov", cov)
        mean, cov = _checks.common_float(mean, cov)
        _check_mean_cov(mean, cov, "mean", "cov")
        if validate:
            mean = _checks.check_finite("mean", mean, core=1)
            cov = _checks.check_cov("cov", cov)
        self.mean, self.cov = mean, cov

    @property
    def dim(self) -> int:
        """Dimension ``d``."""
        return self.mean.shape[-1]

    def checked(self, *, definite: bool = False, name: str | None = None) -> Gaussian:
        """The same Gaussian with its value checks as ``eqx.error_if`` (use under jit).

        Args:
            definite: require a positive-definite covariance.
            name: the argument's name for the messages (``"mu"`` gives ``mu.cov ...``).
        """
        mean = _checks.error_if_not_finite(_prefix(name, "mean"), self.mean, core=1)
        cov = _checks.error_if_not_cov(_prefix(name, "cov"), self.cov, definite=definite)
        return Gaussian(mean, cov, validate=False)

    @classmethod
    def from_samples(cls, x: Float[Array, "n d"], *, ddof: int = 0) -> Gaussian:
        """Gaussian with the sample mean and covariance of ``x``.

        ``ddof=0`` (default) gives the moments of the empirical measure.
        """
        x = _checks.as_float(x)
        if x.ndim != 2:
            raise ValueError(f"x must have shape (n, d), got {x.shape}")
        n = x.shape[0]
        if n - ddof < 1:
            raise ValueError(f"x needs more than ddof={ddof} samples, got n={n}")
        m = jnp.mean(x, axis=0)
        xc = x - m
        return cls(m, sym(xc.T @ xc) / (n - ddof), validate=False)

    def sample(self, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        """Samples of shape ``(*shape, d)`` (works for singular covariances; differentiable)."""
        z = jax.random.normal(key, (*shape, self.dim), dtype=self.mean.dtype)
        # The symmetric root is a factor (S^{1/2} S^{1/2} = S, also at singular S), and its
        # derivative rule keeps reparametrised samples differentiable at repeated eigenvalues.
        return self.mean + z @ sqrtm(self.cov)

    def log_prob(self, x: Float[Array, "*n d"]) -> Float[Array, "*n"]:
        """Log-density at the points ``x`` of shape ``(..., d)``, one value per point.

        Requires a positive-definite covariance (one Cholesky factor for all points).

        Example:
            >>> import jax.numpy as jnp, gaussot_jax as gj
            >>> gj.Gaussian(jnp.zeros(2), jnp.eye(2)).log_prob(jnp.zeros((5, 2))).shape
            (5,)
        """
        _single(self, "log_prob")
        x = _checks.check_points("x", x, self.dim)
        L = jnp.linalg.cholesky(sym(self.cov))
        return _log_normal(L, x - self.mean)

    def kl(self, other: Gaussian) -> Array:
        """``KL(self || other)``; see :func:`kl_gaussian`."""
        return kl_gaussian(self, other)

    def affine(self, matrix: Float[Array, "k d"], offset: Float[Array, " k"]) -> Gaussian:
        """Pushforward by ``x -> matrix x + offset``."""
        return Gaussian(
            matrix @ self.mean + offset, sym(matrix @ self.cov @ matrix.T), validate=False
        )

    def split(self, d1: int) -> tuple[Gaussian, Gaussian]:
        """Marginals of the first ``d1`` and the remaining coordinates."""
        m, S = self.mean, self.cov
        return (
            Gaussian(m[:d1], S[:d1, :d1], validate=False),
            Gaussian(m[d1:], S[d1:, d1:], validate=False),
        )

    def conditional(self, d1: int) -> LinearGaussianKernel:
        """Law of the last coordinates given the first ``d1``, ``y | x``.

        Needs the ``x``-block to be positive definite.
        """
        m, S = self.mean, self.cov
        A, C, B = S[:d1, :d1], S[:d1, d1:], S[d1:, d1:]
        beta = jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(sym(A)), True), C).T
        alpha = m[d1:] - beta @ m[:d1]
        return LinearGaussianKernel(alpha, beta, sym(B - beta @ C), validate=False)


def kl_gaussian(p: Gaussian, q: Gaussian) -> Array:
    r"""``KL(N(m_p, S_p) || N(m_q, S_q))``.

    ``= 1/2 [Tr(S_q^{-1} S_p) + (m_q - m_p)^T S_q^{-1} (m_q - m_p) - d
    + logdet S_q - logdet S_p]``, via Cholesky factors (``S_q`` positive definite;
    ``S_p`` positive definite, else the value is ``+inf``).
    """
    if p.dim != q.dim:
        raise ValueError(f"dimensions differ: p has d={p.dim}, q has d={q.dim}")
    Lq = jnp.linalg.cholesky(sym(q.cov))
    Lp = jnp.linalg.cholesky(sym(p.cov))
    M = jax.scipy.linalg.solve_triangular(Lq, Lp, lower=True)
    z = jax.scipy.linalg.solve_triangular(Lq, q.mean - p.mean, lower=True)
    logdet_ratio = chol_logdet(Lq) - chol_logdet(Lp)
    return 0.5 * (jnp.sum(M**2) + jnp.sum(z**2) - p.dim + logdet_ratio)


class ScaledGaussian(Pretty):
    r"""The positive measure ``mass * N(mean, cov)`` (for unbalanced OT, [JMPC20]).

    Args:
        mass: positive scalar (``(...)`` for a batch).
        mean: ``(..., d)``.
        cov: ``(..., d, d)``, symmetric PSD.
        validate: check values when they are concrete.
    """

    mass: Float[Array, "*batch"]
    mean: Float[Array, "*batch d"]
    cov: Float[Array, "*batch d d"]

    def __init__(self, mass, mean, cov, *, validate: bool = True):
        if validate:
            mass, mean, cov = (
                _checks.check_real(n, x) for n, x in (("mass", mass), ("mean", mean), ("cov", cov))
            )
        mass, mean, cov = _checks.common_float(mass, mean, cov)
        _check_mean_cov(mean, cov, "mean", "cov")
        if jnp.shape(mass) != jnp.shape(mean)[:-1]:
            raise ValueError(
                f"mass must have the batch shape {jnp.shape(mean)[:-1]} of mean, "
                f"got {jnp.shape(mass)}"
            )
        if validate:
            mass = _checks.check_positive("mass", mass)
            mean = _checks.check_finite("mean", mean, core=1)
            cov = _checks.check_cov("cov", cov)
        self.mass, self.mean, self.cov = mass, mean, cov

    @property
    def dim(self) -> int:
        """Dimension ``d``."""
        return self.mean.shape[-1]

    @property
    def normalized(self) -> Gaussian:
        """The probability measure ``N(mean, cov)``."""
        return Gaussian(self.mean, self.cov, validate=False)

    def checked(self, *, name: str | None = None) -> ScaledGaussian:
        """The same measure with value checks as ``eqx.error_if`` (use under jit).

        Args:
            name: the argument's name for the messages (``"a"`` gives ``a.mass ...``).
        """
        g = self.normalized.checked(name=name)
        mass = _checks.error_if_not_positive(_prefix(name, "mass"), self.mass)
        return ScaledGaussian(mass, g.mean, g.cov, validate=False)

    def sample(self, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        """Samples of the normalised measure."""
        return self.normalized.sample(key, shape)

    def log_density(self, x: Float[Array, "*n d"]) -> Float[Array, "*n"]:
        """``log(mass) + log N(x; mean, cov)`` at the points ``x`` of shape ``(..., d)``."""
        return jnp.log(self.mass) + self.normalized.log_prob(x)

    def kl(self, other: ScaledGaussian) -> Array:
        r"""Generalised KL ``∫ log(dp/dq) dp - m_p + m_q``.

        ``= m_p [KL(p̄ || q̄) + log(m_p / m_q)] - m_p + m_q`` with ``p̄, q̄`` normalised.
        """
        kl = kl_gaussian(self.normalized, other.normalized)
        mp, mq = self.mass, other.mass
        return mp * (kl + jnp.log(mp / mq)) - mp + mq


class LinearGaussianKernel(Pretty):
    r"""The Markov kernel ``K(x, .) = N(alpha + beta x, tau)`` from ``R^d1`` to ``R^d2``.

    Args:
        alpha: ``(..., d2)``.
        beta: ``(..., d2, d1)``.
        tau: ``(..., d2, d2)``, symmetric PSD.
        validate: check values when they are concrete.
    """

    alpha: Float[Array, "*batch d2"]
    beta: Float[Array, "*batch d2 d1"]
    tau: Float[Array, "*batch d2 d2"]

    def __init__(self, alpha, beta, tau, *, validate: bool = True):
        if validate:
            alpha, beta, tau = (
                _checks.check_real(n, x)
                for n, x in (("alpha", alpha), ("beta", beta), ("tau", tau))
            )
        alpha, beta, tau = _checks.common_float(alpha, beta, tau)
        _check_mean_cov(alpha, tau, "alpha", "tau")
        if jnp.ndim(beta) < 2 or jnp.shape(beta)[:-1] != jnp.shape(alpha):
            raise ValueError(
                f"beta must have shape (..., d2, d1) matching alpha {jnp.shape(alpha)}, "
                f"got {jnp.shape(beta)}"
            )
        if validate:
            alpha = _checks.check_finite("alpha", alpha, core=1)
            beta = _checks.check_finite("beta", beta, core=2)
            tau = _checks.check_cov("tau", tau)
        self.alpha, self.beta, self.tau = alpha, beta, tau

    @property
    def dims(self) -> tuple[int, int]:
        """``(d1, d2)``: input and output dimensions."""
        return self.beta.shape[-1], self.beta.shape[-2]

    def checked(self, *, definite: bool = False, name: str | None = None) -> LinearGaussianKernel:
        """The same kernel with value checks as ``eqx.error_if`` (use under jit).

        Args:
            definite: require a positive-definite ``tau``.
            name: the argument's name for the messages (``"kernel"``: ``kernel.tau ...``).
        """
        return LinearGaussianKernel(
            _checks.error_if_not_finite(_prefix(name, "alpha"), self.alpha, core=1),
            _checks.error_if_not_finite(_prefix(name, "beta"), self.beta, core=2),
            _checks.error_if_not_cov(_prefix(name, "tau"), self.tau, definite=definite),
            validate=False,
        )

    def _mean_at(self, x) -> Array:
        _single(self, "the kernel")
        x = _checks.check_points("x", x, self.dims[0])
        return self.alpha + x @ self.beta.T

    def __call__(self, x: Float[Array, "*n d1"]) -> Gaussian:
        """The Gaussian ``K(x, .)``.

        For points ``x`` of shape ``(..., d1)``: a batch ``(...)`` of Gaussians, with mean
        ``(..., d2)`` and covariance ``tau`` broadcast.
        """
        mean = self._mean_at(x)
        cov = jnp.broadcast_to(self.tau, (*mean.shape, mean.shape[-1]))
        return Gaussian(mean, cov, validate=False)

    def log_prob(self, x: Float[Array, "*n d1"], y: Float[Array, "*n d2"]) -> Float[Array, "*n"]:
        """``log K(x, y)``, the transition log-density.

        ``x (..., d1)`` and ``y (..., d2)`` broadcast over their leading axes.
        """
        mean = self._mean_at(x)
        y = _checks.check_points("y", y, self.dims[1])
        return _log_normal(jnp.linalg.cholesky(sym(self.tau)), y - mean)

    def sample(self, key: PRNGKeyArray, x: Float[Array, "*n d1"]) -> Float[Array, "*n d2"]:
        """One draw ``y ~ K(x, .)`` for each point ``x`` of shape ``(..., d1)``."""
        mean = self._mean_at(x)
        z = jax.random.normal(key, mean.shape, dtype=mean.dtype)
        return mean + z @ sqrtm(self.tau)

    def pushforward(self, eta: Gaussian) -> Gaussian:
        """The ``y``-marginal of ``eta(dx) K(x, dy)``."""
        return Gaussian(
            self.alpha + self.beta @ eta.mean,
            sym(self.beta @ eta.cov @ self.beta.T + self.tau),
            validate=False,
        )

    def joint(self, eta: Gaussian) -> Gaussian:
        """The Gaussian ``eta(dx) K(x, dy)`` on ``R^{d1 + d2}``."""
        y = self.pushforward(eta)
        C = eta.cov @ self.beta.T
        cov = jnp.block([[eta.cov, C], [C.T, y.cov]])
        return Gaussian(jnp.concatenate([eta.mean, y.mean]), sym(cov), validate=False)

    def bayes(self, eta: Gaussian) -> LinearGaussianKernel:
        r"""The Bayes map: the backward kernel ``x | y`` of ``eta(dx) K(x, dy)`` [ADM25].

        ``P = beta S beta^T + tau``, ``g = S beta^T P^{-1}`` (the Kalman gain);
        ``x | y ~ N(m - g (alpha + beta m) + g y, S - g beta S)``. Needs ``P`` positive
        definite (``tau`` PD suffices).

        The covariance is computed in Joseph form,
        ``(I - g beta) S (I - g beta)^T + g tau g^T``, which equals ``S - g beta S`` for the
        exact gain and is a sum of two PSD terms for any gain: round-off in ``g`` perturbs
        it at second order and cannot make it indefinite, whereas ``S - g beta S`` loses
        definiteness when the observation is nearly exact (``tau -> 0``). The Gaussian
        Sinkhorn iterations and the pinned bridge both go through here.

        Example:
            >>> import jax.numpy as jnp, gaussot_jax as gj
            >>> # tau = 1e-17 is below eps: P rounds to 1, and S - g beta S would give 0.
            >>> K = gj.LinearGaussianKernel(jnp.zeros(1), jnp.eye(1), 1e-17 * jnp.eye(1))
            >>> back = K.bayes(gj.Gaussian(jnp.zeros(1), jnp.eye(1)))
            >>> round(float(back.tau[0, 0]) * 1e17, 4)  # exact: 1e-17 / (1 + 1e-17)
            1.0
        """
        m, S = eta.mean, eta.cov
        P = sym(self.beta @ S @ self.beta.T + self.tau)
        gain = jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(P), True), self.beta @ S).T
        alpha = m - gain @ (self.alpha + self.beta @ m)
        R = jnp.eye(S.shape[-1], dtype=S.dtype) - gain @ self.beta
        cov = sym(R @ S @ R.T + gain @ self.tau @ gain.T)
        return LinearGaussianKernel(alpha, gain, cov, validate=False)


class AffineMap(Pretty):
    """The map ``x -> matrix @ x + offset`` (transport maps: Monge, entropic).

    Attributes:
        matrix: ``(k, d)``, the linear part.
        offset: ``(k,)``, the value at ``x = 0``.
    """

    matrix: Float[Array, "*batch k d"]
    """``(k, d)``, the linear part."""
    offset: Float[Array, "*batch k"]
    """``(k,)``, the value at ``x = 0``."""

    def __call__(self, x: Float[Array, "*n d"]) -> Float[Array, "*n k"]:
        """Apply the map to the points ``x`` of shape ``(..., d)``: ``(..., k)``.

        Example:
            >>> import jax.numpy as jnp, gaussot_jax as gj
            >>> T = gj.AffineMap(2.0 * jnp.eye(2), jnp.ones(2))
            >>> T(jnp.zeros((5, 2))).shape
            (5, 2)
        """
        _check_single_field(self.matrix, 2, "AffineMap")
        x = _checks.check_points("x", x, self.matrix.shape[-1])
        return x @ self.matrix.T + self.offset


class QuadraticPotential(Pretty):
    """The function ``f(x) = 1/2 x^T quad x + lin^T x + const`` (dual potentials).

    Attributes:
        quad: ``(d, d)``, symmetric: the Hessian of ``f``.
        lin: ``(d,)``, the gradient of ``f`` at 0.
        const: scalar, ``f(0)``.
    """

    quad: Float[Array, "*batch d d"]
    """``(d, d)``, symmetric: the Hessian of ``f``."""
    lin: Float[Array, "*batch d"]
    """``(d,)``, the gradient of ``f`` at 0."""
    const: Float[Array, "*batch"]
    """Scalar, ``f(0)``."""

    def __call__(self, x: Float[Array, "*n d"]) -> Float[Array, "*n"]:
        """Evaluate at the points ``x`` of shape ``(..., d)``: one value per point."""
        _check_single_field(self.quad, 2, "QuadraticPotential")
        x = _checks.check_points("x", x, self.quad.shape[-1])
        quad = jnp.einsum("...i,ij,...j->...", x, self.quad, x)
        return 0.5 * quad + x @ self.lin + self.const


def _check_single_field(field: Array, ndim: int, cls: str) -> None:
    if field.ndim != ndim:
        raise ValueError(
            f"a batch of {cls}s (field shape {field.shape}) cannot be applied directly; "
            "use jax.vmap over the batch"
        )
