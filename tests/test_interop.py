"""gradxform and optax speak the same protocol, in both directions.

* gradxform transformations run inside ``optax.chain`` and optax transformations inside
  ``gradxform.chain``, under ``jax.jit``, with the same numbers either way and the same
  numbers as the math done by hand;
* extra keyword arguments (``value=`` for reduce-on-plateau) reach the transformations
  that accept them and only those;
* ``gradxform.apply_updates`` agrees with ``optax.apply_updates`` and keeps dtypes;
* optimizer states are plain pytrees: ``jax.tree.map``, ``device_put`` and ``pickle``
  keep them usable (what flax's ``TrainState`` needs).
"""

from __future__ import annotations

import pickle
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import optax.contrib
import pytest

import gradxform

jax.config.update("jax_enable_x64", True)  # also done by tests/conftest.py; the f64 checks need it


def params_f64():
    return {
        "w": jnp.asarray([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], jnp.float64),
        "b": jnp.asarray([0.1, -0.2, 0.3], jnp.float64),
    }


def gradient_sequence():
    """Three gradients; the first two have global norm > 1 (so clipping acts), the last < 1."""
    rng = np.random.default_rng(0)
    out = []
    for scale in (3.0, 1.5, 0.05):
        g = {"w": rng.normal(size=(2, 3)) * scale, "b": rng.normal(size=(3,)) * scale}
        out.append(jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), g))
    return out


# --------------------------------------------------------------------------- the math by hand


def clip_by_global_norm_by_hand(grads, max_norm):
    leaves = [np.asarray(g) for g in jax.tree.leaves(grads)]
    norm = np.sqrt(sum(np.sum(g * g) for g in leaves))
    factor = 1.0 if norm < max_norm else max_norm / norm
    return jax.tree.map(lambda g: np.asarray(g) * factor, grads), norm


