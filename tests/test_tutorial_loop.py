"""The tutorials' training loop (seeds/002 ``create_optimizer.py``, param groups from 001/003)
ported to torch_compat, with only the gradient line changed:

    loss.backward()                      ->  loss = torch_compat.backward(loss_fn, model, x, y)

SGD(momentum=0.9) on a small MLP with per-layer learning rates (param groups),
``zero_grad()``/``step()`` every batch, and the optimizer's ``state_dict`` saved after two
epochs and loaded into a fresh model and optimizer that finish the run. The same loop runs
in real torch from the same initial weights and data, in float64: losses, predictions and
final weights must agree to 1e-10. (The tutorial's StepLR scheduler is left out: schedulers
are not part of torch_compat yet.)
"""

from __future__ import annotations

import io
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torch_compat
from torch_compat import optim

jax.config.update("jax_enable_x64", True)

MAX_EPOCH = 4
BATCH_SIZE = 16
LR = 0.01
N_SAMPLES, N_FEATURES, N_HIDDEN, N_CLASSES = 64, 8, 16, 2
SAVE_AFTER_EPOCH = 2


def make_data(seed=1):
    """Two Gaussian blobs (the tutorial's two banknote classes, 1 and 100 yuan)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_CLASSES, N_SAMPLES)
    centers = rng.standard_normal((N_CLASSES, N_FEATURES)) * 1.5
    inputs = centers[labels] + rng.standard_normal((N_SAMPLES, N_FEATURES))
    # DataLoader(shuffle=True): one permutation per epoch, shared by both sides.
    orders = [rng.permutation(N_SAMPLES) for _ in range(MAX_EPOCH)]
    return inputs, labels, orders


def batches(inputs, labels, order):
    for start in range(0, N_SAMPLES, BATCH_SIZE):
        idx = order[start:start + BATCH_SIZE]
        yield inputs[idx], labels[idx]


def initial_weights(seed=2):
    """Layer weights as torch's nn.Linear stores them: weight (out, in), bias (out,)."""
    rng = np.random.default_rng(seed)
    return {
        "base": {"weight": rng.standard_normal((N_HIDDEN, N_FEATURES)) / np.sqrt(N_FEATURES),
                 "bias": rng.standard_normal(N_HIDDEN) * 0.1},
        "classifier": {"weight": rng.standard_normal((N_CLASSES, N_HIDDEN)) / np.sqrt(N_HIDDEN),
                       "bias": rng.standard_normal(N_CLASSES) * 0.1},
    }


# -- the JAX side: a model is a tree of Parameters ------------------------------------------


def net(params, x):
    h = jax.nn.relu(x @ params["base"]["weight"].T + params["base"]["bias"])
    return h @ params["classifier"]["weight"].T + params["classifier"]["bias"]


def criterion(outputs, labels):
    """nn.CrossEntropyLoss(): mean negative log-likelihood of the softmax."""
    log_probs = jax.nn.log_softmax(outputs, axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))


def loss_fn(params, inputs, labels):
    return criterion(net(params, inputs), labels)


def make_optimizer(model):
    # Per-layer learning rates, as in the tutorial (001/003): the classifier gets its own lr.
    return optim.SGD(
        [{"params": torch_compat.parameters(model["base"])},
         {"params": torch_compat.parameters(model["classifier"]), "lr": LR * 0.1}],
        lr=LR, momentum=0.9,
    )


def train_ours(weights, data, epochs, optimizer_state=None):
    inputs, labels, orders = data
    model = torch_compat.as_parameters(jax.tree.map(jnp.asarray, weights))
    optimizer = make_optimizer(model)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    train_curve, correct = [], []
    for epoch in epochs:
        for x, y in batches(inputs, labels, orders[epoch]):
            # forward
            outputs = net(torch_compat.values(model), x)
            # backward
            optimizer.zero_grad()
            loss = torch_compat.backward(loss_fn, model, x, y)  # was: loss = criterion(outputs, labels); loss.backward()
            # update weights
            optimizer.step()
            predicted = np.argmax(np.asarray(outputs), axis=1)
            correct.append(int((predicted == y).sum()))
            train_curve.append(float(loss))
    return model, optimizer, train_curve, correct


# -- the torch side: the tutorial's own code ------------------------------------------------


