"""Every gradxform optimizer on the same problem, with a plot of the loss against the step.

The problem is the tutorials' comparison: one model, one data set, one loss, and each
optimizer of torch.optim (here their gradxform twins) run from the same initial weights
for the same number of steps. The model is a smooth (tanh), bias-free two-layer MLP on
scikit-learn's bundled digits (its weights are matrices, so Muon, which only takes 2-D
parameters, runs on it too), trained full-batch. Each optimizer's whole run is one
compiled ``jax.lax.scan``. L-BFGS takes one iteration (with a strong-Wolfe line search)
per step; in float32 it stops once its line search finds no more decrease, exactly
where torch's LBFGS stops from the same start.

    pip install -e ".[examples]"
    python examples/compare_optimizers.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import gradxform  # noqa: E402

# One reasonable setting each (torch's defaults where they suit a full-batch problem).
OPTIMIZERS = {
    "SGD (momentum 0.9)": lambda: gradxform.sgd(0.1, momentum=0.9),
    "ASGD": lambda: gradxform.asgd(0.3),
    "Rprop": lambda: gradxform.rprop(0.01),
    "Adagrad": lambda: gradxform.adagrad(0.1),
    "Adadelta": lambda: gradxform.adadelta(1.0),
    "RMSprop": lambda: gradxform.rmsprop(0.003),
    "Adam": lambda: gradxform.adam(0.01),
    "AdamW": lambda: gradxform.adamw(0.01),
    "Adamax": lambda: gradxform.adamax(0.02),
    "SparseAdam": lambda: gradxform.sparse_adam(0.01),
    "NAdam": lambda: gradxform.nadam(0.01),
    "RAdam": lambda: gradxform.radam(0.01),
    "Adafactor": lambda: gradxform.adafactor(0.01),
    "Muon": lambda: gradxform.muon(0.05),
    "LBFGS (1 iteration/step)": lambda: gradxform.lbfgs(1.0, max_iter=1, history_size=10,
                                                        line_search_fn="strong_wolfe"),
}


def load_data():
    digits = load_digits()
    return jnp.asarray(digits.data / 16.0, jnp.float32), jnp.asarray(digits.target, jnp.int32)


def init_params(key, hidden=32):
    k1, k2 = jax.random.split(key)
    return {"w1": jax.random.normal(k1, (64, hidden)) * jnp.sqrt(2.0 / 64),
            "w2": jax.random.normal(k2, (hidden, 10)) * jnp.sqrt(1.0 / hidden)}


def loss_fn(params, x, y):
    logits = jnp.tanh(x @ params["w1"]) @ params["w2"]
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=-1))


def run(tx, params, x, y, steps):
    """The losses of ``steps`` full-batch steps, in one compiled scan."""
    objective = lambda p: loss_fn(p, x, y)  # noqa: E731

    def step(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(objective)(params)
        updates, state = tx.update(grads, state, params, value_fn=objective, value=loss)
        return (gradxform.apply_updates(params, updates), state), loss

    @jax.jit
    def scan(params):
        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
        return jnp.append(losses, objective(params))

    return np.asarray(scan(params))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="40 steps instead of 300, for CI")
    parser.add_argument("--out", default=".", help="directory for compare_optimizers.png")
    args = parser.parse_args(argv)
    steps = 40 if args.quick else 300

    x, y = load_data()
    params = init_params(jax.random.PRNGKey(0))
    curves = {}
    for name, make in OPTIMIZERS.items():
        curves[name] = run(make(), params, x, y, steps)
        print(f"{name:26s} loss {curves[name][0]:.4f} -> {curves[name][-1]:.4f}")

    fig, ax = plt.subplots(figsize=(9, 5.5))
    styles = ["-", "--", ":", "-."]
    for i, (name, losses) in enumerate(curves.items()):
        ax.plot(np.arange(steps + 1), losses, styles[i % 4], lw=1.6, label=name)
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="training loss (cross-entropy)",
           title="Every gradxform optimizer on one problem (MLP on digits, full batch)")
    ax.grid(True, alpha=0.3)
    ax.legend(ncol=3, fontsize=8)
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "compare_optimizers.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"plot: {path}")
    return {"curves": curves, "png": path}


if __name__ == "__main__":
    main()