def adam_by_hand(grad_sequence, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """torch.optim.Adam's update rule in numpy float64; returns the updates of each step."""
    m = jax.tree.map(lambda g: np.zeros_like(np.asarray(g)), grad_sequence[0])
    v = jax.tree.map(lambda g: np.zeros_like(np.asarray(g)), grad_sequence[0])
    updates = []
    for t, g in enumerate(grad_sequence, start=1):
        m = jax.tree.map(lambda m_, g_: beta1 * m_ + (1 - beta1) * np.asarray(g_), m, g)
        v = jax.tree.map(lambda v_, g_: beta2 * v_ + (1 - beta2) * np.asarray(g_) ** 2, v, g)
        bc1, bc2 = 1 - beta1**t, 1 - beta2**t
        updates.append(
            jax.tree.map(lambda m_, v_: -lr * (m_ / bc1) / (np.sqrt(v_) / np.sqrt(bc2) + eps), m, v)
        )
    return updates


def run_jitted(tx, params, grads_sequence, **extra_per_step):
    """Applies ``tx`` under ``jax.jit`` to each gradient (params held fixed)."""
    step = jax.jit(tx.update)
    state = tx.init(params)
    out = []
    for i, grads in enumerate(grads_sequence):
        extra = {k: v[i] for k, v in extra_per_step.items()}
        updates, state = step(grads, state, params, **extra)
        out.append(updates)
    return out, state


# --------------------------------------------------------------------------- chain, both ways


def test_clip_then_adam_both_ways_match_each_other_and_the_math():
    params, grads = params_f64(), gradient_sequence()
    ours = gradxform.chain(optax.clip_by_global_norm(1.0), gradxform.adam(1e-3))
    theirs = optax.chain(optax.clip_by_global_norm(1.0), gradxform.adam(1e-3))

    ours_updates, ours_state = run_jitted(ours, params, grads)
    theirs_updates, theirs_state = run_jitted(theirs, params, grads)

    # Same transformations, same order: the same numbers.
    chex.assert_trees_all_close(ours_updates, theirs_updates, rtol=0, atol=0)
    chex.assert_trees_all_equal_structs(ours_state, theirs_state)
    chex.assert_trees_all_close(ours_state, theirs_state, rtol=0, atol=0)

    # And the numbers of clip-then-Adam done by hand.
    clipped = []
    norms = []
    for g in grads:
        c, norm = clip_by_global_norm_by_hand(g, 1.0)
        clipped.append(c)
        norms.append(norm)
    assert norms[0] > 1 and norms[1] > 1 and norms[2] < 1  # both branches of the clip run
    expected = adam_by_hand(clipped, lr=1e-3)
    for got, want in zip(ours_updates, expected):
        chex.assert_trees_all_close(got, want, rtol=1e-10, atol=1e-15)


def test_clipping_matters_in_that_test():
    """Without the clip the updates differ (so the comparison above can fail)."""
    params, grads = params_f64(), gradient_sequence()
    clipped, _ = run_jitted(gradxform.chain(optax.clip_by_global_norm(1.0), gradxform.adam(1e-3)), params, grads)
    unclipped, _ = run_jitted(gradxform.adam(1e-3), params, grads)
    assert not np.allclose(np.asarray(clipped[1]["w"]), np.asarray(unclipped[1]["w"]), rtol=1e-6)


def test_gradxform_sgd_after_optax_scale_by_adam_in_optax_chain():
    """optax's own scale_by_adam then gradxform.sgd as the lr step: the numbers of each."""
    params, grads = params_f64(), gradient_sequence()
    tx = optax.chain(optax.scale_by_adam(eps=1e-8), gradxform.sgd(0.5))
    updates, _ = run_jitted(tx, params, grads)
    directions, _ = run_jitted(optax.scale_by_adam(eps=1e-8), params, grads)
    for u, d in zip(updates, directions):
        chex.assert_trees_all_close(u, jax.tree.map(lambda x: -0.5 * x, d), rtol=1e-14)


# --------------------------------------------------------------------------- extra args


class RecordValueState(NamedTuple):
    last_value: jax.Array


def scale_by_value():
    """A custom GradientTransformationExtraArgs: multiplies updates by ``value``."""

    def init(params):
        del params
        return RecordValueState(jnp.zeros([], jnp.float64))

    def update(updates, state, params=None, *, value, **extra_args):
        del params, extra_args, state
        return jax.tree.map(lambda u: u * value, updates), RecordValueState(jnp.asarray(value, jnp.float64))

    return optax.GradientTransformationExtraArgs(init, update)


def test_plain_optax_transform_rejects_extra_args():
    """So the chains below must be filtering what each transformation gets."""
    tx = optax.scale(2.0)
    with pytest.raises(TypeError):
        tx.update({"w": jnp.ones(2)}, tx.init(None), None, value=1.0)


def test_gradxform_chain_passes_value_only_to_those_that_take_it():
    params = {"w": jnp.asarray([1.0, -2.0], jnp.float64)}
    grads = {"w": jnp.asarray([0.5, 0.25], jnp.float64)}
    tx = gradxform.chain(optax.scale(2.0), scale_by_value(), gradxform.sgd(0.1))
    state = tx.init(params)
    updates, state = jax.jit(tx.update)(grads, state, params, value=3.0)
    # 2 (scale) * 3 (value) * -0.1 (sgd): [-0.3, -0.15]
    np.testing.assert_allclose(np.asarray(updates["w"]), [-0.3, -0.15], rtol=1e-14)
    assert float(state[1].last_value) == 3.0


def test_nested_gradxform_chain_passes_extra_args_down():
    params = {"w": jnp.asarray([1.0], jnp.float64)}
    inner = gradxform.chain(optax.scale(2.0), scale_by_value())
    tx = gradxform.chain(inner, gradxform.scale(-1.0))
    updates, state = tx.update({"w": jnp.asarray([1.0], jnp.float64)}, tx.init(params), params, value=5.0)
    np.testing.assert_allclose(np.asarray(updates["w"]), [-10.0])
    assert float(state[0][1].last_value) == 5.0


def test_optax_chain_passes_value_past_gradxform_transform():
    params = {"w": jnp.asarray([1.0, -2.0], jnp.float64)}
    grads = {"w": jnp.asarray([0.5, 0.25], jnp.float64)}
    tx = optax.chain(gradxform.sgd(0.1), scale_by_value())
    updates, state = jax.jit(tx.update)(grads, tx.init(params), params, value=4.0)
    np.testing.assert_allclose(np.asarray(updates["w"]), [-0.2, -0.1], rtol=1e-14)
    assert float(state[1].last_value) == 4.0


def test_reduce_on_plateau_gets_value_through_gradxform_chain():
    """optax.contrib.reduce_on_plateau(factor=0.5, patience=1): the first value sets the
    best; each later value that does not improve on it halves the scale."""
    params = {"w": jnp.asarray([1.0, -2.0], jnp.float64)}
    grads = [{"w": jnp.asarray([1.0, 0.5], jnp.float64)}] * 4
    tx = gradxform.chain(
        gradxform.sgd(0.1), optax.contrib.reduce_on_plateau(factor=0.5, patience=1, rtol=1e-4, atol=0.0)
    )
    values = jnp.asarray([1.0, 1.0, 2.0, 0.5])
    updates, state = run_jitted(tx, params, grads, value=values)
    scales = [1.0, 0.5, 0.25, 0.25]  # 0.5 improves on the best (1.0): no further cut
    for u, scale in zip(updates, scales):
        np.testing.assert_allclose(np.asarray(u["w"]), -0.1 * scale * np.asarray([1.0, 0.5]), rtol=1e-12)
    assert float(state[1].scale) == 0.25
    assert float(state[1].best_value) == 0.5


def test_chain_applies_left_to_right():
    """chain's doctest: scale by 2 then by -0.5."""
    tx = gradxform.chain(gradxform.scale(2.0), gradxform.scale(-0.5))
    updates, _ = tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.zeros(2)}))
    assert updates["w"].tolist() == [-1.0, -1.0]


