"""The core refuses updates that do not match the parameters (docs/reliability.md, "Bad input").

``update(updates, state, params)`` of every alias checks, while it is traced, that the
updates have the parameters' tree structure, each leaf its parameter's shape and a
dtype of its kind; a mismatch is a ``ValueError`` naming the path. Without ``params``
the per-parameter buffers of the state stand for them. Hypothesis fuzzes the trees.
"""

from __future__ import annotations

import re

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import sparse

import gradxform

ALIASES = (
    "sgd asgd rprop adagrad adadelta rmsprop adam adamw adamax sparse_adam nadam radam adafactor muon lbfgs".split()
)
PREFIX = "updates do not match the parameters: "


def params_for(alias):
    """Two levels of dicts and a list; Muon takes matrices only."""
    if alias == "muon":
        return {"layer1": {"w": jnp.ones((3, 2)), "b": jnp.ones((2, 2))}, "out": [jnp.ones((2, 4))]}
    return {"layer1": {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}, "out": [jnp.ones(4)]}


def make(alias):
    return getattr(gradxform, alias)(0.1) if alias != "lbfgs" else gradxform.lbfgs(max_iter=2)


def update(alias, tx, grads, state, params):
    if alias == "lbfgs":
        value_fn = lambda p: sum(jnp.sum(x**2) for x in jax.tree.leaves(p))  # noqa: E731
        return jax.jit(lambda g, s, p: tx.update(g, s, p, value_fn=value_fn))(grads, state, params)
    return jax.jit(tx.update)(grads, state, params)


def mutations(params):
    """(name, bad updates, exact message) for ``params`` as built by :func:`params_for`."""
    w, b = params["layer1"]["w"], params["layer1"]["b"]
    good = jax.tree.map(jnp.ones_like, params)
    sh = lambda x: str(tuple(x.shape))  # noqa: E731
    wrong_w = jnp.ones(w.shape[::-1] + (1,))
    return [
        (
            "shape",
            {**good, "layer1": {"w": wrong_w, "b": good["layer1"]["b"]}},
            f"at ['layer1']['w'] the parameter has shape {sh(w)} and dtype float64, "
            f"the update has shape {sh(wrong_w)} and dtype float64",
        ),
        (
            "missing-leaf",
            {**good, "layer1": {"w": good["layer1"]["w"]}},
            "the updates have no leaf at ['layer1']['b'], which the parameters have",
        ),
        (
            "extra-leaf",
            {**good, "out": good["out"] + [jnp.ones(3)]},
            "the updates have a leaf at ['out'][1], which the parameters do not",
        ),
        (
            "complex-for-real",
            {**good, "layer1": {"w": good["layer1"]["w"], "b": b.astype(jnp.complex128)}},
            f"at ['layer1']['b'] the parameter has shape {sh(b)} and dtype float64, "
            f"the update has shape {sh(b)} and dtype complex128",
        ),
        (
            "integer",
            {**good, "out": [jnp.ones(params["out"][0].shape, jnp.int32)]},
            f"at ['out'][0] the parameter has shape {sh(params['out'][0])} and dtype float64, "
            f"the update has shape {sh(params['out'][0])} and dtype int32",
        ),
        (
            "boolean",
            {**good, "out": [jnp.ones(params["out"][0].shape, bool)]},
            f"at ['out'][0] the parameter has shape {sh(params['out'][0])} and dtype float64, "
            f"the update has shape {sh(params['out'][0])} and dtype bool",
        ),
        (
            "tuple-for-list",
            {**good, "out": tuple(good["out"])},
            "the updates have the leaves of the parameters but another tree structure: "
            f"{jax.tree.structure({**good, 'out': tuple(good['out'])})} instead of {jax.tree.structure(params)}",
        ),
    ]


def assert_same(before, after):
    chex_leaves = jax.tree.leaves(before), jax.tree.leaves(after)
    assert jax.tree.structure(before) == jax.tree.structure(after)
    for x, y in zip(*chex_leaves):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


MUTATIONS = [m[0] for m in mutations(params_for("adam"))]


@pytest.mark.parametrize("alias", ALIASES)
def test_every_alias_refuses_mismatched_updates_naming_the_path(alias):
    params = params_for(alias)
    tx = make(alias)
    state = tx.init(params)
    kept = jax.tree.map(lambda x: np.array(x), state)
    for name, bad, message in mutations(params):
        with pytest.raises(ValueError) as info:
            update(alias, tx, bad, state, params)
        assert str(info.value) == PREFIX + message, name
        assert_same(kept, state)
    # The same state still takes a good step (the refusal changed nothing).
    grads = jax.tree.map(lambda x: 0.5 * jnp.ones_like(x), params)
    new_updates, _ = update(alias, tx, grads, state, params)
    assert jax.tree.structure(new_updates) == jax.tree.structure(params)
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(new_updates))


