"""L-BFGS edge cases (issue 14, "Safe by default"): ``max_iter <= 0``, closures that return
NaN, what ``converged`` means, and ``MinimizeResult.status``/``message``.

torch 2.13's ``LBFGS`` is the reference: the live tests (skipped without torch) run the
same closures in torch; the others check the facts learned from it (``max_iter <= 0``
evaluates the closure once and iterates none; a NaN loss with finite gradients changes
nothing in the iterates without a line search; with strong Wolfe torch raises
``IndexError`` when the NaN point meets the Wolfe conditions in its bracketing phase).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform
import torch_compat
from torch_compat import optim

from gradxform.optimizers import lbfgs as core  # the module (gradxform.lbfgs is the alias)

TARGET = jnp.array([2.0, 1.0])
X0 = jnp.array([-1.0, 2.0])


def quadratic(x):
    return jnp.sum((x - TARGET) ** 2 * jnp.array([1.0, 3.0]))


def rosenbrock(x):
    return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def simple(x):
    return jnp.sum((x - TARGET) ** 2)


def slight(x):
    return 2.5e-5 * jnp.sum((x - TARGET) ** 2)


def linear(x):
    return jnp.vdot(x, jnp.array([1.0, -2.0]))  # a finite gradient everywhere


def nan_valued(x):
    return quadratic(x) + jnp.nan  # the gradient is quadratic's


def sqrt_sum(x):
    return jnp.sum(jnp.sqrt(x))  # NaN value and gradient at negative entries


def max_abs(tree):
    return max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(tree))


@functools.lru_cache(maxsize=None)
def _solver(fun, line_search_fn):
    """One compiled minimize per objective and line search; the options are traced."""

    def run(x0, lr, max_iter, max_eval, tolerance_change):
        return gradxform.minimize(
            fun, x0, lr=lr, max_iter=max_iter, max_eval=max_eval,
            tolerance_change=tolerance_change, line_search_fn=line_search_fn,
        )

    return jax.jit(run)


def solve(fun, x0, *, line_search_fn=None, lr=1.0, max_iter=20, max_eval=None, tolerance_change=1e-9):
    max_eval = max_iter * 5 // 4 if max_eval is None else max_eval
    return _solver(fun, line_search_fn)(x0, lr, max_iter, max_eval, tolerance_change)


# -- max_iter <= 0 ----------------------------------------------------------------------


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
@pytest.mark.parametrize("max_iter", [0, -3])
def test_minimize_with_no_iteration_evaluates_once_and_stays(max_iter, line_search_fn):
    for result in [solve(quadratic, X0, max_iter=max_iter, line_search_fn=line_search_fn)]:
        assert int(result.n_iter) == 0 and int(result.n_evals) == 1
        np.testing.assert_array_equal(result.params, X0)
        np.testing.assert_allclose(result.value, quadratic(X0))
        np.testing.assert_allclose(result.grad, jax.grad(quadratic)(X0))
        assert int(result.status) == core.MAX_ITER and not bool(result.converged)
        assert int(result.state.func_evals) == 1 and int(result.state.n_iter) == 0
    at_minimum = solve(quadratic, TARGET, max_iter=max_iter, line_search_fn=line_search_fn)
    assert int(at_minimum.status) == core.GRADIENT and bool(at_minimum.converged)


@pytest.mark.parametrize("given_value", [False, True])
def test_lbfgs_transform_with_no_iteration_leaves_params(given_value):
    tx = gradxform.lbfgs(max_iter=0)
    params = {"x": X0}
    state = tx.init(params)
    f = lambda p: quadratic(p["x"])  # noqa: E731
    value, grads = jax.value_and_grad(f)(params)
    extra = {"value": value} if given_value else {}
    updates, state = tx.update(grads, state, params, value_fn=f, **extra)
    np.testing.assert_array_equal(updates["x"], jnp.zeros(2))
    assert int(state.lbfgs.n_iter) == 0 and int(state.lbfgs.func_evals) == 1


def _compat(max_iter, line_search_fn=None, start=X0):
    model = torch_compat.as_parameters({"x": start})
    opt = optim.LBFGS(torch_compat.parameters(model), max_iter=max_iter, line_search_fn=line_search_fn)
    calls = []

    def closure():
        opt.zero_grad()
        calls.append(model["x"].data)
        return torch_compat.backward(lambda p: quadratic(p["x"]), model)

    return model, opt, closure, calls


CACHED = ("d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad", "prev_loss")


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_compat_lbfgs_with_no_iteration_is_torchs(line_search_fn):
    model, opt, closure, calls = _compat(0, line_search_fn)
    loss = opt.step(closure)
    assert float(loss) == float(quadratic(X0)) and len(calls) == 1
    np.testing.assert_array_equal(model["x"].data, X0)
    state = opt.state[model["x"]]
    # torch stores its cached tensors, all None, when its loop did not run.
    assert state == {"func_evals": 1, "n_iter": 0, **dict.fromkeys(CACHED)}
    opt.step(closure)
    assert state["func_evals"] == 2 and state["n_iter"] == 0
    # The state (None values included) survives a state_dict round trip, and the next
    # step with iterations starts afresh.
    other_model, other, other_closure, _ = _compat(0, line_search_fn)
    other.load_state_dict(opt.state_dict())
    other.param_groups[0]["max_iter"] = 5
    other.step(other_closure)
    moved = other.state[other_model["x"]]
    assert moved["func_evals"] >= 4 and moved["n_iter"] >= 1
    # An optimal start returns before torch stores anything.
    model, opt, closure, _ = _compat(0, line_search_fn, start=TARGET)
    opt.step(closure)
    assert opt.state[model["x"]] == {"func_evals": 1, "n_iter": 0}


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_live_compat_lbfgs_with_no_iteration_against_torch(line_search_fn):
    torch = pytest.importorskip("torch")
    x = torch.tensor(np.asarray(X0), requires_grad=True)
    topt = torch.optim.LBFGS([x], max_iter=0, line_search_fn=line_search_fn)

    def tclosure():
        topt.zero_grad()
        loss = torch.sum((x - torch.tensor(np.asarray(TARGET))) ** 2 * torch.tensor([1.0, 3.0], dtype=x.dtype))
        loss.backward()
        return loss

    model, opt, closure, _ = _compat(0, line_search_fn)
    for _ in range(2):
        assert float(opt.step(closure)) == float(topt.step(tclosure).detach())
        np.testing.assert_array_equal(model["x"].data, x.detach().numpy())
        assert opt.state[model["x"]] == dict(topt.state[x])


# -- closures and functions that return NaN ---------------------------------------------


def _nan_closure_run(nan_at, line_search_fn, max_iter=20):
    """torch_compat LBFGS on the quadratic; calls in ``nan_at`` return NaN (gradients kept)."""
    model, opt, _, _ = _compat(max_iter, line_search_fn)
    calls = []

    def closure():
        opt.zero_grad()
        loss = torch_compat.backward(lambda p: quadratic(p["x"]), model)
        calls.append(None)
        return float("nan") if len(calls) in nan_at else loss

    return model, opt, closure


NAN_CASES = {"always": range(1, 100), "first": (1,), "second": (2,), "none": ()}


@pytest.mark.parametrize("case", ["always", "first", "second"])
def test_compat_nan_loss_with_gradients_iterates_as_without_line_search(case):
    """torch follows the gradients; the loss only enters tolerance tests (NaN fails them)."""
    model, opt, closure = _nan_closure_run(NAN_CASES[case], None)
    loss = opt.step(closure)
    ref_model, ref, ref_closure = _nan_closure_run((), None)
    ref.step(ref_closure)
    np.testing.assert_array_equal(model["x"].data, ref_model["x"].data)
    state, ref_state = opt.state[model["x"]], ref.state[ref_model["x"]]
    assert (state["n_iter"], state["func_evals"]) == (ref_state["n_iter"], ref_state["func_evals"])
    assert np.isnan(loss) == (case in ("always", "first"))  # the first closure's loss, as torch


@pytest.mark.parametrize("case", ["always", "second"])
def test_compat_strong_wolfe_raises_torchs_index_error_at_a_nan_wolfe_point(case):
    model, opt, closure = _nan_closure_run(NAN_CASES[case], "strong_wolfe")
    with pytest.raises(IndexError, match="^list index out of range$"):
        opt.step(closure)
    # torch's line search restores the point it started from; the counts are torch's.
    np.testing.assert_array_equal(model["x"].data, X0)
    assert opt.state[model["x"]] == {"func_evals": 1, "n_iter": 1}


def test_compat_strong_wolfe_nan_at_the_start_only_goes_on():
    model, opt, closure = _nan_closure_run((1,), "strong_wolfe")
    assert np.isnan(opt.step(closure))
    ref_model, ref, ref_closure = _nan_closure_run((), "strong_wolfe")
    ref.step(ref_closure)
    np.testing.assert_array_equal(model["x"].data, ref_model["x"].data)


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
@pytest.mark.parametrize("case", ["always", "first", "second", "later"])
def test_live_compat_nan_loss_against_torch(case, line_search_fn):
    torch = pytest.importorskip("torch")
    nan_at = {"later": (5,), **NAN_CASES}[case]
    x = torch.tensor([-1.0, 2.0, 0.5], dtype=torch.float64, requires_grad=True)
    topt = torch.optim.LBFGS([x], max_iter=20, line_search_fn=line_search_fn)
    tcalls = []

    def tclosure():
        topt.zero_grad()
        loss = torch.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
        loss.backward()
        tcalls.append(None)
        return torch.tensor(float("nan")) if len(tcalls) in nan_at else loss

    model = torch_compat.as_parameters({"x": jnp.array([-1.0, 2.0, 0.5])})
    opt = optim.LBFGS(torch_compat.parameters(model), max_iter=20, line_search_fn=line_search_fn)
    calls = []

    def closure():
        opt.zero_grad()
        loss = torch_compat.backward(lambda p: rosenbrock(p["x"]), model)
        calls.append(None)
        return float("nan") if len(calls) in nan_at else loss

    try:
        expected = float(topt.step(tclosure).detach())
    except IndexError as error:
        with pytest.raises(IndexError, match=f"^{error}$"):
            opt.step(closure)
    else:
        got = float(opt.step(closure))
        assert got == expected or (np.isnan(got) and np.isnan(expected))
    assert len(calls) == len(tcalls)
    np.testing.assert_allclose(model["x"].data, x.detach().numpy(), rtol=1e-10)
    state, tstate = opt.state[model["x"]], topt.state[x]
    assert (state["n_iter"], state["func_evals"]) == (tstate["n_iter"], tstate["func_evals"])
    assert sorted(state) == sorted(tstate)


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_minimize_nan_value_with_finite_gradient_follows_the_gradient(line_search_fn):
    result = solve(nan_valued, X0, line_search_fn=line_search_fn)
    reference = solve(quadratic, X0, line_search_fn=line_search_fn)
    np.testing.assert_allclose(result.params, reference.params, rtol=1e-12)
    assert int(result.n_iter) == int(reference.n_iter) and int(result.n_evals) == int(reference.n_evals)
    assert not bool(result.failed) and not bool(result.converged)
    assert int(result.status) == core.NON_FINITE_VALUE


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_an_infinite_step_stops_at_the_last_finite_point(line_search_fn):
    """lr=inf: torch's parameters become infinite (the gradient here stays finite)."""
    result = solve(linear, X0, lr=np.inf, line_search_fn=line_search_fn)
    assert np.all(np.isfinite(result.params)) and np.isfinite(float(result.value))
    assert not bool(result.converged)
    if line_search_fn is None:  # the unsearched step is the one that overflows
        assert bool(result.failed) and int(result.status) == core.NON_FINITE
        np.testing.assert_array_equal(result.params, X0)