def test_chain_checks_state_length():
    tx = gradxform.chain(gradxform.scale(2.0), gradxform.scale(-0.5))
    with pytest.raises(ValueError, match="2 transformations"):
        tx.update({"w": jnp.ones(2)}, (gradxform.EmptyState(),))


# --------------------------------------------------------------------------- apply_updates


def test_apply_updates_matches_optax():
    params = {
        "f32": jnp.asarray([1.0, 2.0], jnp.float32),
        "f64": jnp.asarray([1.0, 2.0], jnp.float64),
        "bf16": jnp.asarray([1.0, 256.0], jnp.bfloat16),
        "f16": jnp.asarray([1.0, 3.0], jnp.float16),
        "nested": [jnp.asarray([[0.5]], jnp.float32), None],
    }
    updates = {
        "f32": jnp.asarray([0.1, -0.2], jnp.float32),
        "f64": jnp.asarray([1e-12, -0.2], jnp.float64),
        "bf16": jnp.asarray([0.00390625, 1.5], jnp.float32),
        "f16": jnp.asarray([1e-3, -0.5], jnp.float32),
        "nested": [jnp.asarray([[0.25]], jnp.float32), None],
    }
    ours = gradxform.apply_updates(params, updates)
    theirs = optax.apply_updates(params, updates)
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    chex.assert_trees_all_equal(ours, theirs)
    chex.assert_trees_all_equal_dtypes(ours, params)


def test_apply_updates_keeps_low_precision_dtype_and_rounds_once():
    # 1 + 2**-8 + 2**-9 is between bfloat16 neighbours 1 and 1 + 2**-7 and nearer the
    # latter; summed in float32 then rounded once it gives 1 + 2**-7.
    param = jnp.asarray([1.0, 1.0, -3.0], jnp.bfloat16)
    update = jnp.asarray([2.0**-8 + 2.0**-9, 2.0**-9, 0.5], jnp.float32)
    new = gradxform.apply_updates(param, update)
    assert new.dtype == jnp.bfloat16
    expected = (np.asarray(param, np.float32) + np.asarray(update)).astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(np.asarray(new), expected)
    assert float(new[0]) == 1.0 + 2.0**-7
    # Parameters wider than the update keep their own precision.
    wide = gradxform.apply_updates(jnp.asarray([1.0], jnp.float64), jnp.asarray([1e-10], jnp.float32))
    assert wide.dtype == jnp.float64
    assert float(wide[0]) == 1.0 + float(np.float32(1e-10))


