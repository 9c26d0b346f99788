"""The tutorials' training loop (``create_optimizer.py``), ported to torch_compat.

The loop is torch's, line for line: ``optim.SGD(..., momentum=0.9)`` with per-layer
learning rates (param groups), ``lr_scheduler.StepLR``, ``zero_grad()`` / ``step()``
every batch, a validation pass every epoch, and train/valid loss curves. The one line
that changes is the gradient line::

    loss = criterion(outputs, labels); loss.backward()      # torch
    loss = torch_compat.backward(loss_fn, model, x, y)      # here

Halfway through, the model, the optimizer's ``state_dict()`` and the scheduler's
``state_dict()`` are saved with ``gradxform.checkpoint.save`` (where torch has
``torch.save``: a file of data, written atomically, that loads without running code),
and training resumes from that file into a fresh model, optimizer and scheduler, as
after a restart. The
data are scikit-learn's bundled 8x8 digits (the tutorial used banknote photos).

    pip install -e ".[examples]"
    python examples/torch_style_loop.py [--quick] [--out DIR]
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

import torch_compat  # noqa: E402
from gradxform import checkpoint  # noqa: E402
from torch_compat import optim  # noqa: E402

BATCH_SIZE = 16
LR = 0.01
log_interval = 20
N_HIDDEN = 64


# ============================ step 1/5 data ============================
def make_data(seed=1):
    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.target))
    x, y = (digits.data / 16.0).astype(np.float32)[order], digits.target.astype(np.int32)[order]
    n_valid = len(y) // 5
    return (x[n_valid:], y[n_valid:]), (x[:n_valid], y[:n_valid])


def loader(data, shuffle_rng=None):
    """DataLoader(batch_size=BATCH_SIZE, shuffle=...)."""
    x, y = data
    order = shuffle_rng.permutation(len(y)) if shuffle_rng is not None else np.arange(len(y))
    for start in range(0, len(y), BATCH_SIZE):
        idx = order[start:start + BATCH_SIZE]
        yield jnp.asarray(x[idx]), jnp.asarray(y[idx])


# ============================ step 2/5 model ============================
def init_weights(seed=2):
    """Two nn.Linear layers, stored as torch stores them: weight (out, in), bias (out,)."""
    rng = np.random.default_rng(seed)
    layer = lambda n_in, n_out: {  # noqa: E731
        "weight": (rng.standard_normal((n_out, n_in)) * np.sqrt(2.0 / n_in)).astype(np.float32),
        "bias": np.zeros(n_out, np.float32)}
    return {"features": layer(64, N_HIDDEN), "classifier": layer(N_HIDDEN, 10)}


def net(params, x):
    h = jax.nn.relu(x @ params["features"]["weight"].T + params["features"]["bias"])
    return h @ params["classifier"]["weight"].T + params["classifier"]["bias"]


# ============================ step 3/5 loss ============================
def criterion(outputs, labels):
    """nn.CrossEntropyLoss()."""
    log_probs = jax.nn.log_softmax(outputs, axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))


def loss_fn(params, x, y):
    return criterion(net(params, x), y)


# ============================ step 4/5 optimizer ============================
def build(weights, step_size):
    model = torch_compat.as_parameters(jax.tree.map(jnp.asarray, weights))
    optimizer = optim.SGD([                                   # per-layer learning rates
        {"params": torch_compat.parameters(model["features"])},
        {"params": torch_compat.parameters(model["classifier"]), "lr": LR * 0.5},
    ], lr=LR, momentum=0.9)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=0.1)
    return model, optimizer, scheduler


# ============================ step 5/5 training ============================
def train(model, optimizer, scheduler, train_data, valid_data, epochs, max_epoch, rng, curves):
    predict = jax.jit(net)
    n_batches = -(-len(train_data[1]) // BATCH_SIZE)
    for epoch in epochs:
        loss_mean, correct, total = 0.0, 0, 0
        for i, (inputs, labels) in enumerate(loader(train_data, rng)):
            outputs = predict(torch_compat.values(model), inputs)           # forward
            optimizer.zero_grad()                                           # backward
            loss = torch_compat.backward(loss_fn, model, inputs, labels)    # was: loss.backward()
            optimizer.step()                                                # update weights

            total += labels.shape[0]
            correct += int(jnp.sum(jnp.argmax(outputs, axis=1) == labels))
            loss_mean += float(loss)
            curves["train"].append(float(loss))
            if (i + 1) % log_interval == 0:
                print(f"Training:Epoch[{epoch:0>3}/{max_epoch:0>3}] Iteration[{i + 1:0>3}/{n_batches:0>3}] "
                      f"Loss: {loss_mean / log_interval:.4f} Acc:{correct / total:.2%}")
                loss_mean = 0.0
        scheduler.step()                                                    # update the learning rate

        correct_val, total_val, loss_val = 0, 0, 0.0                        # validate the model
        for inputs, labels in loader(valid_data):
            outputs = predict(torch_compat.values(model), inputs)
            loss_val += float(criterion(outputs, labels)) * labels.shape[0]
            total_val += labels.shape[0]
            correct_val += int(jnp.sum(jnp.argmax(outputs, axis=1) == labels))
        curves["valid"].append(loss_val / total_val)
        print(f"Valid:\t Epoch[{epoch:0>3}/{max_epoch:0>3}] Loss: {loss_val / total_val:.4f} "
              f"Acc:{correct_val / total_val:.2%}  lr {scheduler.get_last_lr()}")
    return correct_val / total_val


def save_checkpoint(path, model, optimizer, scheduler, epoch, rng, curves):
    checkpoint.save(path, {"model": jax.tree.map(np.asarray, torch_compat.values(model)),  # torch.save(...)
                           "optimizer": optimizer.state_dict(),
                           "scheduler": scheduler.state_dict(),
                           "epoch": epoch, "rng": rng.bit_generator.state, "curves": curves})


def load_checkpoint(path, step_size):
    saved = checkpoint.load(path)                                           # torch.load(...)
    model, optimizer, scheduler = build(saved["model"], step_size)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    rng = np.random.default_rng()
    rng.bit_generator.state = saved["rng"]
    return model, optimizer, scheduler, saved["epoch"], rng, saved["curves"]


def plot_curves(curves, n_batches, path):
    train_x = np.arange(len(curves["train"]))
    valid_x = np.arange(1, len(curves["valid"]) + 1) * n_batches          # epochs -> iterations
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(train_x, curves["train"], label="Train", alpha=0.7)
    ax.plot(valid_x, curves["valid"], "o-", label="Valid")
    ax.legend(loc="upper right")
    ax.set_ylabel("loss value")
    ax.set_xlabel("Iteration")
    ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 epochs instead of 10, for CI")
    parser.add_argument("--out", default=".", help="directory for the checkpoint and the PNG")
    args = parser.parse_args(argv)
    max_epoch = 4 if args.quick else 10
    step_size = max_epoch // 2 + 1                                          # one decay, after the resume
    save_after = max_epoch // 2
    os.makedirs(args.out, exist_ok=True)
    checkpoint_path = os.path.join(args.out, "checkpoint.npz")

    train_data, valid_data = make_data()
    model, optimizer, scheduler = build(init_weights(), step_size)
    rng, curves = np.random.default_rng(0), {"train": [], "valid": []}
    train(model, optimizer, scheduler, train_data, valid_data, range(save_after), max_epoch, rng, curves)
    save_checkpoint(checkpoint_path, model, optimizer, scheduler, save_after, rng, curves)
    print(f"saved {checkpoint_path}; resuming from it in a fresh model, optimizer and scheduler")
    del model, optimizer, scheduler

    model, optimizer, scheduler, start, rng, curves = load_checkpoint(checkpoint_path, step_size)
    accuracy = train(model, optimizer, scheduler, train_data, valid_data, range(start, max_epoch),
                     max_epoch, rng, curves)
    path = os.path.join(args.out, "torch_style_loop.png")
    plot_curves(curves, -(-len(train_data[1]) // BATCH_SIZE), path)
    print(f"valid accuracy {accuracy:.2%}; learning rates {scheduler.get_last_lr()}; curves: {path}")
    return {"curves": curves, "valid_accuracy": accuracy, "lrs": scheduler.get_last_lr(), "png": path,
            "checkpoint": checkpoint_path}


if __name__ == "__main__":
    main()
