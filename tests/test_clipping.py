"""Gradient clipping: torch_compat.nn.utils and gradxform's clip transforms against torch 2.13.

Golden data (``tests/make_golden_clip.py``) runs without torch; the live tests rerun the
same cases with torch when it is installed, and check the errors and edge cases.
"""

from __future__ import annotations

import os
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform
import torch_compat
from torch_compat.nn.utils import (
    clip_grad_norm,
    clip_grad_norm_,
    clip_grad_value_,
    clip_grads_with_norm_,
    get_total_norm,
)

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import clip_cases  # noqa: E402
import make_golden_clip  # noqa: E402

CASES = clip_cases.cases()
IDS = [c["name"] for c in CASES]


def _rtol(dtype: str) -> float:
    return {"float64": 1e-12, "complex128": 1e-12, "float32": 1e-6, "complex64": 1e-6}.get(dtype, 0.0)


def _params(case):
    params = []
    for dtype, grad in zip(case["dtypes"], case["grads"]):
        shape = () if grad is None else grad.shape
        p = torch_compat.Parameter(jnp.zeros(shape, dtype))
        if grad is not None:
            p.grad = jnp.asarray(grad).astype(dtype)
        params.append(p)
    return params


def _ours(case):
    params = _params(case)
    if case["fn"] == "norm":
        total = clip_grad_norm_(params, case["max_norm"], case["norm_type"])
    else:
        assert clip_grad_value_(params, case["clip_value"]) is None
        total = None
    return total, params


def _close(actual, expected, dtype: str, what: str):
    actual = np.asarray(actual).astype(np.complex128 if dtype.startswith("complex") else np.float64)
    expected = np.asarray(expected)
    scale = np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0)
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=what)
    np.testing.assert_array_equal(actual[~finite & ~np.isnan(expected)], expected[~finite & ~np.isnan(expected)], err_msg=what)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=0, atol=_rtol(dtype) * max(scale, 1e-300), err_msg=what)


def _check(case, total, params, expected_norm, norm_dtype, expected_grads):
    if case["fn"] == "norm":
        assert total.shape == ()
        assert str(total.dtype) == norm_dtype
        _close(total, expected_norm, norm_dtype, "total norm")
    for i, (p, dtype, grad) in enumerate(zip(params, case["dtypes"], expected_grads)):
        if grad is None:
            assert p.grad is None
            continue
        assert str(p.grad.dtype) == dtype and p.grad.shape == grad.shape
        _close(p.grad, grad, dtype, f"grad {i}")


@pytest.fixture(scope="module")
def golden():
    return make_golden_clip.read()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_golden(case, golden):
    meta, arrays = golden
    name = case["name"]
    expected = [arrays.get(f"{name}/grad{i}") for i in range(len(case["grads"]))]
    total, params = _ours(case)
    _check(case, total, params, arrays.get(f"{name}/norm"), meta["norm_dtypes"].get(name), expected)


WITH_GRADS = [c for c in CASES if any(g is not None for g in c["grads"])]


@pytest.mark.parametrize("case", WITH_GRADS, ids=[c["name"] for c in WITH_GRADS])
def test_core_transforms_match_golden(case, golden):
    """gradxform.clip_by_global_norm / clip_by_value give torch's numbers, jitted."""
    meta, arrays = golden
    name = case["name"]
    grads = {i: jnp.asarray(g).astype(d) for i, (g, d) in enumerate(zip(case["grads"], case["dtypes"])) if g is not None}
    if case["fn"] == "norm":
        tx = gradxform.clip_by_global_norm(case["max_norm"], case["norm_type"])
        total = jax.jit(lambda g: gradxform.global_norm(g, case["norm_type"]))(grads)
        assert str(total.dtype) == meta["norm_dtypes"][name]
        _close(total, arrays[f"{name}/norm"], str(total.dtype), "global_norm")
    else:
        tx = gradxform.clip_by_value(case["clip_value"])
    out, _ = jax.jit(tx.update)(grads, tx.init(None))
    for i, g in out.items():
        assert g.dtype == grads[i].dtype
        _close(g, arrays[f"{name}/grad{i}"], case["dtypes"][i], f"grad {i}")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_live(case):
    pytest.importorskip("torch")
    total, grads = clip_cases.run_torch(case)
    ours, params = _ours(case)
    _check(case, ours, params, None if total is None else total[0], None if total is None else total[1], grads)


def test_golden_covers_every_case(golden):
    meta, arrays = golden
    assert meta["torch_version"].startswith("2.13")
    for case in CASES:
        for i, g in enumerate(case["grads"]):
            assert (f"{case['name']}/grad{i}" in arrays) == (g is not None)


