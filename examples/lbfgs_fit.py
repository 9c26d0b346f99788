"""L-BFGS two ways: ``gradxform.minimize`` (compiled whole) beside torch-style ``LBFGS.step(closure)``.

Two problems, each solved both ways with the same options:

* logistic regression with an L2 penalty on scikit-learn's bundled breast-cancer data;
* a nonlinear least-squares curve fit, ``y = a * exp(-b t) * cos(w t) + c``, on data the
  script makes.

Each problem is solved by one ``torch_compat.optim.LBFGS.step(closure)`` and by one
jitted ``gradxform.minimize`` call with the same options (a strong-Wolfe line search).
In float64 the two evaluate the objective at the same points, as torch would: the
script prints the iteration and evaluation counts, and plots the objective at every
evaluation (recorded by the closure on one side, by ``jax.debug.callback`` inside the
compiled loop on the other) and the fitted curve.

    pip install -e ".[examples]"
    python examples/lbfgs_fit.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import os

import jax

jax.config.update("jax_enable_x64", True)  # float64: both sides agree to the last digits

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402

import gradxform  # noqa: E402
import torch_compat  # noqa: E402
from torch_compat import optim  # noqa: E402

OPTIONS = dict(lr=1.0, history_size=10, line_search_fn="strong_wolfe")


# -- the two problems, as pure functions of (params, data) --------------------------------
def logistic_problem():
    data = load_breast_cancer()
    x = (data.data - data.data.mean(0)) / data.data.std(0)
    y = data.target.astype(np.float64)

    def loss(params, x, y):
        logits = x @ params["w"] + params["b"]
        return jnp.mean(jnp.logaddexp(0.0, logits) - y * logits) + 1e-3 * jnp.sum(params["w"] ** 2)

    x0 = {"w": jnp.zeros(x.shape[1]), "b": jnp.zeros(())}
    return loss, x0, (jnp.asarray(x), jnp.asarray(y))


def curve(params, t):
    return params["a"] * jnp.exp(-params["b"] * t) * jnp.cos(params["w"] * t) + params["c"]


def curve_problem(seed=0):
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 4.0, 80)
    truth = {"a": 2.0, "b": 0.7, "w": 3.0, "c": 0.5}
    y = np.asarray(curve(truth, t)) + rng.normal(0, 0.05, t.shape)

    def loss(params, t, y):
        return 0.5 * jnp.mean((curve(params, t) - y) ** 2)

    x0 = {"a": jnp.asarray(1.0), "b": jnp.asarray(0.3), "w": jnp.asarray(2.6), "c": jnp.asarray(0.0)}
    return loss, x0, (jnp.asarray(t), jnp.asarray(y))


# -- solver 1: gradxform.minimize, compiled whole --------------------------------------------
def solve_functional(loss, x0, data, max_iter):
    """One jitted ``minimize``; ``jax.debug.callback`` records each evaluation's value."""
    trace = []

    def traced_loss(params, *data):
        value = loss(params, *data)
        jax.debug.callback(lambda v: trace.append(float(v)), value, ordered=True)
        return value

    solve = jax.jit(lambda x0, *data: gradxform.minimize(traced_loss, x0, *data, max_iter=max_iter, **OPTIONS))
    result = solve(x0, *data)
    jax.effects_barrier()
    return result.params, trace, int(result.n_iter), int(result.n_evals)


# -- solver 2: the torch.optim way, step(closure) --------------------------------------------
def solve_torch_style(loss, x0, data, max_iter):
    model = torch_compat.as_parameters(x0)
    optimizer = optim.LBFGS(torch_compat.parameters(model), max_iter=max_iter, **OPTIONS)
    trace = []

    def closure():
        optimizer.zero_grad()
        value = torch_compat.backward(loss, model, *data)
        trace.append(float(value))
        return value

    optimizer.step(closure)
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    return torch_compat.values(model), trace, state["n_iter"], state["func_evals"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="15 iterations instead of 60, for CI")
    parser.add_argument("--out", default=".", help="directory for lbfgs_fit.png")
    args = parser.parse_args(argv)
    max_iter = 15 if args.quick else 60

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    report = {}
    for name, (loss, x0, data), ax in (("logistic regression", logistic_problem(), axes[0]),
                                       ("curve fit", curve_problem(), axes[1])):
        initial = float(loss(x0, *data))
        params_f, values_f, iters_f, evals_f = solve_functional(loss, x0, data, max_iter)
        params_t, values_t, iters_t, evals_t = solve_torch_style(loss, x0, data, max_iter)
        gap = max(abs(a - b) / max(abs(b), 1e-300) for a, b in zip(values_f, values_t))
        print(f"{name:20s} initial {initial:.6g} -> minimize {values_f[-1]:.10g} "
              f"({iters_f} iterations, {evals_f} evaluations) | LBFGS.step {values_t[-1]:.10g} "
              f"({iters_t} iterations, {evals_t} evaluations) | largest relative gap {gap:.1e}")
        report[name] = {"initial": initial, "functional": values_f, "torch_style": values_t,
                        "evals": (evals_f, evals_t), "iters": (iters_f, iters_t)}
        ax.semilogy(values_f, "-", lw=3, alpha=0.5, label="gradxform.minimize")
        ax.semilogy(values_t, "o", ms=4, label="torch_compat LBFGS.step(closure)")
        ax.set(title=name, xlabel="evaluation of the objective", ylabel="objective")
        ax.legend()
        if name == "curve fit":
            t, y = (np.asarray(a) for a in data)
            axes[2].plot(t, y, ".", color="gray", label="data")
            axes[2].plot(t, np.asarray(curve(x0, t)), ":", label="start")
            axes[2].plot(t, np.asarray(curve(params_f, t)), "-", label="fit (minimize)")
            axes[2].plot(t, np.asarray(curve(params_t, t)), "--", label="fit (LBFGS.step)")
            axes[2].set(title="y = a exp(-b t) cos(w t) + c", xlabel="t")
            axes[2].legend()
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "lbfgs_fit.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"plot: {path}")
    report["png"] = path
    return report


if __name__ == "__main__":
    main()
