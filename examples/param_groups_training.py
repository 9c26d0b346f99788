"""Param groups, gradient accumulation and a parameter EMA, in one jitted training step.

An MLP with a layer norm learns scikit-learn's 8x8 digits (bundled, no download) with the
recipes of the guide "Param groups, masks and accumulation":

* ``gradxform.param_groups``: AdamW with no weight decay on biases and norms (a
  predicate on the leaves), a larger learning rate for the head (a regex on the path),
  the defaults for the rest; with ``--muon``, Muon on the hidden matrices instead;
* ``gradxform.accumulate``: each optimizer step is the mean over ``--micro-batches``
  micro-batches, inside ``gradxform.skip_non_finite``;
* ``gradxform.ema_update``: an exponential moving average of the parameters, updated
  after each optimizer step, evaluated beside the raw parameters;
* ``gradxform.set_hyperparams(state, group=1, ...)`` lowers the head's learning rate
  halfway: the step is not recompiled.

The step (forward, backward, accumulation, update, EMA) is one ``jax.jit`` function with
its buffers donated. The script prints the test accuracy of the parameters and of their
EMA, and saves the loss curve:

    pip install -e ".[examples]"
    python examples/param_groups_training.py              # 600 optimizer steps
    python examples/param_groups_training.py --quick      # 60, for CI
    python examples/param_groups_training.py --muon --out results/
"""

from __future__ import annotations

import argparse
import functools
import os

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import gradxform  # noqa: E402


def load_data(seed: int = 0):
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    split = train_test_split(x, digits.target.astype(np.int32), test_size=0.2, random_state=seed,
                             stratify=digits.target)
    return tuple(jnp.asarray(a) for a in split)  # x_train, x_test, y_train, y_test


def init_params(key):
    """``{"body": {"w", "b"}, "norm": {"scale", "bias"}, "hidden": {"w", "b"}, "head": {"w", "b"}}``."""
    k1, k2, k3 = jax.random.split(key, 3)
    dense = lambda k, n, m: {"w": jax.random.normal(k, (n, m)) * jnp.sqrt(2.0 / n), "b": jnp.zeros(m)}  # noqa: E731
    return {"body": dense(k1, 64, 128), "norm": {"scale": jnp.ones(128), "bias": jnp.zeros(128)},
            "hidden": dense(k2, 128, 64), "head": dense(k3, 64, 10)}


def logits_fn(params, x):
    h = x @ params["body"]["w"] + params["body"]["b"]
    mean, var = jnp.mean(h, -1, keepdims=True), jnp.var(h, -1, keepdims=True)
    h = jax.nn.relu((h - mean) / jnp.sqrt(var + 1e-5) * params["norm"]["scale"] + params["norm"]["bias"])
    h = jax.nn.relu(h @ params["hidden"]["w"] + params["hidden"]["b"])
    return h @ params["head"]["w"] + params["head"]["b"]


def loss_fn(params, x, y):
    log_probs = jax.nn.log_softmax(logits_fn(params, x))
    return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=-1))


def make_optimizer(muon: bool, micro_batches: int):
    """The groups: no decay on biases and norms; the head at 3e-3; the rest the defaults."""
    groups = [
        {"params": lambda path, leaf: leaf.ndim < 2, "weight_decay": 0.0},  # biases and norms
        {"params": r"head/.*", "learning_rate": 3e-3},  # head/b is already in group 0
    ]
    if muon:  # Muon on the hidden matrices (torch.optim.Muon's numbers), AdamW on the rest
        groups.append({"params": r"(body|hidden)/w", "optimizer": gradxform.muon, "learning_rate": 0.02})
    groups_tx = gradxform.param_groups(gradxform.adamw, groups, learning_rate=1e-3, weight_decay=0.05)
    return gradxform.skip_non_finite(gradxform.accumulate(groups_tx, micro_batches))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps")
    parser.add_argument("--micro-batches", type=int, default=4)
    parser.add_argument("--micro-batch-size", type=int, default=32)
    parser.add_argument("--ema-decay", type=float, default=0.98)
    parser.add_argument("--muon", action="store_true", help="Muon on the hidden matrices")
    parser.add_argument("--quick", action="store_true", help="60 optimizer steps, for CI")
    parser.add_argument("--out", default=".", help="directory for param_groups_training.png")
    args = parser.parse_args(argv)
    steps = 60 if args.quick else args.steps
    k = args.micro_batches

    x_train, x_test, y_train, y_test = load_data()
    params = init_params(jax.random.key(0))
    tx = make_optimizer(args.muon, k)
    opt_state = tx.init(params)
    ema = gradxform.average_init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def train_step(params, opt_state, ema, key):
        idx = jax.random.choice(key, x_train.shape[0], (args.micro_batch_size,), replace=False)
        loss, grads = jax.value_and_grad(loss_fn)(params, x_train[idx], y_train[idx])
        updates, opt_state = tx.update(grads, opt_state, params)
        params = gradxform.apply_updates(params, updates)
        stepped = opt_state.inner_state.micro_step == 0  # this micro-batch completed a step
        ema = jax.lax.cond(stepped, lambda e: gradxform.ema_update(e, params, args.ema_decay), lambda e: e, ema)
        return params, opt_state, ema, loss

    @jax.jit
    def accuracy(params):
        return jnp.mean(jnp.argmax(logits_fn(params, x_test), -1) == y_test)

    key = jax.random.key(1)
    losses = []
    for micro_step in range(steps * k):
        if micro_step == steps * k // 2:  # the head's learning rate / 10: new values, same compiled step
            opt_state = gradxform.set_hyperparams(opt_state, group=1, learning_rate=3e-4)
        key, sub = jax.random.split(key)
        params, opt_state, ema, loss = train_step(params, opt_state, ema, sub)
        losses.append(float(loss))

    acc, ema_acc = float(accuracy(params)), float(accuracy(ema.average))
    head_lr = float(gradxform.get_hyperparams(opt_state, group=1)["learning_rate"])
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "param_groups_training.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    per_step = np.asarray(losses).reshape(steps, k).mean(1)
    ax.plot(np.arange(1, steps + 1), per_step, label=f"training loss (mean of {k} micro-batches)")
    ax.axvline(steps // 2, ls=":", color="gray", label="head learning rate / 10")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy")
    ax.set_title(f"test accuracy {acc:.1%}, EMA {ema_acc:.1%}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"{steps} optimizer steps of {k} micro-batches ({'Muon + AdamW' if args.muon else 'AdamW'} groups): "
          f"first loss {per_step[0]:.4f}, last loss {per_step[-1]:.4f}, test accuracy {acc:.1%}, "
          f"EMA test accuracy {ema_acc:.1%}, EMA updates {int(ema.count)}, head learning rate {head_lr:g}, "
          f"compilations of train_step: {train_step._cache_size()}")
    print(f"loss curve: {path}")
    return {"accuracy": acc, "ema_accuracy": ema_acc, "png": path}


if __name__ == "__main__":
    main()