def train_torch(weights, data, epochs, optimizer_state=None):
    import torch
    import torch.nn as nn

    inputs, labels, orders = data

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.base = nn.Linear(N_FEATURES, N_HIDDEN).double()
            self.classifier = nn.Linear(N_HIDDEN, N_CLASSES).double()

        def forward(self, x):
            return self.classifier(torch.relu(self.base(x)))

    model = Net()
    with torch.no_grad():
        for layer in ("base", "classifier"):
            getattr(model, layer).weight.copy_(torch.from_numpy(weights[layer]["weight"]))
            getattr(model, layer).bias.copy_(torch.from_numpy(weights[layer]["bias"]))
    loss_f = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(
        [{"params": model.base.parameters()}, {"params": model.classifier.parameters(), "lr": LR * 0.1}],
        lr=LR, momentum=0.9,
    )
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    train_curve, correct = [], []
    for epoch in epochs:
        for x, y in batches(inputs, labels, orders[epoch]):
            x, y = torch.from_numpy(x), torch.from_numpy(y)
            outputs = model(x)
            optimizer.zero_grad()
            loss = loss_f(outputs, y)
            loss.backward()
            optimizer.step()
            _, predicted = torch.max(outputs.data, 1)
            correct.append(int((predicted == y).sum()))
            train_curve.append(loss.item())
    return model, optimizer, train_curve, correct


def _our_weights(model):
    return jax.tree.map(np.asarray, torch_compat.values(model))


def _torch_weights(model):
    return {layer: {k: getattr(model, layer).__getattr__(k).detach().numpy().copy() for k in ("weight", "bias")}
            for layer in ("base", "classifier")}


def _save_and_resume_ours(weights, data):
    """Two epochs, the optimizer's state_dict saved (pickle, as torch.save does), then a
    fresh model and optimizer load it and finish."""
    model, optimizer, curve1, correct1 = train_ours(weights, data, range(SAVE_AFTER_EPOCH))
    buffer = io.BytesIO()
    pickle.dump(optimizer.state_dict(), buffer)
    saved_weights = _our_weights(model)
    state = pickle.loads(buffer.getvalue())
    model, optimizer, curve2, correct2 = train_ours(saved_weights, data, range(SAVE_AFTER_EPOCH, MAX_EPOCH), state)
    return model, optimizer, curve1 + curve2, correct1 + correct2


def test_resume_is_identical_to_uninterrupted_run():
    weights, data = initial_weights(), make_data()
    model, optimizer, curve, correct = train_ours(weights, data, range(MAX_EPOCH))
    model2, optimizer2, curve2, correct2 = _save_and_resume_ours(weights, data)
    assert curve2 == curve and correct2 == correct
    for a, b in zip(jax.tree.leaves(_our_weights(model)), jax.tree.leaves(_our_weights(model2))):
        np.testing.assert_array_equal(a, b)
    assert curve[-1] < curve[0]  # it learns
    assert [g["lr"] for g in optimizer2.param_groups] == [LR, LR * 0.1]
    assert all("momentum_buffer" in optimizer2.state[p] for p in torch_compat.parameters(model2))


def test_training_loop_matches_torch():
    torch = pytest.importorskip("torch")
    weights, data = initial_weights(), make_data()
    model, optimizer, curve, correct = _save_and_resume_ours(weights, data)

    # torch: the same two halves, its state_dict through torch.save / torch.load.
    tmodel, toptimizer, tcurve1, tcorrect1 = train_torch(weights, data, range(SAVE_AFTER_EPOCH))
    buffer = io.BytesIO()
    torch.save(toptimizer.state_dict(), buffer)
    buffer.seek(0)
    tstate = torch.load(buffer)
    tmodel, toptimizer, tcurve2, tcorrect2 = train_torch(_torch_weights(tmodel), data,
                                                        range(SAVE_AFTER_EPOCH, MAX_EPOCH), tstate)
    tcurve, tcorrect = tcurve1 + tcurve2, tcorrect1 + tcorrect2

    assert len(curve) == len(tcurve) == MAX_EPOCH * N_SAMPLES // BATCH_SIZE
    np.testing.assert_allclose(curve, tcurve, rtol=1e-10, atol=0)
    assert correct == tcorrect
    ours, theirs = _our_weights(model), _torch_weights(tmodel)
    for layer in ("base", "classifier"):
        for k in ("weight", "bias"):
            a, b = ours[layer][k], theirs[layer][k]
            assert np.linalg.norm(a - b) <= 1e-10 * np.linalg.norm(b), (layer, k)
    # The momentum buffers too, parameter by parameter.
    for layer in ("base", "classifier"):
        for k in ("weight", "bias"):
            ours_buf = optimizer.state[model[layer][k]]["momentum_buffer"]
            theirs_buf = toptimizer.state[getattr(getattr(tmodel, layer), k)]["momentum_buffer"]
            np.testing.assert_allclose(np.asarray(ours_buf), theirs_buf.numpy(), rtol=1e-9, atol=1e-13)