# -- edge cases and errors, by type and text ---------------------------------------------

NONFINITE_MESSAGE = (
    "The total norm of order {} for gradients from `parameters` is non-finite, so it cannot be "
    "clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
    "`error_if_nonfinite=False`"
)


@pytest.mark.parametrize("norm_type", [2.0, 1, "inf"])
def test_error_if_nonfinite_leaves_gradients_unchanged(norm_type):
    a = torch_compat.Parameter(jnp.zeros(3))
    b = torch_compat.Parameter(jnp.zeros(2))
    a.grad = jnp.array([1.0, jnp.nan, 2.0])
    b.grad = jnp.array([5.0, 6.0])
    with pytest.raises(RuntimeError) as info:
        clip_grad_norm_([a, b], 1.0, norm_type, error_if_nonfinite=True)
    assert str(info.value) == NONFINITE_MESSAGE.format(float(norm_type))
    np.testing.assert_array_equal(np.asarray(b.grad), [5.0, 6.0])
    np.testing.assert_array_equal(np.asarray(a.grad), [1.0, np.nan, 2.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        get_total_norm([a.grad], norm_type, error_if_nonfinite=True)
    # Finite gradients clip normally with the flag on.
    a.grad = jnp.array([3.0, 0.0, 4.0])
    assert float(clip_grad_norm_([a], 1.0, error_if_nonfinite=True)) == 5.0


def test_error_if_nonfinite_message_is_torchs():
    torch = pytest.importorskip("torch")
    p = torch.zeros(2, requires_grad=True)
    p.grad = torch.tensor([float("inf"), 1.0])
    with pytest.raises(RuntimeError) as expected:
        torch.nn.utils.clip_grad_norm_([p], 1.0, 3, error_if_nonfinite=True)
    q = torch_compat.Parameter(jnp.zeros(2))
    q.grad = jnp.array([jnp.inf, 1.0])
    with pytest.raises(RuntimeError) as ours:
        clip_grad_norm_([q], 1.0, 3, error_if_nonfinite=True)
    assert str(ours.value) == str(expected.value)


@pytest.mark.parametrize(
    "norm_type, foreach, message",
    [
        ("inf", None, "_foreach_norm cannot compute the infinity norm on an empty tensor because the operation does not have an identity"),
        (float("inf"), False, "linalg.vector_norm cannot compute the inf norm on an empty tensor because the operation does not have an identity"),
        (float("-inf"), None, "linalg.vector_norm cannot compute the -inf norm on an empty tensor because the operation does not have an identity"),
    ],
)
def test_inf_norm_of_empty_gradient(norm_type, foreach, message):
    p = torch_compat.Parameter(jnp.zeros(0))
    p.grad = jnp.zeros(0)
    q = torch_compat.Parameter(jnp.zeros(2))
    q.grad = jnp.array([3.0, 4.0])
    with pytest.raises(RuntimeError) as info:
        clip_grad_norm_([q, p], 1.0, norm_type, foreach=foreach)
    assert str(info.value) == message
    np.testing.assert_array_equal(np.asarray(q.grad), [3.0, 4.0])


def test_empty_gradient_two_norm_is_zero():
    p = torch_compat.Parameter(jnp.zeros(0))
    p.grad = jnp.zeros(0)
    total = clip_grad_norm_(p, 1.0)
    assert float(total) == 0.0 and p.grad.shape == (0,)


def test_no_gradients():
    params = [torch_compat.Parameter(jnp.ones(2)), torch_compat.Parameter(jnp.ones(3))]
    total = clip_grad_norm_(params, 1.0)
    assert total.shape == () and total.dtype == jnp.float32 and float(total) == 0.0
    assert clip_grad_value_(params, 1.0) is None
    assert all(p.grad is None for p in params)
    assert float(get_total_norm([])) == 0.0 and get_total_norm([]).dtype == jnp.float32


def test_empty_generator_warns():
    with pytest.warns(UserWarning, match=r"^`parameters` is an empty generator, no gradient clipping will occur\.$"):
        total = clip_grad_norm_((p for p in []), 1.0)
    assert float(total) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clip_grad_norm_([], 1.0)  # an empty list does not warn, as in torch


def test_single_parameter_and_generator():
    p = torch_compat.Parameter(jnp.zeros(2))
    p.grad = jnp.array([3.0, 4.0])
    assert float(clip_grad_norm_(p, 10.0)) == 5.0
    np.testing.assert_allclose(np.asarray(p.grad), [3.0, 4.0], rtol=1e-6)  # coef clamped to 1
    p.grad = jnp.array([3.0, 4.0])
    clip_grad_norm_((q for q in [p]), 1.0)
    np.testing.assert_allclose(np.asarray(p.grad), [3.0 / (5 + 1e-6), 4.0 / (5 + 1e-6)], rtol=1e-15)


def test_clip_grad_value_complex_refused():
    p = torch_compat.Parameter(jnp.zeros(2, jnp.complex64))
    p.grad = jnp.array([1 + 1j, 2j], jnp.complex64)
    with pytest.raises(NotImplementedError, match=r"^clamp is not supported for complex types$"):
        clip_grad_value_([p], 0.5)
    np.testing.assert_array_equal(np.asarray(p.grad), [1 + 1j, 2j])
    with pytest.raises(NotImplementedError, match=r"^clamp is not supported for complex types$"):
        gradxform.clip_by_value(0.5).update(p.grad, None)


def test_get_total_norm_and_clip_grads_with_norm_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    grads = [rng.standard_normal(s) for s in [(3, 2), (4,)]]
    for norm_type in (2.0, 1.0, "inf", 0.5):
        expected = torch.nn.utils.get_total_norm([torch.from_numpy(g) for g in grads], norm_type)
        ours = get_total_norm([jnp.asarray(g) for g in grads], norm_type)
        np.testing.assert_allclose(float(ours), expected.item(), rtol=1e-13)
        tparams = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
        params = [torch_compat.Parameter(jnp.zeros(g.shape)) for g in grads]
        for tp, p, g in zip(tparams, params, grads):
            tp.grad = torch.from_numpy(g.copy())
            p.grad = jnp.asarray(g)
        torch.nn.utils.clip_grads_with_norm_(tparams, 0.7, expected)
        assert clip_grads_with_norm_(params, 0.7, ours) is None
        for tp, p in zip(tparams, params):
            np.testing.assert_allclose(np.asarray(p.grad), tp.grad.numpy(), rtol=1e-13)


def test_deprecated_clip_grad_norm_warns():
    p = torch_compat.Parameter(jnp.zeros(1))
    p.grad = jnp.array([2.0])
    with pytest.warns(FutureWarning, match="clip_grad_norm_"):
        assert float(clip_grad_norm(p, 1.0)) == 2.0
    assert float(p.grad[0]) == pytest.approx(1.0 / (2.0 + 1e-6) * 2.0, rel=1e-15)


def test_sparse_gradient_refused():
    from jax.experimental import sparse

    p = torch_compat.Parameter(jnp.zeros(3))
    p.grad = sparse.BCOO.fromdense(jnp.array([0.0, 2.0, 0.0]))
    with pytest.raises(NotImplementedError, match=r"^Could not run 'aten::linalg_vector_norm'"):
        clip_grad_norm_([p], 1.0)
    with pytest.raises(NotImplementedError, match=r"^Could not run 'aten::clamp_min_'"):
        clip_grad_value_([p], 1.0)


def test_nn_namespace():
    import torch_compat.nn as nn

    assert nn.utils.clip_grad_norm_ is clip_grad_norm_
    assert torch_compat.nn is nn


def test_core_clip_under_inject_hyperparams_changes_without_recompiling():
    tx = gradxform.inject_hyperparams(gradxform.clip_by_global_norm, max_norm=1.0)
    traces = []

    @jax.jit
    def step(g, s):
        traces.append(None)
        return tx.update(g, s)

    g = {"a": jnp.array([3.0, 4.0])}
    state = tx.init(g)
    out, state = step(g, state)
    np.testing.assert_allclose(np.asarray(out["a"]), [3 / (5 + 1e-6), 4 / (5 + 1e-6)], rtol=1e-15)
    state = gradxform.set_hyperparams(state, max_norm=2.0)
    out, state = step(g, state)
    np.testing.assert_allclose(np.asarray(out["a"]), [6 / (5 + 1e-6), 8 / (5 + 1e-6)], rtol=1e-15)
    assert len(traces) == 1


def test_core_clip_in_optax_chain():
    optax = pytest.importorskip("optax")
    tx = optax.chain(gradxform.clip_by_global_norm(1.0), gradxform.sgd(0.5))
    params = {"a": jnp.zeros(2)}
    updates, _ = tx.update({"a": jnp.array([3.0, 4.0])}, tx.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["a"]), [-0.5 * 3 / (5 + 1e-6), -0.5 * 4 / (5 + 1e-6)], rtol=1e-15)
