"""Bound-constrained problems shared by tests/test_lbfgsb.py and benchmarks/lbfgsb_bench.py.

Each problem is ``(name, fun, x0, lower, upper)`` with numpy float64 arrays (``-inf`` /
``inf`` for a missing bound) and ``fun`` a JAX function of a flat vector. They are
scipy's own bounded test problems (``TestLBFGSBBounds``, ``test_minimize_with_scalar``
in scipy's test_optimize.py) and a few standard ones: box-constrained Rosenbrock in
n = 2, 10, 100, a non-negative least-squares fit, a bounded convex quadratic, a problem
with one-sided and infinite bounds and a fixed variable (``lower == upper``), and a
Rosenbrock whose bounds are all infinite (L-BFGS-B's unconstrained path).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

INF = np.inf


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def _rosenbrock_box(n):
    x0 = np.tile([-1.2, 1.0], n // 2)
    return (f"rosenbrock-box-{n}", rosenbrock, x0, np.full(n, -1.5), np.full(n, 0.8))


def _scipy_bounds():
    # scipy's TestLBFGSBBounds: f = (x0² + x1²)/2 with x0 >= 1, x1 free; solution (1, 0).
    return ("scipy-bounds", lambda x: 0.5 * jnp.sum(x**2), np.array([0.0, -1.0]), np.array([1.0, -INF]), np.array([INF, INF]))


def _scipy_scalar():
    # scipy's test_minimize_with_scalar: f = x² from 17 in [-100, 100].
    return ("scipy-scalar", lambda x: jnp.sum(x**2), np.array([17.0]), np.array([-100.0]), np.array([100.0]))


def _nnls(seed=0, m=60, n=30):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, n))
    b = a @ rng.standard_normal(n) + 0.1 * rng.standard_normal(m)
    a_j, b_j = jnp.asarray(a), jnp.asarray(b)
    return ("nnls-60x30", lambda x: 0.5 * jnp.sum((a_j @ x - b_j) ** 2), np.zeros(n), np.zeros(n), np.full(n, INF))


def _quadratic(seed=1, n=50):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n, n))
    h = q @ q.T / n + 0.1 * np.eye(n)
    c = 2.0 * rng.standard_normal(n)
    h_j, c_j = jnp.asarray(h), jnp.asarray(c)
    return ("quadratic-box-50", lambda x: 0.5 * x @ h_j @ x - c_j @ x, np.full(n, 0.5), np.zeros(n), np.ones(n))


def _mixed():
    # One-sided, two-sided, infinite and fixed bounds on a shifted separable quartic.
    target = jnp.array([3.0, -2.0, 0.5, 4.0, -1.0, 2.0])

    def f(x):
        return jnp.sum((x - target) ** 2 + 0.1 * (x - target) ** 4) + 0.5 * x[0] * x[1]

    lower = np.array([-INF, 0.0, -INF, 1.0, 0.25, -INF])
    upper = np.array([2.0, INF, INF, 1.0, 3.0, INF])
    return ("mixed-bounds-6", f, np.array([0.0, 1.0, 0.0, 1.0, 5.0, 0.0]), lower, upper)


def _unbounded():
    x0 = np.tile([-1.2, 1.0], 5)
    return ("rosenbrock-inf-bounds-10", rosenbrock, x0, np.full(10, -INF), np.full(10, INF))


def problems():
    return [
        _scipy_bounds(),
        _scipy_scalar(),
        _rosenbrock_box(2),
        _rosenbrock_box(10),
        _rosenbrock_box(100),
        _nnls(),
        _quadratic(),
        _mixed(),
        _unbounded(),
    ]


# scipy.optimize.minimize(method="L-BFGS-B")'s defaults, in minimize's option names.
SCIPY_DEFAULTS = dict(
    max_iter=15000, max_eval=15001, tolerance_grad=1e-5, tolerance_change=1e7 * np.finfo(float).eps, history_size=10
)
