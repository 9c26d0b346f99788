"""Private numerical helpers: torch's ``lerp`` bit for bit, ``max_abs`` as ``jnp.max(jnp.abs(v))``,
``all_finite``, and the per-leaf cost of a traced step (what a tree of many leaves pays in tracing, see
docs/performance.md)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform
from gradxform import _numerics


def torch_lerp(start, end, weight):
    """torch's CPU ``lerp`` kernel as written: both of its formulas, one chosen by ``|weight|``."""
    diff = end - start
    return jnp.where(jnp.abs(weight) < 0.5, start + weight * diff, end - diff * (1 - weight))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lerp_is_torchs_two_formulas_bit_for_bit(dtype):
    """One formula with a chosen base and coefficient gives, compiled by XLA, exactly the
    numbers of torch's two formulas compiled by XLA (signed zeros and large values too)."""
    rng = np.random.default_rng(0)
    start = (rng.standard_normal(257) * 10).astype(dtype)
    end = (rng.standard_normal(257) * 10).astype(dtype)
    start[:3], end[:3] = [0.0, -0.0, 1e30], [-0.0, 0.0, -1e30]
    weights = [0.0, 0.1, 0.4999999, 0.5, 0.5000001, 0.9, 0.999, 1.0, 1.5, -0.3, -0.7, 1e-8]
    ours, theirs = jax.jit(_numerics.lerp), jax.jit(torch_lerp)
    for weight in weights:
        args = (jnp.asarray(start), jnp.asarray(end), jnp.asarray(dtype(weight)))
        got, want = np.asarray(ours(*args)), np.asarray(theirs(*args))
        np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}"), err_msg=str(weight))


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32, jnp.float16, jnp.bfloat16])
def test_max_abs_is_the_largest_magnitude(dtype):
    """The largest magnitude, exactly (numpy's), for signed zeros, subnormals, huge values
    and infinities in every position; jnp's ``max(abs(v))`` bit for bit but where that
    magnitude is subnormal (XLA's CPU maximum reads subnormals as zero); NaN wherever one
    is present; 0 for an empty vector."""
    info = jnp.finfo(dtype)
    specials = [0.0, -0.0, float(info.smallest_subnormal), -float(info.smallest_subnormal), float(info.tiny),
                -float(info.max), float(info.max), 1.0, -1.0]
    rng = np.random.default_rng(1)
    ours, jnps = jax.jit(_numerics.max_abs), jax.jit(lambda v: jnp.max(jnp.abs(v)))
    cases = [np.asarray(specials), rng.standard_normal(1000) * 1e3, -np.abs(rng.standard_normal(37)),
             np.asarray([-0.0, 0.0]), np.asarray([-np.inf, 3.0]), np.asarray([2.0, np.inf, -5.0])]
    for k in range(len(specials)):  # each special value as the largest, at each end
        cases.append(np.asarray(specials[: k + 1]))
        cases.append(np.asarray(specials[: k + 1][::-1]))
    bits = lambda a: np.asarray(a).view(f"u{np.asarray(a).itemsize}")  # noqa: E731
    for case in cases:
        v = jnp.asarray(case, dtype)
        got, exact = np.asarray(ours(v)), np.max(np.abs(np.asarray(v)))
        assert got.dtype == exact.dtype
        np.testing.assert_array_equal(bits(got), bits(exact), err_msg=str(case))
        if not 0 < exact < info.tiny:
            np.testing.assert_array_equal(bits(got), bits(jnps(v)), err_msg=str(case))
    for where in (0, 500, 999):
        v = rng.standard_normal(1000)
        v[where] = np.nan
        assert np.isnan(np.asarray(ours(jnp.asarray(v, dtype))))
    empty = ours(jnp.zeros(0, dtype))
    assert empty.dtype == dtype and float(empty) == 0.0


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32, jnp.float16, jnp.bfloat16])
def test_all_finite_finds_any_infinity_or_nan_in_any_vector(dtype):
    """False exactly when some entry of some vector is infinite or NaN, wherever it is,
    also beside the largest finite values and signed zeros (whose ``v * 0`` are zeros);
    True for empty vectors; vectors of different shapes are refused."""
    info = jnp.finfo(dtype)
    rng = np.random.default_rng(2)
    check = jax.jit(_numerics.all_finite)
    for n in (1, 7, 1000):
        base = rng.standard_normal(n)
        base[0], base[-1] = float(info.max), -0.0
        a, b = jnp.asarray(base, dtype), jnp.asarray(-base[::-1], dtype)
        assert bool(check(a, b)) and bool(check(a))
        for bad in (np.inf, -np.inf, np.nan):
            for where in {0, n // 2, n - 1}:
                broken = base.copy()
                broken[where] = bad
                broken = jnp.asarray(broken, dtype)
                assert not bool(check(broken)) and not bool(check(a, broken)) and not bool(check(broken, b))
    assert bool(check(jnp.zeros(0, dtype), jnp.zeros(0, dtype)))
    with pytest.raises(ValueError, match="different shapes"):
        _numerics.all_finite(jnp.zeros(3, dtype), jnp.zeros(1, dtype))


def _equations_per_leaf(tx, leaves):
    """Equations of the traced ``update`` per leaf, from two tree sizes (the fixed part cancels)."""

    def count(n):
        params = [jnp.zeros(4, jnp.float32) for _ in range(n)]
        state = tx.init(params)
        jaxpr = jax.make_jaxpr(lambda g, s, p: tx.update(g, s, p))(params, state, params)
        return len(jaxpr.jaxpr.eqns)

    return (count(2 * leaves) - count(leaves)) / leaves


def test_adam_traces_its_hyperparameter_casts_once_per_dtype_not_per_leaf():
    # Per leaf: the moments (lerp, square average), the direction, the step counter and
    # its two bias corrections, and -lr times the direction; the casts of betas, eps and
    # lr, and 1 - beta, are traced once for the whole tree (with float64 hyperparameters,
    # as the tests run: 29 equations per leaf; 38 when each leaf cast them itself).
    assert _equations_per_leaf(gradxform.adam(1e-3), 8) <= 29
