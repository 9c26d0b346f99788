"""Every public transformation's state can be donated (issue 14, "Safe by default").

The standard training step ``jax.jit(step, donate_argnums=(0, 1))`` donates the
parameters and the optimizer state. XLA refuses to donate one buffer twice, so no two
leaves of a state may share a buffer, and no state leaf may be a buffer of the
parameters or of an array the caller passed in. The factories are enumerated from
``gradxform.__all__``: a new public transformation without an entry in ``FACTORIES``
fails :func:`test_every_public_function_is_classified` (the table is in
``transform_cases.py``).
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform
from transform_cases import FACTORIES, NOT_FACTORIES, extra_args, loss, make_params

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
    # Set into a state that owns its values (built from numbers): copied too.
    owned = gradxform.inject_hyperparams(gradxform.scale_by_asgd, learning_rate=0.1, lambd=0.1).init(params)
    owned = gradxform.set_hyperparams(owned, learning_rate=lr, lambd=lr)
    assert_no_shared_buffer(owned, lr)


def test_schedule_returning_a_held_array_is_copied():
    held = jnp.asarray(-0.5, jnp.float64)
    tx = gradxform.inject_hyperparams(gradxform.scale, step_size=lambda n: held)
    state = tx.init(jnp.zeros(2))
    assert_no_shared_buffer(state, held)
    _, state = tx.update(jnp.ones(2), state)
    assert_no_shared_buffer(state, held)