@pytest.mark.parametrize("alias", ["adam", "sgd-momentum", "rprop", "adagrad", "rmsprop", "asgd", "muon"])
def test_without_params_the_state_buffers_stand_for_them(alias):
    tx = gradxform.sgd(0.1, momentum=0.9) if alias == "sgd-momentum" else getattr(gradxform, alias)(0.1)
    params = params_for(alias)
    state = tx.init(params)
    for name, bad, message in mutations(params):
        with pytest.raises(ValueError) as info:
            jax.jit(tx.update)(bad, state)
        assert str(info.value) == PREFIX + message, name


def test_without_params_or_buffers_only_the_tree_is_checked():
    """Adafactor's per-parameter state is factored (no buffer of each parameter's shape):
    its per-parameter ``variance`` entries (None for a matrix) give the tree. SGD without momentum keeps nothing."""
    params = params_for("adafactor")
    tx = gradxform.adafactor(0.1)
    state = tx.init(params)
    with pytest.raises(ValueError) as info:
        tx.update({**params, "layer1": {"w": params["layer1"]["w"]}}, state)
    assert str(info.value) == PREFIX + "the updates have no leaf at ['layer1']['b'], which the parameters have"
    tx = gradxform.sgd(0.1)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params))
    assert jax.tree.structure(updates) == jax.tree.structure(params)


def test_check_is_made_while_tracing():
    """make_jaxpr (tracing only, nothing runs) already refuses; a good trace has no extra ops."""
    params = params_for("adam")
    tx = gradxform.adam(0.1)
    state = tx.init(params)
    bad = mutations(params)[0][1]
    with pytest.raises(ValueError, match="^" + re.escape(PREFIX)):
        jax.make_jaxpr(tx.update)(bad, state, params)
    inner = gradxform.adam(0.1)
    good = jax.tree.map(jnp.ones_like, params)
    checked = jax.make_jaxpr(tx.update)(good, state, params)
    # The check adds no equation: the jaxpr of the checked update equals the one traced
    # with the check switched off.
    from gradxform import _treecheck

    original_a, original_b = _treecheck.check_updates, _treecheck.check_against_state
    _treecheck.check_updates = _treecheck.check_against_state = lambda *a, **k: None
    try:
        unchecked = jax.make_jaxpr(inner.update)(good, state, params)
    finally:
        _treecheck.check_updates, _treecheck.check_against_state = original_a, original_b
    assert str(checked) == str(unchecked)


# --------------------------------------------------------------------------- still accepted


def test_flatten_still_works():
    params = params_for("adam")
    tx = gradxform.flatten(gradxform.adam(0.1))
    state = tx.init(params)
    updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), state, params)
    np.testing.assert_allclose(np.asarray(updates["layer1"]["w"]), -0.1)


def test_sparse_gradients_still_work():
    params = {"emb": jnp.zeros((4, 3))}
    tx = gradxform.sparse_adam(0.1)
    state = tx.init(params)
    dense = jnp.zeros((4, 3)).at[1, 2].set(2.0)
    grads = {"emb": sparse.BCOO.fromdense(dense)}
    updates, _ = tx.update(grads, state, params)
    expected = np.zeros((4, 3))
    expected[1, 2] = -0.1
    np.testing.assert_allclose(np.asarray(updates["emb"]), expected, atol=1e-7)
    bad = {"emb": sparse.BCOO.fromdense(jnp.zeros((3, 4)).at[1, 2].set(2.0))}
    with pytest.raises(ValueError, match=re.escape("at ['emb'] the parameter has shape (4, 3)")):
        tx.update(bad, state, params)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_params_with_float32_grads_are_accepted(dtype):
    """Same kind (real floating): mixed precision stays allowed; compute is float32."""
    params = {"w": jnp.ones(3, dtype)}
    tx = gradxform.adam(0.1)
    state = tx.init(params)
    for grad_dtype in (dtype, jnp.float32):
        updates, _ = jax.jit(tx.update)({"w": jnp.ones(3, grad_dtype)}, state, params)
        np.testing.assert_allclose(np.asarray(updates["w"], np.float32), -0.1, rtol=1e-2)


def test_state_dtype_buffers_stand_for_params_without_params():
    params = {"w": jnp.ones(3, jnp.float32)}
    tx = gradxform.adam(0.1, state_dtype=jnp.bfloat16)
    state = tx.init(params)
    assert state.inner_state[0].exp_avg["w"].dtype == jnp.bfloat16
    updates, _ = jax.jit(tx.update)({"w": jnp.ones(3, jnp.float32)}, state)
    np.testing.assert_allclose(np.asarray(updates["w"]), -0.1, rtol=1e-6)
    with pytest.raises(ValueError, match=re.escape("at ['w'] the parameter has shape (3,) and dtype bfloat16")):
        tx.update({"w": jnp.ones(4, jnp.float32)}, state)


