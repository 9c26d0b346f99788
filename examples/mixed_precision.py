"""Float16 training with loss scaling, both ways: torch_compat's GradScaler and gradxform.loss_scaled.

An MLP on scikit-learn's 8x8 digits, with float32 master weights held by the
optimizer and a float16 forward and backward pass (the parameters and inputs are cast
inside the loss function; the loss is computed in float32). The loss is multiplied by
a dynamic scale: the first steps overflow float16 and are skipped while the scale backs
off, then it grows every ``growth_interval`` good steps, as torch's ``GradScaler`` does.

The same training runs twice from the same weights and batches:

* torch's loop: ``optim.AdamW`` with ``torch_compat.amp.GradScaler`` (``scale``,
  ``backward``, ``unscale_`` and gradient clipping, ``step``, ``update``);
* the functional core: ``gradxform.loss_scaled(chain(clip_by_global_norm, adamw))``
  in one jitted, donating step.

It prints each run's skipped steps, final scale, loss and held-out accuracy, whether the
two runs had the same scales at every step, and how far their weights are apart, and
saves ``mixed_precision.png`` (loss and scale per step).

    pip install -e ".[examples]"
    python examples/mixed_precision.py [--quick] [--out DIR]
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
import torch_compat  # noqa: E402
from torch_compat import optim  # noqa: E402
from torch_compat.amp import GradScaler  # noqa: E402
from torch_compat.nn.utils import clip_grad_norm_  # noqa: E402

BATCH_SIZE = 32
LR = 3e-3
MAX_NORM = 1.0
SCALER = {"init_scale": 2.0**16, "growth_interval": 20}


def make_data(seed=0):
    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    x = (digits.data / 16.0).astype(np.float32)[order]
    y = digits.target.astype(np.int32)[order]
    n_test = len(y) // 5
    return (x[n_test:], y[n_test:]), (x[:n_test], y[:n_test])


def init_params(seed=1, hidden=128):
    rng = np.random.default_rng(seed)
    return {
        "w1": jnp.asarray(rng.standard_normal((64, hidden)) * np.sqrt(2.0 / 64), jnp.float32),
        "b1": jnp.zeros(hidden, jnp.float32),
        "w2": jnp.asarray(rng.standard_normal((hidden, 10)) * np.sqrt(2.0 / hidden), jnp.float32),
        "b2": jnp.zeros(10, jnp.float32),
    }


def logits_fn(params, x):
    """The forward pass in float16 (the compute copy of the float32 master weights)."""
    p = jax.tree.map(lambda a: a.astype(jnp.float16), params)
    hidden = jax.nn.relu(x.astype(jnp.float16) @ p["w1"] + p["b1"])
    return (hidden @ p["w2"] + p["b2"]).astype(jnp.float32)


def loss_fn(params, x, y):
    logits = logits_fn(params, x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def scaled_loss_fn(params, x, y, scale):
    return loss_fn(params, x, y) * scale


def batches(train, epochs):
    x, y = train
    rng = np.random.default_rng(2)
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y) - BATCH_SIZE + 1, BATCH_SIZE):
            idx = order[start:start + BATCH_SIZE]
            yield jnp.asarray(x[idx]), jnp.asarray(y[idx])


def run_torch_compat(train, epochs):
    model = torch_compat.as_parameters(init_params())
    optimizer = optim.AdamW(torch_compat.parameters(model), lr=LR)
    scaler = GradScaler("cpu", **SCALER)
    losses, scales = [], []
    for x, y in batches(train, epochs):
        optimizer.zero_grad()
        scale = scaler.scale(jnp.ones((), jnp.float32))
        scaled = torch_compat.backward(scaled_loss_fn, model, x, y, scale)
        scaler.unscale_(optimizer)
        clip_grad_norm_(torch_compat.parameters(model), MAX_NORM)
        scaler.step(optimizer)
        scaler.update()
        losses.append(scaled / scale)  # device arrays: read once at the end
        scales.append(scaler.scale(jnp.ones((), jnp.float32)))
    return torch_compat.values(model), np.asarray(losses), np.asarray(scales)


def run_gradxform(train, epochs):
    tx = gradxform.loss_scaled(
        gradxform.chain(gradxform.clip_by_global_norm(MAX_NORM), gradxform.adamw(LR)), **SCALER
    )
    params = init_params()
    state = tx.init(params)

    def train_step(params, state, x, y):
        scale = gradxform.get_loss_scale(state)
        scaled, grads = jax.value_and_grad(scaled_loss_fn)(params, x, y, scale)
        updates, state = tx.update(grads, state, params)
        # The new scale is returned as its own array: the state's is donated next step.
        return gradxform.apply_updates(params, updates), state, scaled / scale, gradxform.get_loss_scale(state) * 1

    train_step = jax.jit(train_step, donate_argnums=(0, 1))
    losses, scales = [], []
    for x, y in batches(train, epochs):
        params, state, loss, scale = train_step(params, state, x, y)
        losses.append(loss)
        scales.append(scale)
    return params, np.asarray(losses), np.asarray(scales)


def accuracy(params, data):
    x, y = data
    return float(jnp.mean(jnp.argmax(logits_fn(params, jnp.asarray(x)), axis=1) == jnp.asarray(y))) * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (3 epochs)")
    parser.add_argument("--out", default=".", help="where to write mixed_precision.png")
    args = parser.parse_args()
    epochs = 3 if args.quick else 15
    train, test = make_data()

    results = {"torch_compat": run_torch_compat(train, epochs), "gradxform": run_gradxform(train, epochs)}
    for name, (params, losses, scales) in results.items():
        skipped = int(np.sum(np.diff(np.concatenate([[SCALER["init_scale"]], scales])) < 0))
        print(f"{name}: {len(losses)} steps, {skipped} skipped, final scale {scales[-1]:g}, "
              f"loss {np.nanmean(losses[:20]):.3f} -> {np.nanmean(losses[-20:]):.3f}, "
              f"test accuracy {accuracy(params, test):.1f}%")
    (p1, _, s1), (p2, _, s2) = results.values()
    drift = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)))
    print(f"same scales at every step: {bool(np.array_equal(s1, s2))}, max |weights difference| {drift:.2e}")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, (_, losses, scales) in results.items():
        ax1.plot(losses, label=name, alpha=0.7)
        ax2.plot(scales, label=name, alpha=0.7)
    ax1.set(xlabel="step", ylabel="training loss", title="float16 compute, float32 master weights")
    ax2.set(xlabel="step", ylabel="loss scale", yscale="log", title="dynamic loss scale")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    path = os.path.join(args.out, "mixed_precision.png")
    fig.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
