"""Derivatives through ``gradxform.minimize``: a regularisation strength chosen by gradient.

Ridge regression with few, noisy training rows: the weights ``w*(λ)`` minimise the
training loss plus ``λ |w|²``, and the validation loss of ``w*(λ)`` depends on ``λ``.
``jax.grad`` through ``minimize`` gives ``d validation / d log λ`` by the implicit
function theorem (one extra linear solve at the solution, no unrolled iterations).
The script

* evaluates the validation loss and its gradient on a grid of ``λ`` in one
  ``jax.vmap`` call, and checks the gradients against ridge regression's closed form;
* follows the gradient from ``λ = 1e-3`` to a better ``λ``;
* solves a two-well problem from a grid of starts with
  ``gradxform.minimize_multistart`` and marks the best solution;

and plots the three in ``implicit_hyperparameter.png``.

    pip install -e ".[examples]"
    python examples/implicit_hyperparameter.py [--quick] [--out DIR]
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

N_TRAIN, N_VAL, D = 30, 300, 20


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    w_true = rng.normal(size=D)
    x_train, x_val = rng.normal(size=(N_TRAIN, D)), rng.normal(size=(N_VAL, D))
    y_train = x_train @ w_true + 2.0 * rng.normal(size=N_TRAIN)
    y_val = x_val @ w_true + 2.0 * rng.normal(size=N_VAL)
    return tuple(jnp.asarray(a) for a in (x_train, y_train, x_val, y_val))


X_TRAIN, Y_TRAIN, X_VAL, Y_VAL = make_data()


def train_loss(w, log_lam):
    return jnp.mean((X_TRAIN @ w - Y_TRAIN) ** 2) + jnp.exp(log_lam) * jnp.sum(w**2)


def validation(w):
    return jnp.mean((X_VAL @ w - Y_VAL) ** 2)


def validation_at(log_lam):
    """The validation loss of the solved weights: differentiable through the solve."""
    result = gradxform.minimize(train_loss, jnp.zeros(D), log_lam, max_iter=200,
                                tolerance_grad=1e-12, tolerance_change=0.0, line_search_fn="strong_wolfe")
    return validation(result.params)


def validation_closed_form(log_lam):
    """The same through ridge regression's closed form (the reference)."""
    lam = jnp.exp(log_lam)
    w = jnp.linalg.solve(X_TRAIN.T @ X_TRAIN / N_TRAIN + lam * jnp.eye(D), X_TRAIN.T @ Y_TRAIN / N_TRAIN)
    return validation(w)


def two_wells(x, tilt):
    return (x[0] ** 2 - 1) ** 2 + (x[1] ** 2 - 1) ** 2 + tilt[0] * x[0] + tilt[1] * x[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a coarser grid and fewer steps, for CI")
    parser.add_argument("--out", default=".", help="directory for implicit_hyperparameter.png")
    args = parser.parse_args(argv)
    grid_size, steps, starts_per_axis = (9, 15, 4) if args.quick else (41, 40, 9)

    # 1. The validation loss and its gradient on a grid of λ, in one vmapped call.
    value_and_grad = jax.jit(jax.vmap(jax.value_and_grad(validation_at)))
    grid = jnp.linspace(np.log(1e-4), np.log(10.0), grid_size)
    losses, slopes = value_and_grad(grid)
    _, reference = jax.vmap(jax.value_and_grad(validation_closed_form))(grid)
    difference = float(jnp.max(jnp.abs(slopes - reference) / (jnp.abs(reference) + 1e-12)))
    print(f"hypergradient against the closed form: largest relative difference {difference:.1e}")

    # 2. Gradient descent on log λ, with bounded steps.
    step = jax.jit(jax.value_and_grad(validation_at))
    log_lam = jnp.asarray(np.log(1e-3))
    path = []
    for _ in range(steps):
        loss, grad = step(log_lam)
        path.append((float(log_lam), float(loss)))
        log_lam = log_lam - 3.0 * grad / jnp.maximum(jnp.abs(grad), 1.0)
    print(f"log10 lambda {path[0][0] / np.log(10):.2f} -> {path[-1][0] / np.log(10):.2f}, "
          f"validation loss {path[0][1]:.4f} -> {path[-1][1]:.4f}")

    # 3. Many starts of a two-well problem; the tilt makes the (-1, -1) well the lowest.
    axis = jnp.linspace(-2.0, 2.0, starts_per_axis)
    starts = jnp.stack(jnp.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    tilt = jnp.array([0.3, 0.2])
    out = jax.jit(lambda s, t: gradxform.minimize_multistart(
        two_wells, s, t, max_iter=100, line_search_fn="strong_wolfe"))(starts, tilt)
    minima = np.unique(np.round(np.asarray(out.all.params), 3), axis=0)
    best = np.asarray(out.best.params)
    print(f"multistart: {len(starts)} starts, {len(minima)} distinct minima, best value "
          f"{float(out.best.value):.4f} at ({best[0]:.3f}, {best[1]:.3f})")

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.5))
    log10 = np.asarray(grid) / np.log(10)
    ax1.plot(log10, losses, "k-", label="validation loss of w*(λ)")
    for x, y, g in zip(np.asarray(grid)[::2], np.asarray(losses)[::2], np.asarray(slopes)[::2]):
        dx = 0.3 * np.log(10)  # tangent segments from the implicit gradient
        ax1.plot([(x - dx) / np.log(10), (x + dx) / np.log(10)], [y - g * dx, y + g * dx], "r-", lw=1)
    ax1.set(xlabel="log10 λ", ylabel="validation loss", title="implicit gradients (red tangents)")
    ax2.plot([p[1] for p in path], "o-")
    ax2.set(xlabel="gradient step on log λ", ylabel="validation loss", title="λ chosen by gradient")
    ends = np.asarray(out.all.params)
    ax3.scatter(starts[:, 0], starts[:, 1], c=np.asarray(out.all.value), cmap="viridis", s=25, label="starts")
    ax3.scatter(ends[:, 0], ends[:, 1], marker="x", c="k", label="solutions")
    ax3.scatter([best[0]], [best[1]], marker="*", s=300, c="r", label="best")
    ax3.set(xlabel="x0", ylabel="x1", title="minimize_multistart (colour: value reached)")
    ax3.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path_png = os.path.join(args.out, "implicit_hyperparameter.png")
    fig.savefig(path_png, dpi=80)
    print(f"wrote {path_png}")


if __name__ == "__main__":
    main()