# -- converged, status and message -------------------------------------------------------


def test_converged_is_never_reported_at_a_non_stationary_point():
    # lr=1e30 with strong Wolfe used to report converged=True at the start point, where
    # the gradient is (-4, -2); a tiny lr stops at once on torch's step test, a stall.
    for options in (
        dict(lr=1e30, line_search_fn="strong_wolfe"),
        dict(lr=1e30),
        dict(lr=1e-12),
        dict(lr=1e-12, line_search_fn="strong_wolfe"),
    ):
        result = solve(simple, jnp.zeros(2), **options)
        assert not bool(result.converged), options
        assert int(result.status) != core.GRADIENT
        assert max_abs(result.grad) > 1e-7


@pytest.mark.slow
def test_converged_is_a_test_of_the_final_point_on_a_grid_of_options():
    grid = [
        (fun, x0, dict(lr=lr, line_search_fn=ls, max_iter=max_iter))
        for fun, x0 in ((simple, jnp.zeros(2)), (rosenbrock, jnp.array([-1.2, 1.0, 0.5])))
        for lr in (1e-6, 1.0, 1e6)
        for ls in (None, "strong_wolfe")
        for max_iter in (3, 100)
    ]
    seen = set()
    for fun, x0, options in grid:
        result = solve(fun, x0, **options)
        seen.add(int(result.status))
        if not bool(result.converged):
            continue
        # A test of the point itself: the gradient there, or the directional derivative
        # along the L-BFGS direction computed there (the state's last d).
        grad = jax.grad(fun)(result.params)
        np.testing.assert_allclose(result.grad, grad, atol=1e-12)
        assert np.isfinite(float(result.value))
        if int(result.status) == core.GRADIENT:
            assert max_abs(grad) <= 1e-7, options
        else:
            assert int(result.status) == core.NO_DESCENT
            assert float(jnp.vdot(grad, result.state.d)) > -1e-9, options
    assert {core.GRADIENT, core.NO_DESCENT} <= seen  # both kinds of convergence were checked


