"""Gaussian IPF written independently of gaussot_jax, with numpy only.

Each half-step conditions the current joint covariance on one block (Schur complement)
and replaces that block's marginal: P_{2n+1} = mu(dy) P_{2n}(dx | y) and
P_{2n+2} = eta(dx) P_{2n+1}(dy | x). No Bayes-map formula of the library is used.
"""

import numpy as np


def random_problem(rng, d1, d2, *, tau_scale=1.0, cond=10.0):
    """Random eta, mu, kernel with non-trivial alpha, non-symmetric invertible beta, tau."""

    def spd(d, c):
        Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        w = np.geomspace(1.0, 1.0 / c, d) if d > 1 else np.ones(1)
        S = (Q * w) @ Q.T
        return 0.5 * (S + S.T)

    Q1, _ = np.linalg.qr(rng.normal(size=(d2, d2)))
    Q2, _ = np.linalg.qr(rng.normal(size=(d1, d1)))
    s = np.linspace(1.5, 0.6, min(d1, d2))
    beta = Q1[:, : len(s)] @ np.diag(s) @ Q2[:, : len(s)].T
    if d1 == d2 and d1 > 1:
        assert np.abs(beta - beta.T).max() > 1e-2  # not symmetric
    return dict(
        m1=rng.normal(size=d1),
        S1=2.0 * spd(d1, cond),
        m2=rng.normal(size=d2) + 1.0,
        S2=spd(d2, cond),
        alpha=rng.normal(size=d2),
        beta=beta,
        tau=tau_scale * spd(d2, 4.0),
    )


def _cond(mean, cov, first, n1):
    """Kernel of the second block given the first (first=True) or vice versa."""
    i = slice(0, n1) if first else slice(n1, None)
    o = slice(n1, None) if first else slice(0, n1)
    G = np.linalg.solve(cov[i, i], cov[i, o]).T
    return mean[o] - G @ mean[i], G, cov[o, o] - G @ cov[i, o]


def _joint(m_in, S_in, a, b, t, in_first):
    m_out = a + b @ m_in
    C = S_in @ b.T
    S_out = b @ S_in @ b.T + t
    if in_first:
        return np.concatenate([m_in, m_out]), np.block([[S_in, C], [C.T, S_out]])
    return np.concatenate([m_out, m_in]), np.block([[S_out, C.T], [C, S_in]])


def ipf(p, num_iters):
    """Forward kernels theta_1..theta_N (y|x) and backward kernels back_0..back_{N-1}."""
    d1 = len(p["m1"])
    mean, cov = _joint(p["m1"], p["S1"], p["alpha"], p["beta"], p["tau"], True)
    fwd, bwd = [], []
    for _ in range(num_iters):
        back = _cond(mean, cov, False, d1)  # x | y of P_{2n}
        bwd.append(back)
        mean, cov = _joint(p["m2"], p["S2"], *back, False)
        f = _cond(mean, cov, True, d1)  # y | x of P_{2n+1}
        fwd.append(f)
        mean, cov = _joint(p["m1"], p["S1"], *f, True)
    return fwd, bwd


def ipf_converged(p, max_iters=20000, tol=1e-14):
    """The bridge as the IPF limit: (forward kernel, backward kernel, joint mean, cov)."""
    d1 = len(p["m1"])
    mean, cov = _joint(p["m1"], p["S1"], p["alpha"], p["beta"], p["tau"], True)
    for _ in range(max_iters):
        back = _cond(mean, cov, False, d1)
        mean, cov = _joint(p["m2"], p["S2"], *back, False)
        f = _cond(mean, cov, True, d1)
        new_mean, new_cov = _joint(p["m1"], p["S1"], *f, True)
        change = max(np.abs(new_cov - cov).max(), np.abs(new_mean - mean).max())
        mean, cov = new_mean, new_cov
        if change < tol * max(1.0, np.abs(cov).max()):
            break
    else:
        raise RuntimeError("IPF did not converge")
    return _cond(mean, cov, True, d1), _cond(mean, cov, False, d1), mean, cov


def kl_joint(m_p, S_p, m_q, S_q):
    """KL(N(m_p, S_p) || N(m_q, S_q)) with numpy."""
    d = len(m_p)
    Sq_inv = np.linalg.inv(S_q)
    dm = m_q - m_p
    return 0.5 * (
        np.trace(Sq_inv @ S_p)
        + dm @ Sq_inv @ dm
        - d
        + np.linalg.slogdet(S_q)[1]
        - np.linalg.slogdet(S_p)[1]
    )