def test_complex_params_take_complex_updates():
    params = {"z": jnp.asarray([1 + 1j, 2 - 1j])}
    tx = gradxform.adam(0.1)
    state = tx.init(params)
    updates, _ = tx.update({"z": jnp.asarray([1 + 0j, 1j])}, state, params)
    assert updates["z"].dtype == jnp.complex128
    with pytest.raises(ValueError, match=re.escape("the update has shape (2,) and dtype float64")):
        tx.update({"z": jnp.ones(2)}, state, params)


def test_inside_optax_chain_and_masked():
    import optax

    params = params_for("adam")
    tx = optax.chain(optax.clip_by_global_norm(1.0), gradxform.adam(0.1))
    state = tx.init(params)
    with pytest.raises(ValueError, match=re.escape("the updates have no leaf at ['layer1']['b']")):
        tx.update({**params, "layer1": {"w": params["layer1"]["w"]}}, state, params)
    masked = optax.masked(gradxform.adam(0.1), {"layer1": {"w": True, "b": False}, "out": [True]})
    state = masked.init(params)
    updates, _ = masked.update(jax.tree.map(jnp.ones_like, params), state, params)
    np.testing.assert_array_equal(np.asarray(updates["layer1"]["b"]), 1.0)  # masked out: unchanged


# --------------------------------------------------------------------------- hypothesis

DTYPES = {"float32": jnp.float32, "float64": jnp.float64, "bfloat16": jnp.bfloat16, "complex64": jnp.complex64}
shapes = st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple)
leaves = st.tuples(shapes, st.sampled_from(sorted(DTYPES)))
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "w", "layer1"]), children, min_size=1, max_size=3),
    ),
    max_leaves=5,
)


def build(spec):
    """Arrays from a spec tree of (shape, dtype name) leaves."""
    return jax.tree.map(
        lambda leaf: jnp.full(leaf[0], 0.5, DTYPES[leaf[1]]),
        spec,
        is_leaf=lambda x: isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], str),
    )


def mutate(params, data):
    """A mutation of ``params`` and the path (keystr) its message must name."""
    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    index = data.draw(st.integers(0, len(paths) - 1))
    path, leaf = paths[index]
    kind = data.draw(st.sampled_from(["shape", "integer", "complex-or-real", "drop"]))
    if kind == "drop" and len(paths) < 2:
        kind = "shape"
    if kind == "drop" and isinstance(path[-1], jax.tree_util.SequenceKey):
        parent = params
        for key in path[:-1]:
            parent = parent[key.key] if isinstance(key, jax.tree_util.DictKey) else parent[key.idx]
        if path[-1].idx != len(parent) - 1:
            kind = "shape"  # dropping a list item before the last shifts the later ones
    replacement = {
        "shape": lambda: jnp.zeros(leaf.shape + (2,), leaf.dtype),
        "integer": lambda: jnp.zeros(leaf.shape, jnp.int32),
        "complex-or-real": lambda: jnp.zeros(
            leaf.shape, jnp.float32 if jnp.iscomplexobj(leaf) else jnp.complex64
        ),
    }
    leaves, treedef = jax.tree.flatten(params)
    if kind == "drop":
        # Drop the leaf from its container: a dict key or a list item.
        def drop(tree, keys):
            if len(keys) == 1:
                key = keys[0]
                if isinstance(key, jax.tree_util.DictKey):
                    return {k: v for k, v in tree.items() if k != key.key}
                return [v for i, v in enumerate(tree) if i != key.idx]
            key = keys[0]
            child = tree[key.key] if isinstance(key, jax.tree_util.DictKey) else tree[key.idx]
            new = drop(child, keys[1:])
            if isinstance(key, jax.tree_util.DictKey):
                return {**tree, key.key: new}
            return [new if i == key.idx else v for i, v in enumerate(tree)]

        if not path:  # a single array at the root: change its shape instead
            return jnp.zeros(leaf.shape + (2,), leaf.dtype), "the root"
        dropped = drop(params, list(path))
        # A now-empty container holds no leaves: the first missing path is still this one.
        return dropped, jax.tree_util.keystr(path)
    leaves[index] = replacement[kind]()
    return treedef.unflatten(leaves), jax.tree_util.keystr(path) or "the root"


@hypothesis.settings(max_examples=50, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(spec=trees, data=st.data(), with_params=st.booleans())
def test_fuzz_update_trees(spec, data, with_params):
    params = build(spec)
    tx = gradxform.adam(0.1)
    state = tx.init(params)
    # Tracing is enough (the check is made while tracing): eval_shape compiles nothing.
    run = lambda g: jax.eval_shape(lambda g, s, p: tx.update(g, s, p), g, state, params if with_params else None)  # noqa: E731
    if data.draw(st.booleans()):
        updates, _ = run(jax.tree.map(jnp.ones_like, params))
        assert jax.tree.structure(updates) == jax.tree.structure(params)
        for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params)):
            assert u.shape == p.shape and jnp.iscomplexobj(u) == jnp.iscomplexobj(p)
        return
    bad, where = mutate(params, data)
    with pytest.raises(ValueError) as info:
        run(bad)
    message = str(info.value)
    assert message.startswith(PREFIX)
    assert where in message, (message, where)