def _status_cases():
    rosen0 = jnp.array([-1.2, 1.0])
    return {
        core.GRADIENT: lambda: solve(simple, X0, line_search_fn="strong_wolfe"),
        core.MAX_ITER: lambda: solve(rosenbrock, rosen0, max_iter=2, max_eval=10),
        core.MAX_EVAL: lambda: solve(rosenbrock, rosen0, max_iter=100, max_eval=4, line_search_fn="strong_wolfe"),
        core.VALUE_CHANGE: lambda: solve(slight, jnp.zeros(2), lr=1e-2),
        core.STEP: lambda: solve(quadratic, X0, lr=1e-12),
        core.NO_DESCENT: lambda: solve(quadratic, X0, tolerance_change=1e3),
        core.NON_FINITE: lambda: solve(sqrt_sum, X0),
        core.NON_FINITE_VALUE: lambda: solve(nan_valued, X0),
        # bounds only: nothing can move (the gradient pushes out at the lower bound) and a
        # negative tolerance_grad disables the gradient test
        core.LINE_SEARCH: lambda: gradxform.minimize(jnp.sum, jnp.zeros(2), bounds=(0.0, 1.0), tolerance_grad=-1.0),
    }


@pytest.mark.parametrize("status", sorted(_status_cases()))
def test_each_status_has_a_case_and_a_message(status):
    result = _status_cases()[status]()
    assert int(result.status) == status
    assert result.message == core.STATUS_MESSAGES[status]
    assert bool(result.converged) == (status in (core.GRADIENT, core.NO_DESCENT))
    assert bool(result.failed) == (status == core.NON_FINITE)


