"""Extended-precision reference for Tr g(AB): cyclic Jacobi in numpy ``longdouble``.

Independent of the library (no JAX, no LAPACK): numpy's 80-bit ``longdouble`` on x86
carries a 64-bit mantissa (unit round-off ~5e-20), so a float64 result can be judged
to ~1e-17 relative. Used by the benchmarks and by tests/test_fast_paths.py.
"""

import numpy as np

LD = np.longdouble


def jacobi_eigh_ld(S, sweeps: int = 30):
    """Eigen-decomposition of a symmetric matrix in longdouble (cyclic Jacobi)."""
    a = np.array(S, dtype=LD)
    a = (a + a.T) / 2
    d = a.shape[0]
    V = np.eye(d, dtype=LD)
    for _ in range(sweeps):
        off = np.sqrt(np.sum(np.triu(a, 1) ** 2))
        if off <= LD(1e-30) * np.sqrt(np.sum(a**2)):
            break
        for p in range(d - 1):
            for q in range(p + 1, d):
                if a[p, q] == 0:
                    continue
                tau = (a[q, q] - a[p, p]) / (2 * a[p, q])
                t = (1 if tau >= 0 else -1) / (abs(tau) + np.sqrt(1 + tau * tau))
                c = 1 / np.sqrt(1 + t * t)
                s = t * c
                J = np.eye(d, dtype=LD)
                J[p, p] = J[q, q] = c
                J[p, q], J[q, p] = s, -s
                a = J.T @ a @ J
                V = V @ J
    return np.diag(a).copy(), V


def sqrtm_ld(S):
    w, V = jacobi_eigh_ld(S)
    return (V * np.sqrt(np.maximum(w, 0))) @ V.T


def trace_fn_ld(g, A, B):
    """sum_i g(lambda_i(A^{1/2} B A^{1/2})) in longdouble; g acts on a longdouble array."""
    X = sqrtm_ld(A)
    w, _ = jacobi_eigh_ld(X @ np.array(B, dtype=LD) @ X)
    return g(np.maximum(w, 0)).sum()


def bures_wasserstein2_ld(a, A, b, B):
    """W2^2 between N(a, A) and N(b, B) in longdouble."""
    a, b = np.array(a, dtype=LD), np.array(b, dtype=LD)
    A, B = np.array(A, dtype=LD), np.array(B, dtype=LD)
    cross = trace_fn_ld(np.sqrt, A, B)
    return np.sum((a - b) ** 2) + np.trace(A) + np.trace(B) - 2 * cross
