"""gradxform.minimize beyond one torch step (issue 19): derivatives of the solution with
respect to ``*args`` by the implicit function theorem (forward and reverse mode, bounds),
batches under ``jax.vmap``, ``minimize_multistart``, scipy's ``tol=`` and ``callback``.

The references are closed forms (ridge regression, a bounded quadratic whose active set is
chosen by construction, a double well) and central finite differences of converged
solves; none comes from the code under test. x64 is on (conftest).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform
from gradxform._implicit import solution_with_implicit_grad

TIGHT = dict(max_iter=200, line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=0.0)

rng = np.random.default_rng(0)
A = jnp.asarray(rng.normal(size=(8, 4)))
B = jnp.asarray(rng.normal(size=8))


def ridge(w, lam, b):
    return 0.5 * jnp.sum((A @ w - b) ** 2) + 0.5 * lam * jnp.sum(w**2)


def ridge_solution(lam, b):
    return jnp.linalg.solve(A.T @ A + lam * jnp.eye(4), A.T @ b)


@jax.jit
def solve_ridge(lam, b):
    return gradxform.minimize(ridge, jnp.zeros(4), lam, b, **TIGHT).params


def test_ridge_derivatives_match_the_closed_form_in_both_modes():
    lam = 0.7
    hessian_inverse = np.linalg.inv(np.asarray(A.T @ A) + lam * np.eye(4))
    w = ridge_solution(lam, B)
    np.testing.assert_allclose(solve_ridge(lam, B), w, rtol=1e-9)
    # dw/dlam = -(A'A + lam I)^-1 w ; dw/db = (A'A + lam I)^-1 A'
    d_lam = -hessian_inverse @ np.asarray(w)
    d_b = hessian_inverse @ np.asarray(A.T)
    for jacobian in (jax.jacrev, jax.jacfwd):
        got_lam, got_b = jacobian(solve_ridge, argnums=(0, 1))(lam, B)
        np.testing.assert_allclose(got_lam, d_lam, rtol=1e-8)
        np.testing.assert_allclose(got_b, d_b, rtol=1e-8, atol=1e-12)
    _, tangent = jax.jvp(solve_ridge, (lam, B), (1.0, jnp.zeros(8)))
    np.testing.assert_allclose(tangent, d_lam, rtol=1e-8)


def tilted(x, theta):
    # Not quadratic: cosh wells coupled by a cross term, tilted by theta.
    return jnp.sum(jnp.cosh(x - theta[0])) + theta[1] * jnp.sum(x**2) + 0.3 * x[0] * x[1] ** 2


@pytest.mark.slow  # 10-20 s of compiling: in CI's slow set
def test_nonquadratic_solution_value_grad_and_aux_derivatives():
    theta = jnp.array([0.4, 0.8])

    def fun(x, theta):
        return tilted(x, theta), {"norm2": jnp.sum(x**2)}

    @jax.jit
    def solve(theta):
        result = gradxform.minimize(fun, jnp.array([1.0, -1.0]), theta, has_aux=True, **TIGHT)
        return result.params, result.value, result.grad, result.aux["norm2"]

    x = solve(theta)[0]
    # The implicit function theorem at the solution, from the objective's own second
    # derivatives (a dense solve here, not through the solver): dx*/dtheta = -H^-1 d2f/dx dtheta.
    hessian = np.asarray(jax.hessian(tilted)(x, theta))
    cross = np.asarray(jax.jacfwd(jax.grad(tilted), argnums=1)(x, theta))
    exact = -np.linalg.solve(hessian, cross)
    # Central finite differences of solves, a check of the solve map itself. Loose: a
    # perturbed solve can stop short of tolerance_grad (near 1e-8 gradient the value no
    # longer changes in float64, and the line search runs out of evaluations; seen with
    # jax 0.12 at h = 1e-5), so h = 1e-3 keeps solver error / h and truncation ~h^2 near 1e-6.
    h = 1e-3
    fd = np.stack([(solve(theta + h * e)[0] - solve(theta - h * e)[0]) / (2 * h) for e in np.eye(2)], axis=1)
    x_jac, value_grad, grad_jac, aux_grad = jax.jacrev(solve)(theta)
    np.testing.assert_allclose(x_jac, exact, rtol=1e-8)
    np.testing.assert_allclose(x_jac, fd, rtol=1e-4)
    np.testing.assert_allclose(jax.jacfwd(solve)(theta)[0], x_jac, rtol=1e-10)
    # The optimal value's derivative is the partial derivative at the solution (envelope).
    np.testing.assert_allclose(value_grad, jax.grad(tilted, argnums=1)(x, theta), rtol=1e-8)
    # The gradient stays zero along the solution path, so its derivative is zero.
    np.testing.assert_allclose(grad_jac, 0.0, atol=1e-8)
    # aux = |x*|^2: its gradient is 2 x*' dx*/dtheta.
    np.testing.assert_allclose(aux_grad, 2 * np.asarray(x) @ exact, rtol=1e-8)


def while_carries(jaxpr) -> list[int]:
    """The carry sizes of every while loop in a jaxpr, nested ones included."""
    sizes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "while":
            sizes.append(len(eqn.outvars))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else [param]:
                if hasattr(sub, "eqns"):  # a Jaxpr
                    sizes += while_carries(sub)
                elif hasattr(getattr(sub, "jaxpr", None), "eqns"):  # a ClosedJaxpr
                    sizes += while_carries(sub.jaxpr)
    return sizes


def test_the_solver_loop_is_not_differentiated():
    # Reverse mode through lax.while_loop raises, so a working jax.grad shows that the
    # derivative does not go through the L-BFGS loop...
    with pytest.raises(ValueError, match="Reverse-mode differentiation does not work for lax.while_loop"):
        jax.grad(lambda a: jax.lax.while_loop(lambda x: x < 10.0, lambda x: x * a, 1.0))(2.0)
    grad = jax.grad(lambda lam: jnp.sum(solve_ridge(lam, B)))(0.7)
    assert np.isfinite(grad)
    # ... and in forward mode its carry is not doubled by tangents: the largest loop (the
    # L-BFGS one) has the same carry with and without a jvp.
    primal = while_carries(jax.make_jaxpr(solve_ridge)(0.7, B).jaxpr)
    forward = while_carries(jax.make_jaxpr(lambda lam: jax.jvp(solve_ridge, (lam, B), (1.0, B)))(0.7).jaxpr)
    assert max(forward) == max(primal) and forward.count(max(primal)) == 1


# A bounded quadratic 0.5 x'Qx - theta'x on the box [0, 1]^4 whose solution is built to
# have x[2] at its lower bound (gradient +0.5, outward) and x[3] at its upper bound
# (gradient -0.7, outward); x[0], x[1] are free.
Q = jnp.array([[4.0, 1.0, 0.5, 0.2], [1.0, 3.0, 0.3, 0.4], [0.5, 0.3, 2.0, 0.1], [0.2, 0.4, 0.1, 5.0]])
X_STAR = jnp.array([0.3, 0.5, 0.0, 1.0])
THETA = Q @ X_STAR - jnp.array([0.0, 0.0, 0.5, -0.7])


def box_quadratic(x, theta):
    return 0.5 * x @ Q @ x - theta @ x


def box_solution(theta):
    """The exact bounded minimizer for theta near THETA (the active set stays the same)."""
    free = jnp.linalg.solve(Q[:2, :2], theta[:2] - Q[:2, 3] * 1.0)
    return jnp.concatenate([free, jnp.array([0.0, 1.0])])


def test_bounded_derivatives_fix_the_active_coordinates():
    np.testing.assert_allclose(box_solution(THETA), X_STAR, atol=1e-14)
    grad = Q @ X_STAR - THETA
    assert grad[2] > 0 and grad[3] < 0 and np.allclose(grad[:2], 0)  # the active set is as built
    expected = np.zeros((4, 4))
    expected[:2, :2] = np.linalg.inv(np.asarray(Q[:2, :2]))
    np.testing.assert_allclose(jax.jacfwd(box_solution)(THETA), expected, atol=1e-14)  # the closed form agrees

    def implicit(theta, bounds):
        return solution_with_implicit_grad(box_quadratic, box_solution(theta), (theta,), bounds=bounds)

    for bounds in [(0.0, 1.0), (jnp.zeros(4), jnp.ones(4)), (jnp.zeros(4), 1.0)]:
        for jacobian in (jax.jacrev, jax.jacfwd):
            np.testing.assert_allclose(jacobian(implicit)(THETA, bounds), expected, atol=1e-9)
    # Without bounds the same point gets the full Hessian's inverse: the bounds matter.
    np.testing.assert_allclose(jax.jacrev(implicit)(THETA, None), np.linalg.inv(np.asarray(Q)), rtol=1e-8)


def test_bounds_may_be_pytrees_like_the_solution():
    def fun(tree, theta):
        return box_quadratic(jnp.concatenate([tree["free"], tree["boxed"]]), theta)

    def implicit(theta):
        x = box_solution(theta)
        tree = {"boxed": x[2:], "free": x[:2]}
        lower = {"boxed": jnp.zeros(2), "free": -jnp.inf}
        upper = {"boxed": 1.0, "free": jnp.inf}
        out = solution_with_implicit_grad(fun, tree, (theta,), bounds=(lower, upper))
        return jnp.concatenate([out["free"], out["boxed"]])

    expected = np.zeros((4, 4))
    expected[:2, :2] = np.linalg.inv(np.asarray(Q[:2, :2]))
    np.testing.assert_allclose(jax.jacrev(implicit)(THETA), expected, atol=1e-9)


def double_well(x, tilt):
    return jnp.sum((x**2 - 1) ** 2 + tilt * x)


@pytest.mark.slow  # 10-20 s of compiling: in CI's slow set
def test_vmap_over_starts_and_args_stops_each_instance_on_its_own():
    solve = jax.jit(lambda x0, tilt: gradxform.minimize(double_well, x0, tilt, line_search_fn="strong_wolfe",
                                                          max_iter=50))
    starts = jnp.array([[2.0], [-0.3], [0.9]])
    tilts = jnp.array([0.3, -0.2, 0.05])
    batched = jax.jit(jax.vmap(solve))(starts, tilts)
    singles = [solve(starts[i], tilts[i]) for i in range(3)]
    assert len({int(s.n_evals) for s in singles}) > 1  # the instances need different work
    for i, single in enumerate(singles):
        assert int(batched.n_iter[i]) == int(single.n_iter)
        assert int(batched.n_evals[i]) == int(single.n_evals)
        assert int(batched.status[i]) == int(single.status)
        np.testing.assert_allclose(batched.params[i], single.params, rtol=1e-12)
    # Over args alone, with the implicit derivative per instance: dx*/dtilt = -1/f''(x*).
    x_of_tilt = lambda tilt: solve(jnp.array([2.0]), tilt).params[0]  # noqa: E731
    x, slopes = jax.jit(jax.vmap(jax.value_and_grad(x_of_tilt)))(tilts)
    np.testing.assert_allclose(slopes, -1.0 / (12 * x**2 - 4), rtol=1e-6)


@pytest.mark.slow  # 10-20 s of compiling: in CI's slow set
def test_multistart_returns_the_lowest_solution_and_all_of_them():
    starts = jnp.array([[2.0], [-2.0], [0.4]])

    @jax.jit
    def run(tilt):
        return gradxform.minimize_multistart(double_well, starts, tilt, line_search_fn="strong_wolfe", max_iter=50)

    out = run(0.3)
    assert out.all.params.shape == (3, 1) and out.all.n_iter.shape == (3,)
    values = np.asarray(out.all.value)
    assert int(out.best_index) == int(np.argmin(values)) == 1  # the tilt lowers the left well
    np.testing.assert_allclose(out.best.params, out.all.params[1])
    assert float(out.best.params[0]) < -1.0
    # Differentiable through the choice: the best solution's slope in the tilt.
    slope = jax.grad(lambda tilt: run(tilt).best.params[0])(0.3)
    x = float(out.best.params[0])
    np.testing.assert_allclose(slope, -1.0 / (12 * x**2 - 4), rtol=1e-6)


def test_multistart_skips_failed_starts():
    # At 0 the gradient of sqrt|x| is not finite: that start fails at once (status 6),
    # with the lowest value of all, 0.25; the start at 5 barely moves (lr=0.01).
    f = lambda x: jnp.sum(jnp.sqrt(jnp.abs(x)) + 0.01 * (x - 5.0) ** 2)  # noqa: E731
    out = gradxform.minimize_multistart(f, jnp.array([[0.0], [5.0]]), lr=0.01, max_iter=2)
    assert bool(out.all.failed[0]) and float(out.all.value[0]) == 0.25
    assert not bool(out.all.failed[1]) and float(out.all.value[1]) > 2.0
    assert int(out.best_index) == 1


def quadratic(x):
    return jnp.sum((x - 1.0) ** 2 * jnp.array([1.0, 10.0, 100.0]))


def test_tol_sets_both_tolerances_and_explicit_ones_win():
    x0 = jnp.array([3.0, -2.0, 0.5])
    loose = dict(lr=0.5, max_iter=100)
    # The references: tolerances given explicitly (traced, one compilation).
    explicit = jax.jit(lambda grad, change: gradxform.minimize(
        quadratic, x0, tolerance_grad=grad, tolerance_change=change, **loose))
    with_tol = gradxform.minimize(quadratic, x0, tol=1e-2, **loose)
    reference = explicit(1e-2, 1e-2)
    assert int(with_tol.n_iter) == int(reference.n_iter) < int(explicit(1e-7, 1e-9).n_iter)
    np.testing.assert_array_equal(with_tol.params, reference.params)
    mixed = gradxform.minimize(quadratic, x0, tol=1e-2, tolerance_grad=1e-9, **loose)
    both = explicit(1e-9, 1e-2)
    assert int(mixed.n_iter) == int(both.n_iter) and int(mixed.status) == int(both.status)


def test_callback_reports_each_iterate_and_costs_nothing_when_off():
    x0 = jnp.array([3.0, -2.0, 0.5])
    seen = []
    result = gradxform.minimize(quadratic, x0, line_search_fn="strong_wolfe", callback=seen.append)
    assert 1 < len(seen) <= int(result.n_iter)
    assert [p.n_iter for p in seen] == list(range(1, len(seen) + 1))
    values = [float(p.value) for p in seen]
    assert values == sorted(values, reverse=True)  # strong Wolfe: each iterate is lower
    for progress in seen:
        np.testing.assert_allclose(progress.value, quadratic(progress.params), rtol=1e-12)
    np.testing.assert_array_equal(seen[-1].params, result.params)
    assert seen[-1].n_evals == int(result.n_evals)

    def jaxpr(callback):
        return str(jax.make_jaxpr(lambda x: gradxform.minimize(quadratic, x, callback=callback).params)(x0))

    assert "callback" not in jaxpr(None)
    assert "debug_callback" in jaxpr(print)


def test_integer_and_python_arguments_pass_through_undifferentiated():
    def fun(x, a, power, mode):
        assert mode == "sum"  # a Python object reaches fun as it is
        return jnp.sum((x - a) ** power + 0.5 * x**2)  # minimum: x = 2a/3 for power 2

    solve = lambda a: gradxform.minimize(fun, jnp.zeros(2), a, 2, "sum", **TIGHT).params  # noqa: E731
    a = jnp.array([1.5, -3.0])
    np.testing.assert_allclose(solve(a), 2 * a / 3, rtol=1e-10)
    np.testing.assert_allclose(jax.jacrev(solve)(a), 2 / 3 * np.eye(2), rtol=1e-9, atol=1e-14)