def test_status_messages_are_a_distinct_constant_table():
    assert len(core.STATUS_MESSAGES) == 9 == len(set(core.STATUS_MESSAGES))
    assert gradxform.MinimizeResult.STATUS_MESSAGES is core.STATUS_MESSAGES
    assert core.STATUS_MESSAGES[core.GRADIENT].startswith("converged")


def test_status_is_jittable_and_vmappable_and_message_needs_a_concrete_status():
    starts = jnp.stack([X0, TARGET, jnp.array([5.0, -3.0])])
    batch = jax.jit(jax.vmap(lambda x: gradxform.minimize(simple, x, max_iter=1, line_search_fn="strong_wolfe")))(starts)
    assert batch.status.shape == (3,) and batch.status.dtype == jnp.int32
    messages = batch.message
    assert messages.shape == (3,)
    assert list(messages) == [core.STATUS_MESSAGES[int(s)] for s in batch.status]
    assert int(batch.status[1]) == core.GRADIENT  # the target itself is stationary

    def inside(x):
        return gradxform.minimize(simple, x, max_iter=1, line_search_fn="strong_wolfe").message

    with pytest.raises(TypeError, match="needs a concrete status"):
        jax.jit(inside)(X0)
    # The existing fields are all still there (and first, in their order).
    assert gradxform.MinimizeResult._fields[:9] == (
        "params", "value", "grad", "n_iter", "n_evals", "converged", "failed", "aux", "state"
    )
