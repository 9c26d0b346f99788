"""``gradxform.flatten``: the flat-buffer layout gives the per-leaf numbers.

The reference is the same optimizer run leaf by leaf, on a tree with several dtypes
(float32, float64, complex64, bfloat16), a 0-d leaf and nested containers. Flattening only moves where the numbers live, so element-wise rules
agree to a few units in the last place: XLA's vectorized loop body and its scalar tail
may round one operation differently, and which elements land in the tail depends on the
buffer lengths.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import sparse

import gradxform
from gradxform.registry import FIRST_ORDER
from test_optimizer_table import CONFIGS

ELEMENTWISE = tuple(a for a in FIRST_ORDER if a not in ("adafactor", "muon"))  # the two work on whole matrices
EXTRA_FLAGS = {  # flags the table's configs leave at their defaults
    "adam": dict(weight_decay=0.1, maximize=True),
    "rmsprop": dict(weight_decay=0.01),
    "adagrad": dict(weight_decay=0.01),
}
STEPS = 8
ULPS = 16  # rounding differences of one op in one step, carried through STEPS steps
EPS = {jnp.dtype(d): float(jnp.finfo(d).eps) for d in ("float32", "float64", "bfloat16")}
EPS[jnp.dtype("complex64")] = EPS[jnp.dtype("float32")]


def mixed_tree(seed):
    rng = np.random.default_rng(seed)
    return {
        "f32": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
        "nested": [
            jnp.asarray(rng.normal(size=(5,)), jnp.float64),
            jnp.asarray(rng.normal(), jnp.float32),  # 0-d
        ],
        "c64": jnp.asarray(rng.normal(size=(2, 3)) + 1j * rng.normal(size=(2, 3)), jnp.complex64),
        "bf16": jnp.asarray(rng.normal(size=(7,)), jnp.bfloat16),
        "f64": jnp.asarray(rng.normal(size=(2, 2)), jnp.float64),
    }


def real_only(tree):
    return {k: v for k, v in tree.items() if k != "c64"}


def run(tx, params, steps=STEPS):
    @jax.jit
    def step(p, s, g):
        updates, s = tx.update(g, s, p)
        return gradxform.apply_updates(p, updates), s, updates

    state = tx.init(params)
    history = []
    for i in range(steps):
        grads = mixed_tree(100 + i)
        if "c64" not in params:
            grads = real_only(grads)
        if i == 2:  # a sparse-looking gradient: zeros are kept apart
            grads = jax.tree.map(lambda g: g.at[..., 0].set(0) if g.ndim else g, grads)
        params, state, updates = step(params, state, grads)
        history.append((params, updates))
    return history, state


@pytest.mark.parametrize("alias", ELEMENTWISE)
def test_flatten_gives_the_leafwise_numbers(alias):
    kwargs = {**CONFIGS[alias], **EXTRA_FLAGS.get(alias, {})}
    params = mixed_tree(0)
    if alias == "sparse_adam":  # it refuses complex parameters, as torch's SparseAdam
        params = real_only(params)
    reference, _ = run(getattr(gradxform, alias)(**kwargs), params)
    flat, state = run(gradxform.flatten(getattr(gradxform, alias)(**kwargs)), params)
    for (p_ref, u_ref), (p_flat, u_flat) in zip(reference, flat):
        for a, b in zip(jax.tree.leaves((p_ref, u_ref)), jax.tree.leaves((p_flat, u_flat))):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_allclose(
                np.asarray(a, np.complex128), np.asarray(b, np.complex128), rtol=ULPS * EPS[a.dtype], atol=1e-30
            )
    # one buffer per dtype, in order of first appearance among the leaves (dict keys
    # sorted): bf16, c64, f32 (12 + the 0-d leaf), f64 (4 + 5)
    expected = [(7, "bfloat16"), (6, "complex64"), (13, "float32"), (9, "float64")]
    if alias == "sparse_adam":
        expected.pop(1)
    assert [(a.shape[1], str(a.dtype)) for a in state.layout] == expected


def test_hyperparameters_are_reachable_and_changing_them_does_not_recompile():
    params = {"a": jnp.ones(3), "b": jnp.ones((2, 2))}
    tx = gradxform.flatten(gradxform.sgd(0.1, momentum=0.9))
    traces = []

    @jax.jit
    def step(state, grads):
        traces.append(1)
        return tx.update(grads, state)

    state = tx.init(params)
    assert float(gradxform.get_hyperparams(state)["learning_rate"]) == pytest.approx(0.1)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = step(state, grads)
    state = gradxform.set_hyperparams(state, learning_rate=0.02)
    updates_small, _ = step(state, grads)
    assert len(traces) == 1
    np.testing.assert_allclose(np.asarray(updates_small["b"]), np.asarray(updates["b"]) / 5, rtol=1e-6)


def test_state_carries_through_scan_and_converges():
    target = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.array(-1.0)}
    loss = lambda p: sum(jnp.sum((p[k] - target[k]) ** 2) for k in p)  # noqa: E731
    tx = gradxform.flatten(gradxform.adam(0.1))
    params = jax.tree.map(jnp.zeros_like, target)

    def body(carry, _):
        p, s = carry
        value, grads = jax.value_and_grad(loss)(p)
        updates, s = tx.update(grads, s, p)
        return (gradxform.apply_updates(p, updates), s), value

    (params, _), values = jax.jit(lambda p: jax.lax.scan(body, (p, tx.init(p)), None, length=300))(params)
    assert float(values[-1]) < 1e-3 * float(values[0])


def test_refuses_sparse_leaves_and_mismatched_updates():
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    tx = gradxform.flatten(gradxform.adam(0.1))
    state = tx.init(params)
    bcoo = sparse.BCOO.fromdense(jnp.eye(2, 3))
    with pytest.raises(TypeError, match=r"updates leaf at \['w'\] is BCOO"):
        tx.update({"w": bcoo, "b": jnp.ones(3)}, state)
    with pytest.raises(ValueError, match="state holds buffers of"):
        tx.update({"w": jnp.ones((2, 3)), "b": jnp.ones(4)}, state)  # would broadcast
    with pytest.raises(ValueError, match="state holds buffers of"):
        tx.update({"w": jnp.ones((2, 3), jnp.float16), "b": jnp.ones(3)}, state)
    with pytest.raises(ValueError, match="differ in shapes or dtypes"):
        tx.update(params, state, {"w": jnp.ones((3, 2)), "b": jnp.ones(3)})


def test_large_leaves_keep_their_own_buffers_and_small_ones_are_packed_in_bounded_buffers():
    rng = np.random.default_rng(3)
    shapes = [(300,), (40, 50), (7,), (2000,), (5,), (3, 3)]  # 300 + 2000 + 7 + 2000 + 5 + 9
    params = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes]
    grads = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes]
    tx = gradxform.flatten(gradxform.adam(0.1), max_leaf_size=1000)
    state = tx.init(params)
    # the two leaves of 2000 values stand alone; the small ones share a buffer per dtype
    assert [int(a.shape[1]) for a in state.layout] == [300 + 7 + 5 + 9, 2000, 2000]
    reference = gradxform.adam(0.1)
    ref_state = reference.init(params)
    flat_updates, _ = jax.jit(tx.update)(grads, state, params)
    ref_updates, _ = jax.jit(reference.update)(grads, ref_state, params)
    for a, b in zip(ref_updates, flat_updates):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=ULPS * EPS[a.dtype])
    # without a limit every leaf is packed into one buffer
    packed = gradxform.flatten(gradxform.adam(0.1), max_leaf_size=None).init(params)
    assert [int(a.shape[1]) for a in packed.layout] == [sum(int(np.prod(s)) for s in shapes)]


def test_packed_buffers_are_bounded():
    from gradxform import layout

    shapes = [(layout._BUFFER_SIZE // 2 + 1,), (layout._BUFFER_SIZE // 2,), (10,)]
    groups = layout._pack(shapes, [jnp.dtype("float32")] * 3, max_leaf_size=layout._BUFFER_SIZE)
    assert groups == ((0,), (1, 2))  # 0 and 1 together would exceed the buffer size
    with pytest.raises(ValueError, match="max_leaf_size"):
        gradxform.flatten(gradxform.adam(0.1), max_leaf_size=0)
