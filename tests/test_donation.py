"""Every public transformation's state can be donated (issue 14, "Safe by default").

The standard training step ``jax.jit(step, donate_argnums=(0, 1))`` donates the
parameters and the optimizer state. XLA refuses to donate one buffer twice, so no two
leaves of a state may share a buffer, and no state leaf may be a buffer of the
parameters or of an array the caller passed in. The factories are enumerated from
``gradxform.__all__``: a new public transformation without an entry in ``FACTORIES``
fails :func:`test_every_public_function_is_classified`.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

import gradxform

# Public functions that are not transformation factories.
NOT_FACTORIES = {
    "all_finite",
    "apply_updates",
    "get_hyperparams",
    "global_norm",
    "minimize",
    "orthogonalize_via_newton_schulz",
    "set_hyperparams",
}


def _mesh():
    return Mesh(np.array(jax.devices()[:1]), ("data",))


# name -> a list of builders, each a variant whose state differs in layout (the first
# is the plain one). Built inside the test, so the x64 setting of the test applies.
FACTORIES = {
    "adadelta": [lambda: gradxform.adadelta(), lambda: gradxform.adadelta(weight_decay=0.1, maximize=True)],
    "adafactor": [lambda: gradxform.adafactor(0.1), lambda: gradxform.adafactor(0.1, weight_decay=0.1)],
    "adagrad": [lambda: gradxform.adagrad(0.1), lambda: gradxform.adagrad(0.1, lr_decay=0.01, initial_accumulator_value=0.5)],
    "adam": [lambda: gradxform.adam(0.1), lambda: gradxform.adam(0.1, weight_decay=0.1, amsgrad=True)],
    "adamax": [lambda: gradxform.adamax(0.1)],
    "adamw": [lambda: gradxform.adamw(0.1), lambda: gradxform.adamw(0.1, amsgrad=True)],
    "add_decayed_weights": [lambda: gradxform.add_decayed_weights(0.1)],
    "asgd": [lambda: gradxform.asgd(0.1), lambda: gradxform.asgd(0.1, weight_decay=0.1, t0=0.0)],
    "chain": [lambda: gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.adam(0.1))],
    "clip_by_global_norm": [lambda: gradxform.clip_by_global_norm(1.0)],
    "clip_by_value": [lambda: gradxform.clip_by_value(0.5)],
    "flatten": [lambda: gradxform.flatten(gradxform.asgd(0.1)), lambda: gradxform.flatten(gradxform.adam(0.1), max_leaf_size=2)],
    "identity": [lambda: gradxform.identity()],
    "inject_hyperparams": [
        lambda: gradxform.inject_hyperparams(gradxform.scale_by_rprop, learning_rate=0.1),
        lambda: gradxform.inject_hyperparams(gradxform.scale, step_size=lambda n: -0.1 / (n + 1)),
    ],
    "lbfgs": [lambda: gradxform.lbfgs(max_iter=3), lambda: gradxform.lbfgs(max_iter=3, line_search_fn="strong_wolfe")],
    "muon": [lambda: gradxform.muon(0.1)],
    "nadam": [lambda: gradxform.nadam(0.1), lambda: gradxform.nadam(0.1, weight_decay=0.1, decoupled_weight_decay=True)],
    "negate": [lambda: gradxform.negate()],
    "radam": [lambda: gradxform.radam(0.1)],
    "reduce_on_plateau": [lambda: gradxform.chain(gradxform.sgd(0.1), gradxform.reduce_on_plateau(patience=0))],
    "rmsprop": [lambda: gradxform.rmsprop(0.1), lambda: gradxform.rmsprop(0.1, momentum=0.9, centered=True)],
    "rprop": [lambda: gradxform.rprop(0.1)],
    "scale": [lambda: gradxform.scale(-0.1)],
    "scale_by_adadelta": [lambda: gradxform.scale_by_adadelta()],
    "scale_by_adafactor": [lambda: gradxform.scale_by_adafactor()],
    "scale_by_adagrad": [lambda: gradxform.scale_by_adagrad(initial_accumulator_value=0.1)],
    "scale_by_adam": [lambda: gradxform.scale_by_adam(amsgrad=True)],
    "scale_by_adamax": [lambda: gradxform.scale_by_adamax()],
    "scale_by_asgd": [lambda: gradxform.scale_by_asgd(0.1), lambda: gradxform.scale_by_asgd(jnp.asarray(0.1, jnp.float32))],
    "scale_by_learning_rate": [lambda: gradxform.scale_by_learning_rate(0.1)],
    "scale_by_muon": [lambda: gradxform.scale_by_muon()],
    "scale_by_nadam": [lambda: gradxform.scale_by_nadam()],
    "scale_by_radam": [lambda: gradxform.scale_by_radam()],
    "scale_by_rmsprop": [lambda: gradxform.scale_by_rmsprop(momentum=0.9, centered=True)],
    "scale_by_rprop": [lambda: gradxform.scale_by_rprop(0.1), lambda: gradxform.scale_by_rprop(jnp.asarray(0.1))],
    "scale_by_sgd": [lambda: gradxform.scale_by_sgd(momentum=0.9)],
    "scale_by_sparse_adam": [lambda: gradxform.scale_by_sparse_adam()],
    "sgd": [lambda: gradxform.sgd(0.1), lambda: gradxform.sgd(0.1, momentum=0.9, weight_decay=0.1, nesterov=True)],
    "shard_state": [lambda: gradxform.shard_state(gradxform.asgd(0.1), _mesh())],
    "skip_non_finite": [lambda: gradxform.skip_non_finite(gradxform.rprop(0.1), max_consecutive_skips=2)],
    "sparse_adam": [lambda: gradxform.sparse_adam(0.1)],
}

MATRIX_ONLY = {"muon", "scale_by_muon"}


def loss(params):
    return sum(jnp.sum(jnp.sin(x) + x**2) for x in jax.tree.leaves(params))


def make_params(name):
    """A small tree with a matrix, a vector and a 0-d leaf (Muon: matrices only)."""
    if name in MATRIX_ONLY:
        return {"w": jnp.ones((2, 3)), "v": jnp.full((3, 2), 0.5)}
    return {"w": jnp.ones((2, 3)), "b": jnp.linspace(-1.0, 1.0, 3), "s": jnp.asarray(1.5)}


def extra_args(name, params):
    if name == "lbfgs":
        return {"value_fn": loss}
    if name == "reduce_on_plateau":
        return {"value": loss(params)}
    return {}


def buffers(tree):
    """``(path, pointer)`` of every non-empty array leaf, one per device shard."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, jax.Array) and leaf.size:
            for shard in leaf.addressable_shards:
                out.append((jax.tree_util.keystr(path), shard.data.unsafe_buffer_pointer()))
    return out


