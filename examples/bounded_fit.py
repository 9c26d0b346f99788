"""Bounds with ``gradxform.minimize``: a multi-exponential decay with non-negative amplitudes.

A signal that is a sum of a few exponential decays is fitted on a grid of candidate
rates: ``y(t) = sum_k x_k exp(-r_k t)``. Without constraints the least-squares amplitudes
swing positive and negative (the exponentials are nearly collinear); with
``bounds=(0, inf)`` (L-BFGS-B, one jitted call) they are non-negative and concentrate near
the true rates. When scipy is installed the script also runs
``scipy.optimize.minimize(method="L-BFGS-B")`` with the same options and prints the
distance between the two solutions and both evaluation counts.

    pip install -e ".[examples]"
    python examples/bounded_fit.py [--quick] [--out DIR]

It saves ``bounded_fit.png``: the data with both fits, and the amplitudes per rate.
"""

from __future__ import annotations

import argparse
import os

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import gradxform  # noqa: E402

OPTIONS = dict(history_size=10, tolerance_grad=1e-6, tolerance_change=1e-12)


def problem(n_rates, seed=0):
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 5.0, 200)
    y = 1.0 * np.exp(-0.5 * t) + 0.6 * np.exp(-3.0 * t) + rng.normal(0.0, NOISE, t.shape)
    rates = np.logspace(-1, 1.3, n_rates)
    design = np.exp(-np.outer(t, rates))
    return t, y, rates, design


NOISE = 0.005


def loss(x, design, y):
    """Half the chi-square of the fit (the noise's standard deviation is known)."""
    return 0.5 * jnp.sum(((design @ x - y) / NOISE) ** 2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 rates instead of 12, for CI")
    parser.add_argument("--out", default=".", help="directory for bounded_fit.png")
    args = parser.parse_args(argv)
    n_rates, max_iter = (8, 300) if args.quick else (12, 3000)
    t, y, rates, design = problem(n_rates)
    data = (jnp.asarray(design), jnp.asarray(y))
    x0 = jnp.zeros(n_rates)

    bounded = jax.jit(lambda x0, *data: gradxform.minimize(
        loss, x0, *data, bounds=(0.0, jnp.inf), max_iter=max_iter, max_eval=2 * max_iter, **OPTIONS))(x0, *data)
    free = jax.jit(lambda x0, *data: gradxform.minimize(
        loss, x0, *data, max_iter=max_iter, max_eval=2 * max_iter, line_search_fn="strong_wolfe",
        history_size=10))(x0, *data)
    x_bounded, x_free = np.asarray(bounded.params), np.asarray(free.params)
    print(f"bounded: chi-square/2 {float(bounded.value):.1f}, {int(bounded.n_iter)} iterations, "
          f"{int(bounded.n_evals)} evaluations, status {int(bounded.status)} ({bounded.message}), "
          f"smallest amplitude {x_bounded.min():.3g}, nonzero amplitudes {int(np.sum(x_bounded > 1e-6))} of {n_rates}")
    print(f"unbounded: chi-square/2 {float(free.value):.1f}, negative amplitudes {int(np.sum(x_free < -1e-6))}, "
          f"smallest amplitude {x_free.min():.3g}")
    try:
        from scipy.optimize import Bounds, minimize
    except ImportError:
        print("scipy not installed: no comparison")
    else:
        value_and_grad = jax.jit(jax.value_and_grad(loss))
        reference = minimize(
            lambda x: [np.asarray(v) for v in value_and_grad(jnp.asarray(x), *data)], np.zeros(n_rates), jac=True,
            method="L-BFGS-B", bounds=Bounds(0.0, np.inf),
            options=dict(maxcor=10, gtol=1e-6, ftol=1e-12, maxiter=max_iter, maxfun=2 * max_iter - 1),
        )
        print(f"scipy L-BFGS-B: max distance to gradxform's solution {np.max(np.abs(reference.x - x_bounded)):.1e}, "
              f"evaluations {reference.nfev} (gradxform {int(bounded.n_evals)})")

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(t, y, ".", ms=3, color="0.6", label="data")
    left.plot(t, design @ x_free, label="unbounded fit")
    left.plot(t, design @ x_bounded, "--", label="bounds=(0, inf)")
    left.set(xlabel="t", ylabel="y", title="fits")
    left.legend()
    right.semilogx(rates, x_free, "o-", label="unbounded amplitudes")
    right.semilogx(rates, x_bounded, "s-", label="bounds=(0, inf)")
    right.vlines([0.5, 3.0], 0, [1.0, 0.6], colors="k", lw=3, alpha=0.4, label="true rates")
    right.axhline(0.0, color="0.3", lw=0.8)
    right.set(xlabel="rate", ylabel="amplitude", title="amplitudes per candidate rate")
    right.legend()
    fig.tight_layout()
    path = os.path.join(args.out, "bounded_fit.png")
    fig.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
