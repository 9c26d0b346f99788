"""gradxform in the training loops of flax and equinox (both in the ``test`` extra).

* flax ``nnx.Optimizer``: param groups chosen by predicate and path regex, extra
  arguments through ``optimizer.update(model, grads, value=...)``, and
  ``set_hyperparams(optimizer.opt_state, group=...)`` between jitted steps without
  recompiling; the numbers are those of the plain functional loop.
* flax linen ``TrainState``: ``apply_gradients`` under ``jax.jit`` with the state donated,
  param groups and gradient accumulation inside, hyperparameters changed in between.
* equinox: ``eqx.filter`` / ``eqx.filter_jit`` and ``eqx.partition`` with ``jax.jit`` and
  donation give the same numbers, with groups chosen by the modules' attribute paths.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform
import parity_harness as ph

X = jnp.asarray(np.random.default_rng(0).standard_normal((8, 3)), jnp.float32)
Y = jnp.asarray(np.random.default_rng(1).standard_normal((8, 1)), jnp.float32)


def groups():
    """No decay on biases and norms; the head learns faster; AdamW elsewhere."""
    return [
        {"params": lambda path, leaf: leaf.ndim < 2, "weight_decay": 0.0},
        {"params": r"head/.*", "learning_rate": 1e-2},
    ]


def make_tx():
    return gradxform.param_groups(gradxform.adamw, groups(), learning_rate=1e-3, weight_decay=0.1)


def functional_run(params, loss_fn, tx, steps, lr_change=None, value=False):
    """The plain functional loop the frameworks are compared with (``value=True``: the
    loss is given to ``update`` as ``value=``)."""
    state = tx.init(params)
    for i in range(steps):
        if lr_change is not None and i == lr_change[0]:
            state = gradxform.set_hyperparams(state, group=lr_change[1], learning_rate=lr_change[2])
        loss, grads = jax.value_and_grad(loss_fn)(params)
        extra = {"value": loss} if value else {}
        updates, state = tx.update(grads, state, params, **extra)
        params = gradxform.apply_updates(params, updates)
    return params


def assert_trees_close(a, b, rtol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=1e-7)


# ------------------------------------------------------------------------------- flax nnx


def test_flax_nnx_optimizer_with_param_groups():
    nnx = pytest.importorskip("flax.nnx")

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.body = nnx.Linear(3, 4, rngs=rngs)
            self.norm = nnx.LayerNorm(4, rngs=rngs)
            self.head = nnx.Linear(4, 1, rngs=rngs)

        def __call__(self, x):
            return self.head(nnx.relu(self.norm(self.body(x))))

    model = Model(nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    initial = jax.tree.map(jnp.array, nnx.as_pure(state))  # a copy: the model's variables will change
    tx = optax.chain(make_tx(), gradxform.reduce_on_plateau(factor=0.5, patience=0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    traces = []

    @nnx.jit
    def train_step(model, optimizer):
        traces.append(1)
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(X) - Y) ** 2))(model)
        optimizer.update(model, grads, value=loss)  # the metric reaches reduce_on_plateau
        return loss

    for _ in range(2):
        train_step(model, optimizer)
    # Group 1 is the head (the regex), group 0 the biases and norms, group 2 the rest.
    assert float(gradxform.get_hyperparams(optimizer.opt_state, group=1)["learning_rate"]) == pytest.approx(1e-2)
    optimizer.opt_state = gradxform.set_hyperparams(optimizer.opt_state, group=2, learning_rate=5e-3)
    for _ in range(2):
        train_step(model, optimizer)
    assert len(traces) == 1
    assert int(optimizer.opt_state[1].count) == 4  # the plateau rule saw every loss

    # The same numbers as the functional loop on the same parameters.
    def loss_fn(params):
        return jnp.mean((nnx.merge(graphdef, params)(X) - Y) ** 2)

    reference = functional_run(initial, loss_fn, tx, 4, lr_change=(2, 2, 5e-3), value=True)
    assert_trees_close(nnx.as_pure(nnx.state(model, nnx.Param)), reference)


# ---------------------------------------------------------------------------- flax linen


def test_flax_linen_train_state_with_groups_and_accumulation_under_jit_and_donation():
    pytest.importorskip("flax")
    import flax.linen as nn
    from flax.training import train_state

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.LayerNorm(name="norm")(nn.Dense(4, name="body")(x)))
            return nn.Dense(1, name="head")(x)

    model = Model()
    params = model.init(jax.random.key(0), X)  # {"params": {"body": ..., "norm": ..., "head": ...}}
    initial = jax.tree.map(jnp.array, params)  # a copy: the train state is donated
    tx = gradxform.accumulate(
        gradxform.param_groups(
            gradxform.adamw,
            [
                {"params": lambda path, leaf: leaf.ndim < 2, "weight_decay": 0.0},
                {"params": r"params/head/.*", "learning_rate": 1e-2},
            ],
            learning_rate=1e-3,
            weight_decay=0.1,
        ),
        num_micro_batches=2,
    )
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    traces = []

    @functools.partial(jax.jit, donate_argnums=0)
    def train_step(state, x, y):
        traces.append(1)
        grads = jax.grad(lambda p: jnp.mean((state.apply_fn(p, x) - y) ** 2))(state.params)
        return state.apply_gradients(grads=grads)

    halves = [(X[:4], Y[:4]), (X[4:], Y[4:])]
    for x, y in halves * 2:
        state = train_step(state, x, y)
    state = state.replace(opt_state=gradxform.set_hyperparams(state.opt_state, group=1, learning_rate=2e-2))
    for x, y in halves:
        state = train_step(state, x, y)
    assert len(traces) == 1 and int(state.step) == 6
    assert float(gradxform.get_hyperparams(state.opt_state, group=1)["learning_rate"]) == pytest.approx(2e-2)

    # The functional loop on the mean gradient of the two halves, one step each.
    def loss_fn(p):
        return (jnp.mean((model.apply(p, X[:4]) - Y[:4]) ** 2) + jnp.mean((model.apply(p, X[4:]) - Y[4:]) ** 2)) / 2

    inner = gradxform.param_groups(
        gradxform.adamw,
        [{"params": lambda path, leaf: leaf.ndim < 2, "weight_decay": 0.0}, {"params": r"params/head/.*", "learning_rate": 1e-2}],
        learning_rate=1e-3,
        weight_decay=0.1,
    )
    expected = functional_run(initial, loss_fn, inner, 3, lr_change=(2, 1, 2e-2))
    assert_trees_close(state.params, expected, rtol=1e-5)


# -------------------------------------------------------------------------------- equinox


def test_equinox_filter_and_partition_give_the_same_numbers():
    eqx = pytest.importorskip("equinox")

    class Model(eqx.Module):
        body: eqx.nn.Linear
        norm: eqx.nn.LayerNorm
        head: eqx.nn.Linear

        def __init__(self, key):
            k1, k2 = jax.random.split(key)
            self.body = eqx.nn.Linear(3, 4, key=k1)
            self.norm = eqx.nn.LayerNorm(4)
            self.head = eqx.nn.Linear(4, 1, key=k2)

        def __call__(self, x):
            return self.head(jax.nn.relu(self.norm(self.body(x))))

    def loss(model, x, y):
        return jnp.mean((jax.vmap(model)(x) - y) ** 2)

    model0 = Model(jax.random.key(0))
    tx = make_tx()

    # eqx.filter / eqx.filter_jit, the equinox idiom.
    @eqx.filter_jit
    def filter_step(model, opt_state):
        grads = eqx.filter_grad(loss)(model, X, Y)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state

    model, opt_state = model0, tx.init(eqx.filter(model0, eqx.is_array))
    # Groups by the modules' attribute paths: biases and the norm, the head's weight, the rest.
    members = [sorted(ph.find_state_field(inner, "exp_avg")) for inner in opt_state.inner_states]
    assert members == [["body/bias", "head/bias", "norm/bias", "norm/weight"], ["head/weight"], ["body/weight"]]
    for _ in range(3):
        model, opt_state = filter_step(model, opt_state)

    # eqx.partition with jax.jit and donation.
    params, static = eqx.partition(model0, eqx.is_array)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def partition_step(params, opt_state):
        grads = jax.grad(lambda p: loss(eqx.combine(p, static), X, Y))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return gradxform.apply_updates(params, updates), opt_state

    params = jax.tree.map(jnp.array, params)
    state2 = tx.init(params)
    for _ in range(3):
        params, state2 = partition_step(params, state2)
    assert_trees_close(eqx.filter(model, eqx.is_array), params, rtol=1e-6)
    assert not np.allclose(np.asarray(params.head.weight), np.asarray(model0.head.weight))
