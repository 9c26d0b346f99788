"""gradxform.minimize(..., bounds=(lower, upper)): L-BFGS-B against analytic solutions and scipy.

The analytic tests need nothing but JAX. scipy (a dependency of JAX, so always present)
runs beside it on the problems of lbfgsb_problems.py with the same options: the same
solution to 1e-6 and at most 1.2x scipy's function evaluations.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform
import lbfgsb_problems
from gradxform.optimizers import lbfgs as lbfgs_module

OPTIONS = lbfgsb_problems.SCIPY_DEFAULTS


def separable(x):
    """sum((x - target)²) over a pytree: the box solution is clip(target, lower, upper)."""
    return sum(jnp.sum((leaf - 1.5) ** 2) for leaf in jax.tree.leaves(x))


def test_scipy_bounds_problem_analytic():
    # scipy's TestLBFGSBBounds: (x0² + x1²)/2, x0 >= 1 (one-sided), x1 unbounded.
    result = gradxform.minimize(
        lambda x: 0.5 * jnp.sum(x**2), jnp.array([0.0, -1.0]), bounds=(jnp.array([1.0, -jnp.inf]), jnp.inf), **OPTIONS
    )
    np.testing.assert_allclose(result.params, [1.0, 0.0], atol=1e-6)
    assert bool(result.converged) and int(result.status) == lbfgs_module.GRADIENT
    np.testing.assert_allclose(result.grad, [1.0, 0.0], atol=1e-6)  # the plain gradient, as scipy's jac


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_pytree_box_analytic(dtype):
    x0 = {"w": jnp.zeros((2, 3), dtype), "b": jnp.array([5.0, -5.0, 0.0], dtype)}
    lower = {"w": -1.0, "b": jnp.array([-jnp.inf, -2.0, 0.0], dtype)}
    upper = {"w": jnp.array([0.5, 1.0, 2.0], dtype), "b": 1.0}  # rows broadcast against (2, 3)
    result = gradxform.minimize(separable, x0, bounds=(lower, upper), **OPTIONS)
    np.testing.assert_allclose(result.params["w"], np.tile([0.5, 1.0, 1.5], (2, 1)), atol=1e-6)
    np.testing.assert_allclose(result.params["b"], [1.0, 1.0, 1.0], atol=1e-6)
    assert result.params["w"].dtype == dtype and result.value.dtype == dtype
    assert bool(result.converged), result.message


def test_x0_outside_bounds_is_projected():
    lower, upper = jnp.array([0.0, -1.0, 2.0]), jnp.array([1.0, 1.0, 3.0])
    solve = jax.jit(lambda x0: gradxform.minimize(lambda x: jnp.sum(jnp.sin(x) * x), x0, bounds=(lower, upper), **OPTIONS))
    x0 = jnp.array([5.0, -7.0, 0.0])
    outside, inside = solve(x0), solve(jnp.clip(x0, lower, upper))
    np.testing.assert_array_equal(outside.params, inside.params)
    assert int(outside.n_evals) == int(inside.n_evals)
    assert bool(jnp.all((outside.params >= lower) & (outside.params <= upper)))


# The three largest problems compile for 7-8 s each: they run in CI's slow set.
SLOW_PROBLEMS = {"quadratic-box-50", "nnls-60x30", "rosenbrock-box-100"}


@pytest.mark.parametrize(
    "problem",
    [
        pytest.param(p, id=p[0], marks=[pytest.mark.slow] if p[0] in SLOW_PROBLEMS else [])
        for p in lbfgsb_problems.problems()
    ],
)
def test_against_scipy(problem):
    scipy_optimize = pytest.importorskip("scipy.optimize")
    name, fun, x0, lower, upper = problem
    result = gradxform.minimize(fun, jnp.asarray(x0), bounds=(jnp.asarray(lower), jnp.asarray(upper)), **OPTIONS)
    value_and_grad = jax.jit(jax.value_and_grad(fun))
    reference = scipy_optimize.minimize(
        lambda x: [np.asarray(v) for v in value_and_grad(x)],
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=scipy_optimize.Bounds(lower, upper),
    )
    np.testing.assert_allclose(result.params, reference.x, atol=1e-6, rtol=0)
    assert int(result.n_evals) <= 1.2 * reference.nfev
    # scipy's success (projected gradient or relative reduction) is status 0 or 3 here.
    assert reference.success and int(result.status) in (lbfgs_module.GRADIENT, lbfgs_module.VALUE_CHANGE)
    assert bool(result.converged) == (int(result.status) == lbfgs_module.GRADIENT)
    params = np.asarray(result.params)
    assert np.all(params >= lower) and np.all(params <= upper)
    if name == "mixed-bounds-6":
        assert params[3] == 1.0  # lower == upper: never moves
        assert params[0] == 2.0 and params[4] == 0.25  # held at its upper and at its lower bound


def test_float32_against_scipy():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    name, fun, x0, lower, upper = next(p for p in lbfgsb_problems.problems() if p[0] == "rosenbrock-box-10")
    bounds = (jnp.asarray(lower, jnp.float32), jnp.asarray(upper, jnp.float32))
    result = gradxform.minimize(fun, jnp.asarray(x0, jnp.float32), bounds=bounds, **OPTIONS)
    reference = scipy_optimize.minimize(
        lambda x: [np.asarray(v) for v in jax.value_and_grad(fun)(x)], x0, jac=True, method="L-BFGS-B",
        bounds=scipy_optimize.Bounds(lower, upper),
    )  # fmt: skip
    assert result.params.dtype == jnp.float32 and result.value.dtype == jnp.float32
    np.testing.assert_allclose(result.params, reference.x, atol=1e-3)


def test_jit_with_traced_bounds_and_args():
    @jax.jit
    def solve(x0, lower, upper, target):
        return gradxform.minimize(lambda x, t: jnp.sum((x - t) ** 2), x0, target, bounds=(lower, upper), **OPTIONS)

    result = solve(jnp.zeros(4), jnp.full(4, -1.0), jnp.array([1.0, 1.0, 0.5, jnp.inf]), jnp.array([3.0, -3.0, 0.2, 7.0]))
    np.testing.assert_allclose(result.params, [1.0, -1.0, 0.2, 7.0], atol=1e-6)
    assert int(result.status) == lbfgs_module.GRADIENT and result.message == lbfgs_module.STATUS_MESSAGES[0]


def test_vmap_over_starts():
    starts = jnp.array([[0.0, 0.0], [0.9, -0.9], [-3.0, 4.0]])
    solve = jax.vmap(lambda x0: gradxform.minimize(separable, x0, bounds=(-1.0, 1.0), **OPTIONS))
    result = solve(starts)
    np.testing.assert_allclose(result.params, np.ones((3, 2)), atol=1e-6)
    assert result.converged.tolist() == [True, True, True]


def test_has_aux():
    result = gradxform.minimize(
        lambda x: (separable(x), {"norm": jnp.linalg.norm(x)}), jnp.zeros(3), bounds=(0.0, 1.0), has_aux=True, **OPTIONS
    )
    np.testing.assert_allclose(result.aux["norm"], np.sqrt(3.0), rtol=1e-9)


def test_budget_statuses():
    x0 = jnp.tile(jnp.array([-1.2, 1.0]), 5)
    solve = jax.jit(
        lambda max_iter, max_eval: gradxform.minimize(
            lbfgsb_problems.rosenbrock, x0, bounds=(-1.5, 0.8), **dict(OPTIONS, max_iter=max_iter, max_eval=max_eval)
        )
    )
    result = solve(3, 100)
    assert int(result.n_iter) == 3 and int(result.status) == lbfgs_module.MAX_ITER and not bool(result.converged)
    result = solve(100, 5)
    assert int(result.status) == lbfgs_module.MAX_EVAL and 5 <= int(result.n_evals) < 5 + 20
    result = solve(0, 100)
    assert int(result.n_evals) == 1 and int(result.n_iter) == 0 and int(result.status) == lbfgs_module.MAX_ITER
    np.testing.assert_array_equal(result.params, jnp.clip(x0, -1.5, 0.8))


def test_no_descent_left_stops_with_line_search_status():
    # At the lower bound with the gradient pushing outwards nothing can move; a negative
    # tolerance_grad disables the gradient test, so the search has no downhill direction.
    result = gradxform.minimize(jnp.sum, jnp.zeros(3), bounds=(0.0, 1.0), **dict(OPTIONS, tolerance_grad=-1.0))
    assert int(result.status) == lbfgs_module.LINE_SEARCH and int(result.n_evals) == 1
    assert "line search" in result.message


def test_non_finite_region_is_backed_out_of():
    # NaN beyond x = 1: the line search halves its step back into the finite region.
    fun = lambda x: jnp.where(jnp.all(x <= 1.0), jnp.sum((x - 2.0) ** 2), jnp.nan)  # noqa: E731
    result = gradxform.minimize(fun, jnp.zeros(2), bounds=(-10.0, 10.0), **OPTIONS)
    assert bool(jnp.all(jnp.isfinite(result.params))) and bool(jnp.isfinite(result.value))
    assert float(result.value) < float(fun(jnp.zeros(2)))


def test_errors_name_the_path():
    x0 = {"a": jnp.zeros(2), "b": jnp.zeros(3)}
    with pytest.raises(ValueError, match=r"lower > upper at 'b'\[1\]"):
        gradxform.minimize(separable, x0, bounds=({"a": 0.0, "b": jnp.array([0.0, 2.0, 0.0])}, 1.0))
    with pytest.raises(ValueError, match=r"x0 has 'b', which lower lacks"):
        gradxform.minimize(separable, x0, bounds=({"a": 0.0}, 1.0))
    with pytest.raises(ValueError, match=r"upper has 'c', which x0 lacks"):
        gradxform.minimize(separable, x0, bounds=(0.0, {"a": 1.0, "b": 1.0, "c": 1.0}))
    with pytest.raises(ValueError, match=r"upper at 'a' has shape \(3,\)"):
        gradxform.minimize(separable, x0, bounds=(0.0, {"a": jnp.ones(3), "b": 1.0}))
    with pytest.raises(ValueError, match="NaN bound at 'a'"):
        gradxform.minimize(separable, x0, bounds=({"a": jnp.nan, "b": 0.0}, 1.0))
    with pytest.raises(ValueError, match="pair"):
        gradxform.minimize(separable, x0, bounds=(0.0,))


def test_options_that_do_not_apply_are_refused():
    x0 = jnp.zeros(2)
    with pytest.raises(ValueError, match="line_search_fn does not apply"):
        gradxform.minimize(separable, x0, bounds=(0.0, 1.0), line_search_fn="strong_wolfe")
    with pytest.raises(ValueError, match="lr does not apply"):
        gradxform.minimize(separable, x0, bounds=(0.0, 1.0), lr=0.5)
    with pytest.raises(ValueError, match="state does not apply"):
        gradxform.minimize(separable, x0, bounds=(0.0, 1.0), state=gradxform.minimize(separable, x0).state)
    with pytest.raises(ValueError, match="complex"):
        gradxform.minimize(lambda z: jnp.sum(jnp.abs(z) ** 2), jnp.ones(2, jnp.complex64), bounds=(0.0, 1.0))


@pytest.mark.slow  # 20 s of compiling (test_minimize_implicit checks the bounded rule by default)
def test_implicit_derivatives_through_a_bounded_solve():
    # min sum((x - a)²) with x >= 0 and x <= 1: x* = clip(a, 0, 1), so dx*/da is 1 where a
    # is inside the box and 0 where its bound is active. The loop is not differentiated
    # (reverse mode through lax.while_loop would raise).
    def solution(a):
        f = lambda x, a: jnp.sum((x - a) ** 2)  # noqa: E731
        return gradxform.minimize(f, jnp.full(4, 0.5), a, bounds=(0.0, 1.0), **OPTIONS).params

    a = jnp.array([0.25, -2.0, 0.75, 3.0])
    np.testing.assert_allclose(solution(a), [0.25, 0.0, 0.75, 1.0], atol=1e-6)
    np.testing.assert_allclose(jax.jacrev(solution)(a), np.diag([1.0, 0.0, 1.0, 0.0]), atol=1e-5)
    _, tangent = jax.jvp(solution, (a,), (jnp.ones(4),))
    np.testing.assert_allclose(tangent, [1.0, 0.0, 1.0, 0.0], atol=1e-5)
    # The value's derivative too: d/da sum((x* - a)²) = -2 (x* - a), nonzero only where active.
    value = lambda a: gradxform.minimize(  # noqa: E731
        lambda x, a: jnp.sum((x - a) ** 2), jnp.full(4, 0.5), a, bounds=(0.0, 1.0), **OPTIONS
    ).value
    np.testing.assert_allclose(jax.grad(value)(a), [0.0, -4.0, 0.0, 4.0], atol=1e-5)


def test_callback_reports_each_bounded_iteration():
    seen = []
    result = gradxform.minimize(
        lambda x: jnp.sum(jnp.arange(1.0, 5.0) * (x - 3.0) ** 2),
        jnp.zeros(4),
        bounds=(-1.0, 2.0),
        callback=lambda progress: seen.append((progress.n_iter, float(progress.value))),
        **OPTIONS,
    )
    assert [n for n, _ in seen] == list(range(1, int(result.n_iter) + 1))
    assert seen[-1][1] == pytest.approx(float(result.value))