def assert_no_shared_buffer(state, *others):
    """No two leaves of ``state`` share a buffer, nor one with a leaf of ``others``."""
    owner = {}
    for path, pointer in buffers(state):
        assert pointer not in owner, f"state leaves {owner[pointer]} and {path} share a buffer"
        owner[pointer] = path
    for i, other in enumerate(others):
        for path, pointer in buffers(other):
            assert pointer not in owner, f"state leaf {owner[pointer]} is the buffer of argument {i}'s leaf {path}"


CASES = [(name, i) for name in sorted(FACTORIES) for i in range(len(FACTORIES[name]))]


def test_every_public_function_is_classified():
    functions = {
        name for name in gradxform.__all__ if inspect.isfunction(getattr(gradxform, name))
    }
    missing = functions - set(FACTORIES) - NOT_FACTORIES
    assert not missing, f"public functions with no entry in FACTORIES or NOT_FACTORIES: {sorted(missing)}"
    assert not (set(FACTORIES) | NOT_FACTORIES) - functions, "stale entries"
    assert not set(FACTORIES) & NOT_FACTORIES


@pytest.mark.parametrize("x64", [False, True], ids=["x32", "x64"])
@pytest.mark.parametrize("name,variant", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_init_state_leaves_are_distinct_buffers(name, variant, x64):
    with jax.enable_x64(x64):
        params = make_params(name)
        state = FACTORIES[name][variant]().init(params)
        assert_no_shared_buffer(state, params)


# L-BFGS's step (a while loop with a line search) takes seconds to compile: its jitted
# run is in the slow set; its init is checked buffer by buffer above in the default run.
JIT_CASES = [
    pytest.param(name, i, id=f"{name}-{i}", marks=[pytest.mark.slow] if name == "lbfgs" else [])
    for name, i in CASES
]


@pytest.mark.parametrize("name,variant", JIT_CASES)
def test_jitted_step_donating_params_and_state_runs_twice(name, variant):
    """``jax.jit(step, donate_argnums=(0, 1))``, twice (x64 off: JAX's default)."""
    with jax.enable_x64(False):
        tx = FACTORIES[name][variant]()

        def step(params, state):
            grads = jax.grad(loss)(params)
            updates, state = tx.update(grads, state, params, **extra_args(name, params))
            return gradxform.apply_updates(params, updates), state

        step = jax.jit(step, donate_argnums=(0, 1))
        start = make_params(name)
        params = jax.tree.map(jnp.copy, start)
        state = tx.init(params)
        for _ in range(2):
            params, state = step(params, state)
        assert_no_shared_buffer(state, params)
        assert jax.tree.structure(params) == jax.tree.structure(start)
        for got, first in zip(jax.tree.leaves(params), jax.tree.leaves(start)):
            assert got.shape == first.shape and got.dtype == first.dtype
            assert np.all(np.isfinite(got))


def test_hyperparameter_arrays_are_copied_into_the_state():
    """Donating the state never deletes an array the caller still holds."""
    lr = jnp.asarray(0.1, jnp.float64)  # a strongly typed array, as a user keeps one
    tx = gradxform.inject_hyperparams(gradxform.scale_by_asgd, learning_rate=lr, lambd=lr)
    params = make_params("asgd")
    state = tx.init(params)
    assert_no_shared_buffer(state, params, lr)
    step = jax.jit(lambda p, s: tx.update(jax.grad(loss)(p), s, p), donate_argnums=(0, 1))
    _, state = step(params, state)
    assert float(lr) == pytest.approx(0.1)  # still alive
    state = gradxform.set_hyperparams(state, learning_rate=lr, lambd=lr)
    assert_no_shared_buffer(state, lr)


def test_schedule_returning_a_held_array_is_copied():
    held = jnp.asarray(-0.5, jnp.float64)
    tx = gradxform.inject_hyperparams(gradxform.scale, step_size=lambda n: held)
    state = tx.init(jnp.zeros(2))
    assert_no_shared_buffer(state, held)
    _, state = tx.update(jnp.ones(2), state)
    assert_no_shared_buffer(state, held)