def test_optimizer_methods_demo():
    """optimizer_methods.py: step with a gradient of ones, zero_grad, add_param_group,
    state_dict after ten momentum steps; the printed numbers of the tutorial."""
    weight = torch_compat.Parameter(jnp.asarray([[0.6614, 0.2669], [0.0617, 0.6213]], jnp.float32))
    weight.grad = jnp.ones((2, 2), jnp.float32)
    optimizer = optim.SGD([weight], lr=0.1)
    optimizer.step()
    np.testing.assert_allclose(np.asarray(weight.data), [[0.5614, 0.1669], [-0.0383, 0.5213]], rtol=0, atol=1e-6)
    assert optimizer.param_groups[0]["params"][0] is weight
    optimizer.zero_grad()
    assert weight.grad is None  # set_to_none=True by default since torch 2.0
    w2 = torch_compat.Parameter(jnp.zeros((3, 3), jnp.float32))
    optimizer.add_param_group({"params": w2, "lr": 0.0001})
    assert len(optimizer.param_groups) == 2 and optimizer.param_groups[1]["lr"] == 0.0001
    assert optimizer.param_groups[1]["momentum"] == 0

    weight.grad = jnp.ones((2, 2), jnp.float32)
    optimizer = optim.SGD([weight], lr=0.1, momentum=0.9)
    assert optimizer.state_dict() == {
        "state": {},
        "param_groups": [{"lr": 0.1, "momentum": 0.9, "dampening": 0, "weight_decay": 0, "nesterov": False,
                          "maximize": False, "foreach": None, "differentiable": False, "fused": None,
                          "params": [0]}],
    }
    start = np.asarray(weight.data)
    for _ in range(10):
        optimizer.step()
    # buffer_k = sum_{j<k} 0.9^j; weight -= 0.1 * buffer_k at each step.
    buffers = [sum(0.9 ** j for j in range(k + 1)) for k in range(10)]
    np.testing.assert_allclose(np.asarray(weight.data), start - 0.1 * sum(buffers), rtol=1e-5)
    sd = optimizer.state_dict()
    np.testing.assert_allclose(np.asarray(sd["state"][0]["momentum_buffer"]), np.full((2, 2), buffers[-1]), rtol=1e-5)
    fresh = optim.SGD([weight], lr=0.1, momentum=0.9)
    fresh.load_state_dict(sd)
    assert fresh.state_dict()["param_groups"] == sd["param_groups"]


def test_momentum_demo_matches_torch():
    """momentum.py: SGD on y = 4x^2 from x = 2, lr 0.01 with momentum 0.9 and lr 0.03
    without, 100 iterations, losses compared with torch's (float32, as the tutorial)."""
    torch = pytest.importorskip("torch")

    def func(x):
        return jnp.sum((2 * x) ** 2)

    for lr, momentum in [(0.01, 0.9), (0.03, 0.0)]:
        x = torch_compat.Parameter(jnp.asarray([2.0], jnp.float32))
        optimizer = optim.SGD([x], lr=lr, momentum=momentum)
        tx = torch.tensor([2.0], requires_grad=True)
        toptimizer = torch.optim.SGD([tx], lr=lr, momentum=momentum)
        losses, tlosses = [], []
        for _ in range(100):
            y = torch_compat.backward(func, x)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(y))
            ty = torch.pow(2 * tx, 2)
            ty.backward()
            toptimizer.step()
            toptimizer.zero_grad()
            tlosses.append(ty.item())
        np.testing.assert_allclose(losses, tlosses, rtol=1e-5, atol=1e-30)
        np.testing.assert_allclose(np.asarray(x.data), tx.detach().numpy(), rtol=1e-5, atol=1e-30)
