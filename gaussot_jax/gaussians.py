"""Gaussian measures and linear-Gaussian kernels as equinox Modules.

All fields are arrays, so every type is a pytree that ``jax.vmap``, ``jax.jit`` and
``jax.grad`` pass through; a batch of ``n`` Gaussians is one ``Gaussian`` whose fields
carry a leading axis ``n`` (``mean (n, d)``, ``cov (n, d, d)``). Methods act on a single
object; ``jax.vmap`` them for batches.

Validation (docs/conventions.md): shapes are checked at construction; values (finite,
symmetric, PSD, mass > 0) are checked when the inputs are concrete, and skipped for
tracers. Inside ``jit``, call ``.checked()``: it returns the same object with its leaves
wrapped in ``eqx.error_if``, which raises at run time.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from . import _checks
from .linalg import sqrtm, sym

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
    if jnp.ndim(mean) < 1:
        raise ValueError(f"{mean_name} must have shape (..., d), got {jnp.shape(mean)}")
    d = jnp.shape(mean)[-1]
    _checks.check_square(cov_name, cov, d)
    if jnp.shape(cov)[:-2] != jnp.shape(mean)[:-1]:
        raise ValueError(
            f"batch shapes of {mean_name} {jnp.shape(mean)} and {cov_name} "
            f"{jnp.shape(cov)} disagree"
        )


class Gaussian(eqx.Module):
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
        mean, cov = _checks.common_float(mean, cov)
        _check_mean_cov(mean, cov, "mean", "cov")
        if validate:
            _checks.check_finite("mean", mean)
            _checks.check_cov("cov", cov)
        self.mean, self.cov = mean, cov

    @property
    def dim(self) -> int:
        """Dimension ``d``."""
        return self.mean.shape[-1]

    def checked(self, *, definite: bool = False) -> Gaussian:
        """The same Gaussian with its value checks as ``eqx.error_if`` (use under jit)."""
        mean = _checks.error_if_not_finite("mean", self.mean)
        cov = _checks.error_if_not_cov("cov", self.cov, definite=definite)
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

    def log_prob(self, x: Float[Array, " d"]) -> Array:
        """Log-density at ``x`` (requires a positive-definite covariance)."""
        L = jnp.linalg.cholesky(sym(self.cov))
        z = jax.scipy.linalg.solve_triangular(L, x - self.mean, lower=True)
        return -0.5 * (self.dim * _LOG_2PI + jnp.sum(z**2)) - jnp.sum(jnp.log(jnp.diag(L)))

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
    logdet_ratio = 2.0 * (jnp.sum(jnp.log(jnp.diag(Lq))) - jnp.sum(jnp.log(jnp.diag(Lp))))
    return 0.5 * (jnp.sum(M**2) + jnp.sum(z**2) - p.dim + logdet_ratio)


class ScaledGaussian(eqx.Module):
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
        mass, mean, cov = _checks.common_float(mass, mean, cov)
        _check_mean_cov(mean, cov, "mean", "cov")
        if jnp.shape(mass) != jnp.shape(mean)[:-1]:
            raise ValueError(
                f"mass must have the batch shape {jnp.shape(mean)[:-1]} of mean, "
                f"got {jnp.shape(mass)}"
            )
        if validate:
            _checks.check_positive("mass", mass)
            _checks.check_finite("mean", mean)
            _checks.check_cov("cov", cov)
        self.mass, self.mean, self.cov = mass, mean, cov

    @property
    def dim(self) -> int:
        """Dimension ``d``."""
        return self.mean.shape[-1]

    @property
    def normalized(self) -> Gaussian:
        """The probability measure ``N(mean, cov)``."""
        return Gaussian(self.mean, self.cov, validate=False)

    def checked(self) -> ScaledGaussian:
        """The same measure with value checks as ``eqx.error_if`` (use under jit)."""
        g = self.normalized.checked()
        mass = _checks.error_if_not_positive("mass", self.mass)
        return ScaledGaussian(mass, g.mean, g.cov, validate=False)

    def sample(self, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        """Samples of the normalised measure."""
        return self.normalized.sample(key, shape)

    def log_density(self, x: Float[Array, " d"]) -> Array:
        """``log(mass) + log N(x; mean, cov)``."""
        return jnp.log(self.mass) + self.normalized.log_prob(x)

    def kl(self, other: ScaledGaussian) -> Array:
        r"""Generalised KL ``∫ log(dp/dq) dp - m_p + m_q``.

        ``= m_p [KL(p̄ || q̄) + log(m_p / m_q)] - m_p + m_q`` with ``p̄, q̄`` normalised.
        """
        kl = kl_gaussian(self.normalized, other.normalized)
        mp, mq = self.mass, other.mass
        return mp * (kl + jnp.log(mp / mq)) - mp + mq


class LinearGaussianKernel(eqx.Module):
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
        alpha, beta, tau = _checks.common_float(alpha, beta, tau)
        _check_mean_cov(alpha, tau, "alpha", "tau")
        if jnp.ndim(beta) < 2 or jnp.shape(beta)[:-1] != jnp.shape(alpha):
            raise ValueError(
                f"beta must have shape (..., d2, d1) matching alpha {jnp.shape(alpha)}, "
                f"got {jnp.shape(beta)}"
            )
        if validate:
            _checks.check_finite("alpha", alpha)
            _checks.check_finite("beta", beta)
            _checks.check_cov("tau", tau)
        self.alpha, self.beta, self.tau = alpha, beta, tau

    @property
    def dims(self) -> tuple[int, int]:
        """``(d1, d2)``: input and output dimensions."""
        return self.beta.shape[-1], self.beta.shape[-2]

    def checked(self, *, definite: bool = False) -> LinearGaussianKernel:
        """The same kernel with value checks as ``eqx.error_if`` (use under jit)."""
        return LinearGaussianKernel(
            _checks.error_if_not_finite("alpha", self.alpha),
            _checks.error_if_not_finite("beta", self.beta),
            _checks.error_if_not_cov("tau", self.tau, definite=definite),
            validate=False,
        )

    def __call__(self, x: Float[Array, " d1"]) -> Gaussian:
        """The Gaussian ``K(x, .)``."""
        return Gaussian(self.alpha + self.beta @ x, self.tau, validate=False)

    def log_prob(self, x: Float[Array, " d1"], y: Float[Array, " d2"]) -> Array:
        """``log K(x, y)``, the transition log-density."""
        return self(x).log_prob(y)

    def sample(self, key: PRNGKeyArray, x: Float[Array, " d1"]) -> Array:
        """One draw ``y ~ K(x, .)``."""
        return self(x).sample(key)

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
        """
        m, S = eta.mean, eta.cov
        P = sym(self.beta @ S @ self.beta.T + self.tau)
        gain = jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(P), True), self.beta @ S).T
        alpha = m - gain @ (self.alpha + self.beta @ m)
        return LinearGaussianKernel(alpha, gain, sym(S - gain @ self.beta @ S), validate=False)


class AffineMap(eqx.Module):
    """The map ``x -> matrix @ x + offset`` (transport maps: Monge, entropic).

    Attributes:
        matrix: ``(k, d)``, the linear part.
        offset: ``(k,)``, the value at ``x = 0``.
    """

    matrix: Float[Array, "*batch k d"]
    """``(k, d)``, the linear part."""
    offset: Float[Array, "*batch k"]
    """``(k,)``, the value at ``x = 0``."""

    def __call__(self, x: Float[Array, " d"]) -> Array:
        """Apply the map to one point ``x`` (vmap for many)."""
        return self.matrix @ x + self.offset


class QuadraticPotential(eqx.Module):
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

    def __call__(self, x: Float[Array, " d"]) -> Array:
        """Evaluate at one point ``x`` (vmap for many)."""
        return 0.5 * x @ self.quad @ x + self.lin @ x + self.const