def test_apply_updates_under_jit_and_with_none():
    params = {"a": jnp.asarray([1.0], jnp.bfloat16), "b": None}
    updates = {"a": jnp.asarray([0.5], jnp.float32), "b": None}
    new = jax.jit(gradxform.apply_updates)(params, updates)
    assert new["b"] is None
    assert new["a"].dtype == jnp.bfloat16 and float(new["a"][0]) == 1.5


# --------------------------------------------------------------------------- states are pytrees


class TrainState(NamedTuple):
    """The part of flax's ``TrainState`` that touches the optimizer."""

    step: jax.Array
    params: Any
    opt_state: Any

    def apply_gradients(self, tx, grads):
        updates, opt_state = tx.update(grads, self.opt_state, self.params)
        return TrainState(self.step + 1, optax.apply_updates(self.params, updates), opt_state)


def adamw_and_state():
    tx = gradxform.adamw(1e-2, weight_decay=0.1, amsgrad=True)
    params = params_f64()
    state = tx.init(params)
    grads = gradient_sequence()
    for g in grads[:2]:
        _, state = tx.update(g, state, params)
    return tx, params, state, grads[2]


def test_adamw_state_is_a_pytree():
    tx, params, state, grads = adamw_and_state()
    leaves, treedef = jax.tree.flatten(state)
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)
    rebuilt = jax.tree.unflatten(treedef, leaves)
    assert type(rebuilt) is type(state)
    copied = jax.tree.map(lambda x: x, state)
    chex.assert_trees_all_equal(copied, state)
    zeros = jax.tree.map(jnp.zeros_like, state)
    assert jax.tree.structure(zeros) == treedef
    # A jitted update returns the same structure it gets.
    _, new_state = jax.jit(tx.update)(grads, state, params)
    assert jax.tree.structure(new_state) == treedef
    chex.assert_trees_all_equal_dtypes(new_state, state)


@pytest.mark.parametrize("round_trip", ["device_put", "pickle", "tree_map_numpy"])
def test_adamw_state_round_trips_and_continues_identically(round_trip):
    tx, params, state, grads = adamw_and_state()
    if round_trip == "device_put":
        restored = jax.device_put(state, jax.devices()[0])
    elif round_trip == "pickle":
        restored = pickle.loads(pickle.dumps(state))
    else:
        restored = jax.tree.map(jnp.asarray, jax.tree.map(np.asarray, state))
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    chex.assert_trees_all_equal(restored, state)
    chex.assert_trees_all_equal_dtypes(restored, state)
    expected_updates, expected_state = tx.update(grads, state, params)
    updates, new_state = tx.update(grads, restored, params)
    chex.assert_trees_all_equal(updates, expected_updates)
    chex.assert_trees_all_equal(new_state, expected_state)
    assert gradxform.get_hyperparams(restored)["weight_decay"] == pytest.approx(0.1)


def test_train_state_like_flax_under_jit():
    tx = gradxform.adamw(1e-2, weight_decay=0.1)
    params = params_f64()
    grads = gradient_sequence()
    train = TrainState(jnp.zeros([], jnp.int32), params, tx.init(params))

    @jax.jit
    def apply(train, grads):
        return train.apply_gradients(tx, grads)

    for g in grads:
        train = apply(train, g)
    assert int(train.step) == 3

    # The same three steps without the TrainState: identical params.
    state = tx.init(params)
    p = params
    for g in grads:
        u, state = tx.update(g, state, p)
        p = gradxform.apply_updates(p, u)
    chex.assert_trees_all_close(train.params, p, rtol=1e-14)
    chex.assert_trees_all_close(train.opt_state, state, rtol=1e-14)
    # AdamW's decoupled decay moved the params (a zero-gradient step still changes them).
    zero = jax.tree.map(jnp.zeros_like, params)
    after = apply(train, zero)
    w_before, w_after = np.asarray(train.params["w"]), np.asarray(after.params["w"])
    assert not np.array_equal(w_before, w_after)
