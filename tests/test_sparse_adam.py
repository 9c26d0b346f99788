"""SparseAdam with ``jax.experimental.sparse.BCOO`` gradients.

torch.optim.SparseAdam updates the moments and the parameter only at the entries its
sparse gradient stores (after ``coalesce``, which sums duplicate indices); a stored zero
counts as touched. gradxform.sparse_adam takes BCOO gradients with the same meaning, and
dense gradients whose non-zero entries are the touched ones. Checked here:

* BCOO (element-sparse and row-sparse ``n_dense=1``, with duplicates) equals the dense
  equivalent, and both equal SparseAdam's rule written out in numpy;
* untouched entries of the params and of both moments stay bit-for-bit unchanged;
* a stored zero is touched (its moments decay, its parameter moves), as in torch;
* when torch is importable: the same trajectory as ``torch.optim.SparseAdam`` with
  ``p.grad = torch.sparse_coo_tensor(...)``.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import sparse

import gradxform

try:
    import torch
except ImportError:
    torch = None

jax.config.update("jax_enable_x64", True)  # also done by tests/conftest.py; the f64 checks need it

LR, BETAS, EPS = 0.1, (0.9, 0.999), 1e-8


def moments(state):
    (inner,) = [s for s in state.inner_state if isinstance(s, gradxform.ScaleBySparseAdamState)]
    return inner


# --------------------------------------------------------------------------- reference


class Reference:
    """torch's ``_functional.sparse_adam`` for one parameter, in numpy float64.

    ``touched`` is the boolean mask of the entries the coalesced gradient stores,
    ``grad`` the dense gradient (duplicates summed).
    """

    def __init__(self, param):
        self.param = np.array(param, np.float64)
        self.m = np.zeros_like(self.param)
        self.v = np.zeros_like(self.param)
        self.step = 0

    def update(self, grad, touched, lr=LR, betas=BETAS, eps=EPS):
        self.step += 1
        b1, b2 = betas
        g = np.asarray(grad, np.float64)
        m_new = self.m + (g - self.m) * (1 - b1)
        v_new = self.v + (g * g - self.v) * (1 - b2)
        step_size = lr * np.sqrt(1 - b2**self.step) / (1 - b1**self.step)
        p_new = self.param - step_size * m_new / (np.sqrt(v_new) + eps)
        self.m = np.where(touched, m_new, self.m)
        self.v = np.where(touched, v_new, self.v)
        self.param = np.where(touched, p_new, self.param)


def dense_of(bcoo):
    """The dense gradient of a BCOO array (duplicates summed), built in numpy."""
    out = np.zeros(bcoo.shape, np.asarray(bcoo.data).dtype)
    for index, value in zip(np.asarray(bcoo.indices), np.asarray(bcoo.data)):
        out[tuple(index)] += value
    return out


def touched_mask(indices, shape):
    """Entries named by BCOO indices (``n_sparse`` leading dims; the rest dense)."""
    mask = np.zeros(shape, bool)
    for index in np.asarray(indices):
        mask[tuple(index)] = True
    return mask


# --------------------------------------------------------------------------- gradients

PARAM_SHAPE = (5, 4)
EMBED_SHAPE = (6, 3)


def element_sparse_grads(dtype):
    """Three element-sparse gradients on a (5, 4) parameter; the first has a duplicate."""
    specs = [  # four stored entries each (one compiled step serves them all)
        ([[0, 1], [2, 3], [0, 1], [4, 0]], [0.5, -1.0, 0.25, 2.0]),  # (0, 1) twice: summed to 0.75
        ([[0, 1], [1, 1], [3, 2], [1, 0]], [-0.3, 0.7, 1.1, -2.0]),
        ([[2, 3], [4, 0], [4, 3], [3, 2]], [0.8, -0.4, 0.05, 0.6]),
    ]
    return [
        sparse.BCOO((jnp.asarray(values, dtype), jnp.asarray(indices, jnp.int32)), shape=PARAM_SHAPE)
        for indices, values in specs
    ]


def row_sparse_grads(dtype):
    """Three embedding-style gradients (``n_dense=1``: whole rows); the first repeats row 1,
    the last row 2."""
    rng = np.random.default_rng(0)
    rows = [[1, 4, 1], [0, 4, 3], [5, 2, 2]]
    return [
        sparse.BCOO(
            (jnp.asarray(rng.normal(size=(len(r), EMBED_SHAPE[1])), dtype), jnp.asarray(r, jnp.int32)[:, None]),
            shape=EMBED_SHAPE,
        )
        for r in rows
    ]


def start_params(shape, dtype):
    return jnp.asarray(np.arange(np.prod(shape)).reshape(shape) / 7.0 - 1.0, dtype)


# --------------------------------------------------------------------------- BCOO vs dense vs math

TX = gradxform.sparse_adam(LR, BETAS, EPS)
TX_MAXIMIZE = gradxform.sparse_adam(LR, BETAS, EPS, maximize=True)


def host(tree):
    return jax.tree.map(np.asarray, tree)


@jax.jit
def _step(grads, state, params):
    updates, state = TX.update(grads, state, params)
    return gradxform.apply_updates(params, updates), updates, state


def step(grads, state, params):
    """One jitted SparseAdam step: (new params, updates, new state)."""
    return _step(grads, state, params)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("kind", ["element-sparse", "row-sparse"])
def test_bcoo_equals_dense_and_the_rule(kind, dtype):
    grads = element_sparse_grads(dtype) if kind == "element-sparse" else row_sparse_grads(dtype)
    shape = grads[0].shape
    params = start_params(shape, dtype)

    p_sparse, s_sparse = params, TX.init(params)
    p_dense, s_dense = params, TX.init(params)
    reference = Reference(params)
    rtol = 1e-12 if dtype == jnp.float64 else 2e-6
    atol = 0 if dtype == jnp.float64 else 1e-7
    for g in grads:
        dense = dense_of(g)
        touched = touched_mask(g.indices, shape)
        assert np.all((dense != 0) == touched)  # no stored zeros in these
        m, v = moments(host(s_sparse))[1:]
        before = (np.asarray(p_sparse), m, v)

        p_sparse, _, s_sparse = step(g, s_sparse, p_sparse)
        p_dense, _, s_dense = step(jnp.asarray(dense), s_dense, p_dense)
        reference.update(dense, touched)

        # BCOO and its dense equivalent: the same numbers.
        chex.assert_trees_all_equal(host(p_sparse), host(p_dense))
        chex.assert_trees_all_equal(host(s_sparse), host(s_dense))
        # Untouched entries: bit for bit as before.
        m, v = moments(host(s_sparse))[1:]
        after = (np.asarray(p_sparse), m, v)
        for old, new in zip(before, after):
            np.testing.assert_array_equal(new[~touched], old[~touched])
        # Touched ones moved.
        assert np.all(after[0][touched] != before[0][touched])
        # SparseAdam's rule.
        np.testing.assert_allclose(after[0], reference.param, rtol=rtol, atol=atol)
        np.testing.assert_allclose(after[1], reference.m, rtol=rtol, atol=atol)
        np.testing.assert_allclose(after[2], reference.v, rtol=rtol, atol=atol * 1e-2)
        assert p_sparse.dtype == dtype
    assert int(jax.tree.leaves(moments(s_sparse).step)[0]) == len(grads)


def test_duplicates_are_summed():
    """(0, 1) stored twice, 0.5 and 0.25: as one entry of 0.75."""
    dup = sparse.BCOO((jnp.asarray([0.5, 0.25]), jnp.asarray([[0, 1], [0, 1]])), shape=(2, 2))
    single = sparse.BCOO((jnp.asarray([0.75]), jnp.asarray([[0, 1]])), shape=(2, 2))
    params = jnp.ones((2, 2))
    out_dup = host(step(dup, TX.init(params), params))
    out_single = host(step(single, TX.init(params), params))
    chex.assert_trees_all_equal(out_dup, out_single)
    exp_avg = moments(out_dup[2]).exp_avg
    np.testing.assert_allclose(exp_avg[0, 1], 0.1 * 0.75, rtol=1e-12)
    assert np.count_nonzero(exp_avg) == 1


def test_stored_zero_counts_as_touched():
    """After a step that touches (0, 0), a gradient that stores 0 there still decays its
    moments and moves the parameter (as torch, which never looks at stored values); the
    dense gradient with a 0 there leaves it alone."""
    params = jnp.asarray([[1.0, 2.0], [3.0, 4.0]])
    reference = Reference(params)
    first = sparse.BCOO((jnp.asarray([1.0, -2.0]), jnp.asarray([[0, 0], [1, 1]])), shape=(2, 2))
    params, _, state = step(first, TX.init(params), params)
    reference.update(dense_of(first), touched_mask(first.indices, (2, 2)))
    np.testing.assert_allclose(np.asarray(params), reference.param, rtol=1e-12)

    stored_zero = sparse.BCOO((jnp.asarray([0.0, 0.5]), jnp.asarray([[0, 0], [1, 1]])), shape=(2, 2))
    p_sparse, u_sparse, s_sparse = host(step(stored_zero, state, params))
    p_dense, u_dense, s_dense = host(step(jnp.asarray(dense_of(stored_zero)), state, params))
    reference.update(dense_of(stored_zero), touched_mask(stored_zero.indices, (2, 2)))
    params, state = host(params), host(state)

    np.testing.assert_allclose(p_sparse, reference.param, rtol=1e-12)
    np.testing.assert_allclose(moments(s_sparse).exp_avg, reference.m, rtol=1e-12)
    np.testing.assert_allclose(moments(s_sparse).exp_avg_sq, reference.v, rtol=1e-12)
    # (0, 0): touched through the stored zero, so it moved and its moments decayed ...
    assert p_sparse[0, 0] != params[0, 0]
    np.testing.assert_allclose(moments(s_sparse).exp_avg[0, 0], 0.9 * moments(state).exp_avg[0, 0], rtol=1e-12)
    np.testing.assert_allclose(moments(s_sparse).exp_avg_sq[0, 0], 0.999 * moments(state).exp_avg_sq[0, 0], rtol=1e-12)
    # ... while the dense gradient (which has no stored entries) leaves it untouched.
    assert u_dense[0, 0] == 0.0 and p_dense[0, 0] == params[0, 0]
    assert moments(s_dense).exp_avg[0, 0] == moments(state).exp_avg[0, 0]
    assert u_dense[1, 1] == u_sparse[1, 1]


def test_mixed_pytree_of_sparse_and_dense_gradients():
    params = {"embedding": start_params(EMBED_SHAPE, jnp.float64), "dense": jnp.asarray([1.0, -1.0, 0.5])}
    grads = {"embedding": row_sparse_grads(jnp.float64)[0], "dense": jnp.asarray([0.2, 0.0, -0.1])}
    _, u, _ = host(step(grads, TX.init(params), params))
    _, u_e, _ = host(step(grads["embedding"], TX.init(params["embedding"]), params["embedding"]))
    _, u_d, _ = host(step(grads["dense"], TX.init(params["dense"]), params["dense"]))
    np.testing.assert_array_equal(u["embedding"], u_e)
    np.testing.assert_array_equal(u["dense"], u_d)
    assert u["dense"][1] == 0.0  # a dense zero is untouched
    # The first (Sparse)Adam step moves each touched entry by lr * sign(g), up to eps
    # (eps against |g| sqrt(1 - beta2)).
    np.testing.assert_allclose(u["dense"][[0, 2]], [-LR, LR], rtol=1e-5)
    touched = touched_mask(grads["embedding"].indices, EMBED_SHAPE)
    assert np.all(u["embedding"][~touched] == 0) and np.all(u["embedding"][touched] != 0)


def test_maximize_with_bcoo_negates_the_gradient():
    g = element_sparse_grads(jnp.float64)[0]
    negated = sparse.BCOO((-g.data, g.indices), shape=g.shape)
    params = start_params(PARAM_SHAPE, jnp.float64)
    u_max, s_max = host(jax.jit(TX_MAXIMIZE.update)(g, TX_MAXIMIZE.init(params), params))
    _, u_neg, s_neg = host(step(negated, TX.init(params), params))
    np.testing.assert_array_equal(u_max, u_neg)
    chex.assert_trees_all_equal(moments(s_max), moments(s_neg))
    assert np.any(u_max != 0)


def test_bf16_params_with_bcoo_gradient_keep_dtype():
    params = start_params(EMBED_SHAPE, jnp.bfloat16)
    g = row_sparse_grads(jnp.bfloat16)[1]
    tx = gradxform.sparse_adam(LR, state_dtype=jnp.float32)
    updates, state = jax.jit(tx.update)(g, tx.init(params), params)
    new = gradxform.apply_updates(params, updates)
    assert new.dtype == jnp.bfloat16
    assert moments(state).exp_avg.dtype == jnp.float32
    touched = touched_mask(g.indices, EMBED_SHAPE)
    np.testing.assert_array_equal(np.asarray(new)[~touched], np.asarray(params)[~touched])
    assert np.all(np.asarray(new)[touched] != np.asarray(params)[touched])


# --------------------------------------------------------------------------- against torch


def torch_sparse(bcoo, torch_dtype):
    """The same gradient as a torch sparse COO tensor (hybrid when ``n_dense=1``)."""
    indices = torch.tensor(np.asarray(bcoo.indices).T.copy(), dtype=torch.int64)
    values = torch.tensor(np.asarray(bcoo.data), dtype=torch_dtype)
    return torch.sparse_coo_tensor(indices, values, bcoo.shape, check_invariants=True)


def with_stored_zero_and_cancelling_duplicates(dtype):
    """Element-sparse gradients where a later step stores a 0 at an earlier-touched entry,
    and another stores a pair of duplicates that sum to 0."""
    specs = [
        ([[0, 1], [2, 3], [4, 0], [1, 2]], [0.5, -1.0, 2.0, 0.1]),
        ([[0, 1], [1, 1], [2, 3], [1, 2]], [0.0, 0.7, 1.1, 0.2]),  # (0, 1): a stored zero
        ([[4, 0], [4, 0], [3, 3], [1, 2]], [0.4, -0.4, 0.3, 0.3]),  # (4, 0): duplicates summing to 0
    ]
    return [
        sparse.BCOO((jnp.asarray(values, dtype), jnp.asarray(indices, jnp.int32)), shape=PARAM_SHAPE)
        for indices, values in specs
    ]


@pytest.mark.skipif(torch is None, reason="torch is not installed")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["element-sparse", "row-sparse", "stored-zeros"])
def test_matches_torch_sparse_adam(kind, dtype):
    jdtype, tdtype = getattr(jnp, dtype), getattr(torch, dtype)
    grads = {
        "element-sparse": element_sparse_grads,
        "row-sparse": row_sparse_grads,
        "stored-zeros": with_stored_zero_and_cancelling_duplicates,
    }[kind](jdtype)
    shape = grads[0].shape
    params = start_params(shape, jdtype)

    torch_param = torch.nn.Parameter(torch.tensor(np.asarray(params), dtype=tdtype))
    torch_opt = torch.optim.SparseAdam([torch_param], lr=LR, betas=BETAS, eps=EPS)
    state = TX.init(params)

    rtol = 1e-12 if dtype == "float64" else 1e-5
    atol = 0 if dtype == "float64" else 1e-7
    for g in grads:
        torch_param.grad = torch_sparse(g, tdtype)
        torch_opt.step()
        params, _, state = step(g, state, params)

        torch_state = torch_opt.state[torch_param]
        ours = moments(host(state))
        np.testing.assert_allclose(np.asarray(params), torch_param.detach().numpy(), rtol=rtol, atol=atol)
        np.testing.assert_allclose(ours.exp_avg, torch_state["exp_avg"].numpy(), rtol=rtol, atol=atol)
        np.testing.assert_allclose(ours.exp_avg_sq, torch_state["exp_avg_sq"].numpy(), rtol=rtol, atol=atol * 1e-2)
        # The same entries left exactly alone.
        np.testing.assert_array_equal(ours.exp_avg_sq == 0, torch_state["exp_avg_sq"].numpy() == 0)
    assert int(jax.tree.leaves(moments(state).step)[0]) == torch_state["step"] == len(grads)

    if kind == "stored-zeros":
        # The stored zero at (0, 1) in step 2 and the cancelling duplicates at (4, 0) in
        # step 3 were touched: their first moments decayed rather than staying put.
        m = moments(host(state)).exp_avg
        assert m[0, 1] != 0 and m[4, 0] != 0
        ref = Reference(start_params(shape, jnp.float64))
        for g in grads:
            ref.update(dense_of(g), touched_mask(g.indices, shape))
        np.testing.assert_allclose(m, ref.m, rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-7)
