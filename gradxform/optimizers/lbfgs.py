"""L-BFGS as torch's ``LBFGS`` runs it, compiled end to end.

One torch ``LBFGS.step(closure)`` is written once, as a resumable state machine over the
flattened parameters (:func:`lbfgs_begin`, :func:`lbfgs_trial`, :func:`lbfgs_tell`): it
asks for the objective's value and gradient at a point, and is told them, until it is
done. Three drivers share it:

* :func:`minimize` runs the whole step in one ``lax.while_loop`` (jittable, vmappable);
* :func:`lbfgs` is an ``(init, update)`` transformation whose ``update`` runs one step
  with the objective passed as ``value_fn=``;
* ``torch_compat.optim.LBFGS`` drives it from Python with a user closure.

The two-loop recursion, the curvature-pair test (``y·s > 1e-10``), torch's first-step
scaling ``min(1, 1/|g|_1) * lr`` and its stopping rules are those of torch 2.13, so on
float64 problems the iterates, ``n_iter`` and function evaluations are torch's.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gradxform import _numerics, _treecheck
from gradxform._implicit import solution_with_implicit_grad, split_differentiable
from gradxform.base import GradientTransformation
from gradxform.linesearch import BRACKET, FINISHED, WolfeState, wolfe_result, wolfe_start, wolfe_tell

INIT, SEARCH, EVALUATE, DONE = 0, 1, 2, 3

# Why a run stopped (``MinimizeResult.status``, documented in ``minimize``). GRADIENT and
# NO_DESCENT mean converged: both test the point itself. The step and value-change tests
# also stop runs far from any stationary point (a tiny ``lr`` makes tiny steps and value
# changes), so they are stalls.
GRADIENT, MAX_ITER, MAX_EVAL, VALUE_CHANGE, STEP, NO_DESCENT, NON_FINITE, NON_FINITE_VALUE = range(8)
LINE_SEARCH = 8  # bounds only (gradxform.optimizers.lbfgsb)
CONVERGED_STATUSES = (GRADIENT, NO_DESCENT)
RUNNING = -1
STATUS_MESSAGES = (
    "converged: the gradient's largest absolute entry is at most tolerance_grad",
    "stopped: max_iter iterations done",
    "stopped: max_eval evaluations of the objective done",
    "stalled: the value changed by less than tolerance_change in the last iteration",
    "stalled: the last step's largest absolute entry is at most tolerance_change",
    "converged: the directional derivative along the L-BFGS direction is above -tolerance_change "
    "(grad·H·grad, an estimate of twice the decrease left, is below it)",
    "failed: the gradient or the point was not finite; params is the last point where both were",
    "stopped at a point where the value or the gradient is not finite",
    "stalled: the line search found no lower point, even along the projected gradient (bounds)",
)
"""``STATUS_MESSAGES[status]`` describes :attr:`MinimizeResult.status` (see :func:`minimize`)."""


class LbfgsOptions(NamedTuple):
    """torch.optim.LBFGS's options.

    ``history_size`` (a shape) and ``line_search_fn`` (the structure) must be static;
    the others may be traced arrays, so changing them does not recompile.
    """

    lr: Any = 1.0
    max_iter: int = 20
    max_eval: int | None = None
    tolerance_grad: float = 1e-7
    tolerance_change: float = 1e-9
    history_size: int = 100
    line_search_fn: str | None = None

    def resolved(self) -> "LbfgsOptions":
        max_eval = self.max_iter * 5 // 4 if self.max_eval is None else self.max_eval
        return self._replace(max_eval=max_eval)


class LbfgsState(NamedTuple):
    """What persists between steps: torch's ``LBFGS.state`` (n = number of real entries).

    Attributes:
      func_evals: int32, evaluations over all steps.
      n_iter: int32, iterations over all steps.
      d: ``[n]``, the last search direction.
      t: scalar (default float dtype), the last step length.
      old_dirs: ``[history_size, n]``, ring buffer of gradient differences ``y``.
      old_stps: ``[history_size, n]``, ring buffer of steps ``s``.
      ro: ``[history_size]``, ``1 / (y·s)``.
      al: ``[history_size]``, the two-loop coefficients (logical order).
      history_start: int32, physical index of the oldest pair.
      history_len: int32, number of stored pairs.
      H_diag: scalar (vector dtype), the initial Hessian scaling ``y·s / y·y``.
      prev_flat_grad: ``[n]``, the gradient at the start of the last iteration.
      prev_loss: scalar (default float dtype), the value there.
    """

    func_evals: jax.Array
    n_iter: jax.Array
    d: jax.Array
    t: jax.Array
    old_dirs: jax.Array
    old_stps: jax.Array
    ro: jax.Array
    al: jax.Array
    history_start: jax.Array
    history_len: jax.Array
    H_diag: jax.Array
    prev_flat_grad: jax.Array
    prev_loss: jax.Array


class LbfgsRun(NamedTuple):
    """One step in progress (see :func:`lbfgs_tell`)."""

    state: LbfgsState
    phase: jax.Array  # int32: INIT, SEARCH, EVALUATE or DONE
    x: jax.Array  # [n], the current point
    loss: jax.Array  # value at x (when fresh)
    grad: jax.Array  # [n], gradient at x (when fresh)
    fresh: jax.Array  # bool: loss and grad were evaluated at x
    orig_loss: jax.Array  # value at the start of the step
    current_evals: jax.Array  # int32
    n_iter: jax.Array  # int32, iterations in this step
    opt_cond: jax.Array  # bool
    status: jax.Array  # int32: why the run stopped (RUNNING until it does)
    failed: jax.Array  # bool: stopped by a non-finite gradient
    x_prev: jax.Array  # [n], the point before the last unsearched step
    search: WolfeState
    # bool: torch's _strong_wolfe would have raised IndexError at the last evaluation (a
    # NaN value where the Wolfe conditions hold in its bracketing phase: it then indexes a
    # one-point bracket at 1). The run goes on as torch would without that error;
    # torch_compat's LBFGS raises torch's error.
    torch_error: jax.Array


def init_state(n: int, dtype, history_size: int, like=None) -> LbfgsState:
    """An empty L-BFGS state for ``n`` real unknowns of ``dtype``.

    With ``like`` (the flat ``[n]`` parameter vector) the ``[n]`` buffers get its
    sharding, the ``[history_size, n]`` ones the same sharding along ``n`` (replicated
    along the history), and the scalars and ``[history_size]`` vectors are replicated
    over its devices. The values do not depend on ``like``.
    """
    hyper = _numerics.hyper_dtype()

    def vector():
        zeros = jnp.zeros(n, dtype)
        return zeros if like is None else _numerics.like_param(zeros, like)

    def history():
        zeros = jnp.zeros((history_size, n), dtype)
        if like is None or not _numerics._placed(like):
            return zeros
        # Tied to rows of ``like`` itself (a broadcast of constant zeros would be folded
        # away before XLA propagates shardings); the broadcast is never computed.
        return _numerics.shard_as(zeros, jnp.broadcast_to(like[None], (history_size, n)))

    def small(x):
        return x if like is None else _numerics.replicated_like(x, like)

    return LbfgsState(
        func_evals=small(jnp.zeros([], jnp.int32)),
        n_iter=small(jnp.zeros([], jnp.int32)),
        d=vector(),
        t=small(jnp.zeros([], hyper)),
        old_dirs=history(),
        old_stps=history(),
        ro=small(jnp.zeros(history_size, dtype)),
        al=small(jnp.zeros(history_size, dtype)),
        history_start=small(jnp.zeros([], jnp.int32)),
        history_len=small(jnp.zeros([], jnp.int32)),
        H_diag=small(jnp.ones([], dtype)),
        prev_flat_grad=vector(),
        prev_loss=small(jnp.zeros([], hyper)),
    )


def check_state(state: LbfgsState, n: int, history_size: int) -> None:
    """Raises ``ValueError`` unless ``state`` has the shapes :func:`init_state` gives.

    Made while tracing (shapes are static), so it costs nothing at run time. A restored
    state whose ``d`` had shape ``(1,)`` for 3 unknowns would otherwise broadcast every
    step into the parameters.
    """
    expected = {name: () for name in LbfgsState._fields}
    expected.update(d=(n,), prev_flat_grad=(n,), old_dirs=(history_size, n), old_stps=(history_size, n))
    expected.update(ro=(history_size,), al=(history_size,))
    for name, shape in expected.items():
        got = tuple(jnp.shape(getattr(state, name)))
        if got != shape:
            raise ValueError(
                f"the L-BFGS state does not match the parameters: its {name} has shape {got} where "
                f"{shape} is expected ({n} real unknowns, history_size={history_size}; a state built "
                "or restored for other parameters?)"
            )


def two_loop(grad, state: LbfgsState):
    """The L-BFGS two-loop recursion: ``-H grad`` and the coefficients ``al``."""
    size = state.ro.shape[0]
    length, start = state.history_len, state.history_start

    # (The named scopes here name the parts of the program in profiles:
    # benchmarks/lbfgs_overhead.py --where.)
    @jax.named_scope("two_loop_backward")
    def backward(k, carry):
        q, al = carry
        i = length - 1 - k
        j = jax.lax.rem(start + i, jnp.int32(size))
        a = jnp.vdot(_row(state.old_stps, j), q) * _row(state.ro, j)
        # (Not _set_row: with jax's wrapping of negative indices XLA computes ``i`` inside
        # the kernels that use it; without, in a kernel of its own, one more per pass,
        # which made minimize's warm solves 1.1-1.4x slower: benchmarks/RESULTS.md.)
        return q - a * _row(state.old_dirs, j), jax.lax.dynamic_update_index_in_dim(al, a, i, 0)

    q, al = jax.lax.fori_loop(0, length, backward, (-grad, state.al))
    r = q * state.H_diag

    @jax.named_scope("two_loop_forward")
    def forward(i, r):
        j = jax.lax.rem(start + i, jnp.int32(size))
        be = jnp.vdot(_row(state.old_dirs, j), r) * _row(state.ro, j)
        return r + (_row(al, i) - be) * _row(state.old_stps, j)

    return jax.lax.fori_loop(0, length, forward, r), al


def _row(array, i):
    """``array[i]`` for an index known to be in range (no wrapping of negative indices:
    a smaller program than ``array[i]``, the same value)."""
    return jax.lax.dynamic_index_in_dim(array, i, 0, keepdims=False, allow_negative_indices=False)


def _set_row(array, value, i):
    """``array.at[i].set(value)`` for an index known to be in range (as :func:`_row`)."""
    return jax.lax.dynamic_update_index_in_dim(array, value, i, 0, allow_negative_indices=False)


def lbfgs_begin(state: LbfgsState, x) -> LbfgsRun:
    """Starts one step at ``x``: the first point to evaluate is ``x`` itself."""
    hyper = _numerics.hyper_dtype()
    zero = jnp.zeros([], hyper)
    return LbfgsRun(
        state=state,
        phase=jnp.asarray(INIT, jnp.int32),
        x=x,
        loss=zero,
        grad=jnp.zeros_like(x),
        fresh=jnp.asarray(False),
        orig_loss=zero,
        current_evals=jnp.zeros([], jnp.int32),
        n_iter=jnp.zeros([], jnp.int32),
        opt_cond=jnp.asarray(False),
        status=jnp.asarray(RUNNING, jnp.int32),
        failed=jnp.asarray(False),
        x_prev=x,
        search=wolfe_start(zero, x, zero, zero, x, 0),
        torch_error=jnp.asarray(False),
    )


def lbfgs_trial(run: LbfgsRun, searching: bool | None = None):
    """The point whose value and gradient the step needs next.

    ``searching`` says, when the caller knows it, whether the run is in its line search
    (``run.phase == SEARCH``); ``None`` decides it at run time. Knowing it keeps a
    selection out of the objective's kernels, where XLA would compute it for every entry.
    """
    if searching is False:
        return run.x
    step = run.x + run.search.t.astype(run.x.dtype) * run.state.d
    return step if searching else jnp.where(run.phase == SEARCH, step, run.x)


def _known_search(options: LbfgsOptions, first: bool | None):
    """``lbfgs_trial``'s ``searching`` for an evaluation known (or not) to be a step's
    first: the first evaluates the start point; a later one is the line search's, when
    there is one. (A finished run, which only a batched loop feeds, has its result
    dropped, whatever point it evaluated.)"""
    return None if first is None else (not first and options.line_search_fn == "strong_wolfe")


def _finish(run: LbfgsRun, status) -> LbfgsRun:
    return run._replace(phase=jnp.asarray(DONE, jnp.int32), status=jnp.asarray(status, jnp.int32))


_HISTORY = ("old_dirs", "old_stps")


def _select_run(pred, a: LbfgsRun, b: LbfgsRun) -> LbfgsRun:
    """``a`` where ``pred`` else ``b``, except the history buffers, always taken from ``a``.

    The ``[history_size, n]`` buffers are only ever changed by masked row writes, so both
    sides hold the same values there; not selecting them saves a copy per evaluation.
    """
    big = _HISTORY
    small = lambda run: run._replace(state=run.state._replace(**{k: None for k in big}))  # noqa: E731
    out = jax.tree.map(lambda x, y: _where(pred, x, y), small(a), small(b))
    return out._replace(state=out.state._replace(**{k: getattr(a.state, k) for k in big}))


def _where(pred, x, y):
    """``jnp.where(pred, x, y)``, or ``x`` itself when both sides are the same array.

    Most selections between runs leave most fields alike; skipping those keeps the
    compiled program (and its compile time) smaller, with the same values.
    """
    return x if x is y else jnp.where(pred, x, y)


def _begin_iteration(run: LbfgsRun, options: LbfgsOptions, go, never_first: bool = False) -> LbfgsRun:
    """torch's loop body up to the line search (direction, step length, descent test).

    When ``go`` is false the run comes back unchanged. The curvature pair is written into
    the history buffers in place (a masked row write, a no-op unless it is kept); the rest
    runs in a branch taken when ``go`` holds, which sees the run without those buffers.
    ``never_first``: the caller knows this is not the state's first iteration (which
    starts along ``-grad``), so that case is not traced; else it is decided at run time.
    """
    state = run.state
    g = run.grad
    n_iter = state.n_iter + 1
    first = jnp.asarray(False) if never_first else n_iter == 1
    size = state.ro.shape[0]
    # The curvature pair of the last step, kept when y·s > 1e-10 (torch's test).
    y = g - state.prev_flat_grad
    s = state.d * state.t.astype(g.dtype)
    ys = jnp.vdot(y, s)
    accept = go & ~first & (ys > 1e-10)
    length = jnp.where(first, 0, state.history_len)
    start = jnp.where(first, 0, state.history_start)
    full = length == size
    slot = jnp.where(full, start, (start + length) % size)
    masked = lambda buffer, row: _set_row(buffer, jnp.where(accept, row, _row(buffer, slot)), slot)  # noqa: E731
    buffers = {"old_dirs": masked(state.old_dirs, y), "old_stps": masked(state.old_stps, s)}

    @jax.named_scope("iteration_start")
    def begin(run: LbfgsRun) -> LbfgsRun:
        state = run.state
        history = state._replace(
            **buffers,
            ro=masked(state.ro, 1.0 / ys),
            history_start=jnp.where(accept & full, (start + 1) % size, start),
            history_len=jnp.where(accept & ~full, length + 1, length),
            H_diag=jnp.where(first, jnp.ones_like(state.H_diag), jnp.where(accept, ys / jnp.vdot(y, y), state.H_diag)),
        )
        if never_first:
            d, al = two_loop(g, history)
        else:
            d, al = jax.lax.cond(~first, lambda: two_loop(g, history), lambda: (-g, state.al))
        hyper = _numerics.hyper_dtype()
        lr = jnp.asarray(options.lr).astype(hyper)
        first_t = jnp.minimum(1.0, 1.0 / jnp.sum(jnp.abs(g)).astype(hyper)) * lr
        t = jnp.where(first, first_t, lr)
        state = history._replace(n_iter=n_iter, d=d, al=al, t=t, prev_flat_grad=g, prev_loss=run.loss)
        begun = run._replace(state=state, n_iter=run.n_iter + 1)
        gtd = jnp.vdot(g, d).astype(hyper)
        no_descent = gtd > -options.tolerance_change

        if options.line_search_fn == "strong_wolfe":
            search = wolfe_start(run.loss, g, gtd, t, d, options.max_eval - run.current_evals)
            searching = begun._replace(phase=jnp.asarray(SEARCH, jnp.int32), search=search)
            # (The finished run carries the new search too, never read: the two runs
            # then differ in phase and status only, two selections instead of ~25.)
            next_run = _select_run(no_descent, _finish(searching, NO_DESCENT), searching)
        else:
            stepped = begun._replace(x=run.x + t.astype(run.x.dtype) * d, x_prev=run.x, fresh=jnp.asarray(False))
            # The last iteration is not evaluated (torch skips the closure when n_iter ==
            # max_iter), so no tolerance can be checked there: the run ran out of iterations.
            last = begun.n_iter == options.max_iter
            out_of_iterations = _finish(stepped, MAX_ITER)
            evaluate = stepped._replace(phase=jnp.asarray(EVALUATE, jnp.int32))
            next_run = _select_run(no_descent, _finish(begun, NO_DESCENT), _select_run(last, out_of_iterations, evaluate))
        return _without_history(next_run)

    run = jax.lax.cond(go, begin, lambda run: run, _without_history(run))
    return run._replace(state=run.state._replace(**buffers))


def _without_history(run: LbfgsRun) -> LbfgsRun:
    return run._replace(state=run.state._replace(**dict.fromkeys(_HISTORY)))


def _end_iteration(run: LbfgsRun, options: LbfgsOptions, d_max=None):
    """torch's checks at the end of an iteration: the finished run, or whether to go on.

    The decision to stop is torch's; the status says why, with a met gradient test first
    (loss and grad are fresh here), then torch's order. ``d_max``: ``max|d|`` when the
    caller has it (the line search's), else it is computed.
    """
    d, t = run.state.d, run.state.t.astype(run.state.d.dtype)
    if d_max is None:
        step_max = _numerics.max_abs(d * t)
    else:
        # max|d_i * t| is max|d_i| * |t| exactly: rounding a product is monotone in its
        # magnitude. (A NaN on one side is one on the other, or both fail the test.)
        step_max = d_max.astype(d.dtype) * jnp.abs(t)
    step_small = step_max <= options.tolerance_change
    value_small = jnp.abs(run.loss - run.state.prev_loss) < options.tolerance_change
    stalled = jnp.where(step_small, STEP, VALUE_CHANGE)
    out_of_iterations = run.n_iter == options.max_iter
    out_of_evals = run.current_evals >= options.max_eval
    stop = out_of_iterations | out_of_evals | run.opt_cond | step_small | value_small
    status = jnp.where(
        run.opt_cond, GRADIENT, jnp.where(out_of_iterations, MAX_ITER, jnp.where(out_of_evals, MAX_EVAL, stalled))
    ).astype(jnp.int32)
    return run._replace(
        phase=jnp.where(stop, DONE, run.phase).astype(jnp.int32),
        status=jnp.where(stop, status, run.status),
    ), ~stop


def lbfgs_tell(run: LbfgsRun, value, grad, options: LbfgsOptions, on_iteration: Callable | None = None,
               first: bool | None = None) -> LbfgsRun:
    """Feeds the value and gradient at :func:`lbfgs_trial`; returns the advanced step.

    ``on_iteration(ended, x, value, n_iter, n_evals)``, when given, is called (while
    tracing) with ``ended``, a bool array that is true when this evaluation ended an
    iteration, and the iterate that iteration accepted (``[n]``), its value and the
    step's counters so far.

    ``first`` says, when the caller knows it, whether this is the step's first
    evaluation (``run.phase == INIT``): ``True`` or ``False`` traces only that case's
    code, where ``None`` branches on ``run.phase`` at run time.
    """
    options = options.resolved()
    hyper = _numerics.hyper_dtype()
    value = jnp.asarray(value).astype(hyper)
    grad_max = _numerics.max_abs(grad)
    run_phase = run.phase
    # Robustness, where torch would carry NaN or infinity into the parameters: a non-finite
    # gradient or point (lr=inf, an overflowing step) at the start or after an unsearched
    # step stops the run at the last point where both were finite (failed=True); inside the
    # line search it counts as a failed Armijo test, so the search backs off towards the
    # start point. A non-finite *value* with a finite gradient at a finite point is used as
    # torch uses it (its comparisons are false): the gradients lead on.
    finite = _numerics.all_finite(grad, lbfgs_trial(run, _known_search(options, first)))
    evaluated = run._replace(loss=value, grad=grad, fresh=jnp.asarray(True), torch_error=jnp.asarray(False))
    failure = run._replace(
        phase=jnp.asarray(DONE, jnp.int32),
        failed=jnp.asarray(True),
        status=jnp.asarray(NON_FINITE, jnp.int32),
        torch_error=jnp.asarray(False),
    )

    @jax.named_scope("first_evaluation")
    def initial(run):
        run = evaluated._replace(
            state=run.state._replace(func_evals=run.state.func_evals + 1),
            orig_loss=value,
            current_evals=jnp.ones([], jnp.int32),
        )
        optimal = grad_max <= options.tolerance_grad
        # torch's loop runs while n_iter < max_iter: with max_iter <= 0 the step is this
        # one evaluation.
        no_iteration = jnp.asarray(options.max_iter) <= 0
        run = _select_run(optimal, _finish(run, GRADIENT), _select_run(no_iteration, _finish(run, MAX_ITER), run))
        return _select_run(finite, run, failure._replace(state=run.state)), ~optimal & ~no_iteration & finite

    @jax.named_scope("line_search_step")
    def searching(run):
        bracketing = run.search.phase == BRACKET
        search = wolfe_tell(
            run.search,
            jnp.where(finite, value, jnp.inf),
            jnp.where(finite, grad, jnp.zeros_like(grad)),
            run.state.d,
            tolerance_change=options.tolerance_change,
        )
        # torch's bracketing phase meets the Wolfe conditions at a NaN value: see torch_error.
        torch_error = bracketing & search.done & jnp.isnan(search.f_new)
        f, g, t, evals = wolfe_result(search)
        finished = run._replace(
            state=run.state._replace(t=t, func_evals=run.state.func_evals + evals),
            search=search,
            x=run.x + t.astype(run.x.dtype) * run.state.d,
            loss=f,
            grad=g,
            fresh=jnp.asarray(True),
            opt_cond=_numerics.max_abs(g) <= options.tolerance_grad,
            current_evals=run.current_evals + evals,
            torch_error=torch_error,
        )
        finished, go_on = _end_iteration(finished, options, d_max=search.d_norm)
        done = search.phase == FINISHED
        return _select_run(done, finished, run._replace(search=search, torch_error=torch_error)), done & go_on

    @jax.named_scope("unsearched_step")
    def evaluated_step(run):
        counted = run.state._replace(func_evals=run.state.func_evals + 1)
        run_ok = evaluated._replace(
            state=counted, opt_cond=grad_max <= options.tolerance_grad, current_evals=run.current_evals + 1
        )
        run_ok, go_on = _end_iteration(run_ok, options)
        back_off = failure._replace(
            state=counted, x=run.x_prev, fresh=jnp.asarray(True), current_evals=run.current_evals + 1
        )
        return _select_run(finite, run_ok, back_off), go_on & finite

    # The branches see the run without its [history_size, n] buffers (none of them
    # touches those), so the branching never copies them.
    big = {k: getattr(run.state, k) for k in _HISTORY}
    small = _without_history(run)
    evaluated = evaluated._replace(state=small.state)
    failure = failure._replace(state=small.state)
    # A run with the line search is never in EVALUATE, one without it never in SEARCH: one
    # branch for the first evaluation, the other for the one of those two that can
    # occur. (A finished run, which only a batched loop feeds, takes the second: its
    # result is not used.)
    later = searching if options.line_search_fn == "strong_wolfe" else evaluated_step
    if first is None:
        small, go_on = jax.lax.cond(run_phase == INIT, initial, later, small)
    else:
        small, go_on = (initial if first else later)(small)
    if on_iteration is not None:
        # An iteration ends when its line search finishes, or at the evaluation after an
        # unsearched step; small.x is then the accepted iterate.
        # (A finished run, which a batched loop keeps feeding, ends nothing.)
        ended = ((run_phase == SEARCH) | (run_phase == EVALUATE)) & (go_on | (small.phase == DONE))
        on_iteration(ended, small.x, small.loss, small.n_iter, small.current_evals)
    # After a step's first evaluation an iteration has begun (or the run is done): a later
    # one never begins the state's first iteration.
    return _begin_iteration(
        small._replace(state=small.state._replace(**big)), options, go_on, never_first=first is False
    )


# -- pytrees <-> flat real vectors --------------------------------------------------------


def _to_real_tree(tree):
    return jax.tree.map(_numerics.as_real, tree)


def _from_real_tree(real, like):
    return jax.tree.map(
        lambda r, ref: _numerics.as_complex(r) if jnp.iscomplexobj(ref) else r, real, like
    )


def torch_gradient(grad):
    """``jax.grad``'s gradient as torch defines it: conjugated on complex leaves.

    For a real function of complex ``z = x + iy``, ``jax.grad`` gives ``df/dx - i df/dy``
    and torch's ``.grad`` holds ``df/dx + i df/dy``, the steepest-ascent direction.
    """
    return jax.tree.map(lambda g: jnp.conj(g) if jnp.iscomplexobj(g) else g, grad)


def _flat_value_and_grad(fun: Callable, unflatten: Callable) -> Callable:
    """``v -> (fun(unflatten(v)), flat torch-convention gradient)`` on flat real vectors."""

    def value_and_grad(v):
        value, grad = jax.value_and_grad(fun)(unflatten(v))
        return value, flatten(torch_gradient(grad))[0].astype(v.dtype)

    return value_and_grad


def flatten(tree):
    """``(flat real vector, unflatten)`` for a pytree (complex leaves as real pairs, as torch)."""
    flat, unravel = ravel_pytree(_to_real_tree(tree))
    return flat, lambda v: _from_real_tree(unravel(v), tree)


class MinimizeResult(NamedTuple):
    """Result of :func:`minimize`.

    Attributes:
      params: the solution, a pytree like ``x0``.
      value: the objective at ``params``.
      grad: its gradient at ``params`` (a pytree like ``x0``, as ``jax.grad`` gives it).
      n_iter: int32, iterations taken.
      n_evals: int32, evaluations of ``fun``, counted as torch counts them.
      converged: bool, ``status`` is 0 or 5: at ``params`` (where the value and gradient
        are finite) the gradient's largest absolute entry is at most ``tolerance_grad``, or
        torch's directional-derivative test holds (see :func:`minimize`).
      failed: bool, a non-finite gradient or point stopped the solve (where torch would
        carry NaN or infinity into the parameters); ``params`` is then the last point where
        both were finite (``status`` 6).
      aux: ``fun``'s auxiliary output at ``params`` with ``has_aux=True``, else ``None``.
      state: the :class:`LbfgsState`, to continue with another call.
      status: int32, why the solve stopped: an index into ``STATUS_MESSAGES`` (the table
        is in :func:`minimize`). An array, so the result stays jittable and
        vmappable; :attr:`message` gives its text.
    """

    params: Any
    value: jax.Array
    grad: Any
    n_iter: jax.Array
    n_evals: jax.Array
    converged: jax.Array
    failed: jax.Array
    aux: Any
    state: LbfgsState
    status: jax.Array

    STATUS_MESSAGES = STATUS_MESSAGES  # a class attribute (not a field): the texts, by status

    @property
    def message(self):
        """The text of :attr:`status`: a ``str``, or a numpy array of them for a batch
        (``jax.vmap``). Needs a concrete status: outside ``jax.jit``, or on its output
        (``MinimizeResult.STATUS_MESSAGES[int(status)]`` is the same lookup)."""
        if isinstance(self.status, jax.core.Tracer):
            raise TypeError(
                "MinimizeResult.message needs a concrete status: read it outside jax.jit "
                "(MinimizeResult.STATUS_MESSAGES[int(result.status)])"
            )
        codes = np.asarray(self.status)
        if codes.ndim == 0:
            return STATUS_MESSAGES[int(codes)]
        return np.vectorize(STATUS_MESSAGES.__getitem__, otypes=[object])(codes)


def _check_options(options: LbfgsOptions) -> None:
    from gradxform.optimizers import _common
    from gradxform.registry import SPECS

    SPECS["lbfgs"].check_core(learning_rate=options.lr, line_search_fn=options.line_search_fn)
    _common.check_hyperparams(dict(learning_rate=options.lr))


def _run(value_and_grad, x_flat, state, options: LbfgsOptions, on_iteration=None, at_x=None):
    """The step from ``x_flat`` to its end, in one ``lax.while_loop``. ``at_x``: the
    value and flat gradient at ``x_flat`` when the caller has them, else ``None``."""
    # The first evaluation runs before the loop, so the loop's body holds only the later
    # ones, with no branch on the phase: 15 fewer thunks per iteration, and 0.93-0.96x
    # the warm time on benchmarks/lbfgs_bench.py's Rosenbrock problems (RESULTS.md). The
    # objective is traced twice (as optax's lbfgs traces it in its loop and in its line
    # search).
    def evaluate(run, first, at=None):
        if at is None:
            with jax.named_scope("objective"):
                at = value_and_grad(lbfgs_trial(run, _known_search(options, first)))
        return lbfgs_tell(run, *at, options, on_iteration, first=first)

    run = evaluate(lbfgs_begin(state, x_flat), True, at_x)
    return jax.lax.while_loop(lambda run: run.phase != DONE, lambda run: evaluate(run, False), run)


def minimize(
    fun: Callable,
    x0,
    *args,
    method: str = "lbfgs",
    lr=1.0,
    max_iter: int = 20,
    max_eval: int | None = None,
    tolerance_grad: float | None = None,
    tolerance_change: float | None = None,
    history_size: int = 100,
    line_search_fn: str | None = None,
    has_aux: bool = False,
    state: LbfgsState | None = None,
    tol: float | None = None,
    callback: Callable | None = None,
    bounds=None,
) -> MinimizeResult:
    r"""Minimizes ``fun(x, *args)`` with L-BFGS, as one torch ``LBFGS.step(closure)``.

    The whole solve is one ``lax.while_loop``: ``minimize`` is jittable, vmappable and
    works on any pytree ``x0``. With the same options it takes the same iterates, number
    of iterations and of evaluations as torch's ``LBFGS(params, **options).step(closure)``
    (exactly, on float64 problems).

    Args:
      fun: the objective, ``fun(x, *args) -> scalar`` (or ``(scalar, aux)`` with
        ``has_aux``), differentiable with ``jax.grad``.
      x0: the starting point, any pytree of float (or complex) arrays.
      *args: passed to ``fun`` (traced, so new data does not recompile).
      method: ``"lbfgs"``.
      lr: step length scale (torch's ``lr``).
      max_iter: maximum iterations. With ``max_iter <= 0`` no iteration runs, as in
        torch: ``fun`` is evaluated once at ``x0`` (``n_evals == 1``, ``n_iter == 0``,
        ``params`` is ``x0``, ``status`` 1, or 0 if ``x0`` passes the gradient test).
      max_eval: maximum evaluations (default ``max_iter * 5 // 4``).
      tolerance_grad: stop when ``max|grad| <= tolerance_grad`` (default ``1e-7``, or ``tol``).
      tolerance_change: stop when the step or the value change falls below it (default
        ``1e-9``, or ``tol``).
      history_size: number of curvature pairs kept.
      line_search_fn: ``None`` (fixed steps) or ``"strong_wolfe"``.
      has_aux: ``fun`` returns ``(value, aux)``.
      state: an :class:`LbfgsState` from a previous result, to continue as a second torch
        ``step()`` would (default: a fresh state). A state of another size is refused
        with a ``ValueError`` (when traced).
      tol: scipy's ``minimize(..., tol=)``: the default of both tolerances. For
        L-BFGS-B scipy sets ``gtol`` and ``ftol`` from it; ``tolerance_grad`` is
        ``gtol`` exactly (the largest absolute gradient entry; without bounds the
        projected gradient is the gradient), and ``tolerance_change`` stands for
        ``ftol``, with torch's meaning: an absolute value change (scipy's is relative,
        ``(f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|, 1)``, the same when ``|f| <= 1``), and
        also a bound on the step's largest entry (scipy has no step test). An explicit
        ``tolerance_grad`` or ``tolerance_change`` wins over ``tol``, as in scipy.
      callback: ``callback(progress)``, called through ``jax.debug.callback`` after each
        iteration whose iterate is evaluated, with a :class:`MinimizeProgress` (the
        iterate as a pytree like ``x0``, its value, and the counters so far). Without a
        line search torch does not evaluate the last iterate, so the last iteration of a
        run stopped by ``max_iter`` is not reported. Under ``jax.vmap`` it is called once
        per instance (with that instance's values). Default ``None``: no callback is
        compiled in.
      bounds: ``(lower, upper)`` to solve with box constraints ``lower <= x <= upper`` by
        L-BFGS-B (see "Bounds" below); each a scalar or a pytree of ``x0``'s structure
        whose leaves broadcast to ``x0``'s, ``-inf``/``inf`` for no bound.

    Returns:
      A :class:`MinimizeResult`. Without a line search, torch does not evaluate the last
      iterate; ``minimize`` then evaluates it once more for ``value``/``grad`` (not counted
      in ``n_evals``, which counts as torch does).

      The decision to stop is torch's; ``status`` says why, judged at ``params``:

      ====  ========================  =============================================================
      0     ``GRADIENT``              converged: ``max|grad| <= tolerance_grad`` at ``params``, where
                                      the value is finite (whatever stopped the run)
      1     ``MAX_ITER``              ``max_iter`` iterations done (or ``max_iter <= 0``)
      2     ``MAX_EVAL``              ``max_eval`` evaluations done
      3     ``VALUE_CHANGE``          stalled: the value changed by less than ``tolerance_change``
                                      in the last iteration
      4     ``STEP``                  stalled: ``max|step| <= tolerance_change``
      5     ``NO_DESCENT``            converged: torch's directional-derivative test at ``params``,
                                      ``grad·d > -tolerance_change`` for the L-BFGS direction
                                      ``d = -H grad``
      6     ``NON_FINITE``            failed (``failed`` is True): a non-finite gradient or point
                                      (``lr=inf``, an overflowing step); ``params`` is the last
                                      point where both were finite
      7     ``NON_FINITE_VALUE``      the value or the gradient at ``params`` is not finite
      8     ``LINE_SEARCH``           bounds only: the line search found no lower point, even
                                      along the projected gradient
      ====  ========================  =============================================================

      ``converged`` is ``status in (0, 5)``: both are tests of the point ``params`` itself.
      ``-grad·d = grad·H·grad``, with ``H`` L-BFGS's positive-definite inverse-Hessian
      estimate, is the squared Newton decrement: about twice the decrease left to a
      minimum, whatever ``lr``. torch's step and value-change tests (3, 4) stop the run as
      in torch but are reported as stalls: they depend on ``lr`` and on the line search,
      and also hold far from any stationary point (a tiny ``lr`` makes a tiny step at once;
      a line search that finds no lower point returns a zero step). ``result.message`` is
      the status's text (``MinimizeResult.STATUS_MESSAGES``).

    Derivatives: ``minimize`` is differentiable with respect to the float leaves of
    ``*args`` (``jax.grad``, ``jax.jacrev``, ``jax.jvp``, ``jax.jacfwd``, under ``jax.jit``
    and ``jax.vmap``): ``params``, ``value``, ``grad`` and ``aux`` have the derivatives of
    the exact minimizer, by the implicit function theorem at ``params`` (a
    conjugate-gradient solve with Hessian-vector products; see
    :func:`gradxform._implicit.solution_with_implicit_grad`). The iterations are never
    differentiated (they run on ``jax.lax.stop_gradient`` inputs), so the derivatives
    assume ``params`` is a minimum with a positive-definite Hessian: solve to a tight
    ``tolerance_grad``. Derivatives with respect to ``x0`` are zero.

    Non-finite values: a value that is NaN or infinite with a finite gradient is used as
    torch uses it (comparisons with NaN are false), so the iterates follow the
    gradients as torch's do. A non-finite gradient or point, which would carry NaN or
    infinity into torch's parameters, stops the run instead (status 6); inside the line
    search it counts as a failed Armijo test. torch's strong-Wolfe search raises ``IndexError`` when the value is
    NaN at a point meeting the Wolfe conditions in its bracketing phase; ``minimize``
    takes that point and goes on (``torch_compat.optim.LBFGS`` raises torch's error).

    Bounds: with ``bounds=(lower, upper)`` the solver is L-BFGS-B (Byrd, Lu, Nocedal and
    Zhu, 1995) with scipy's rules (:mod:`gradxform.optimizers.lbfgsb`), and on the same
    problem it takes the same iterations and evaluations as
    ``scipy.optimize.minimize(method="L-BFGS-B")`` up to rounding. ``x0`` is projected
    onto the box first, as scipy does; every iterate stays in the box. The options map to
    scipy's: ``tolerance_grad`` is ``gtol`` (the largest entry of the *projected*
    gradient), ``tolerance_change`` is ``ftol`` (stop when ``(f_old - f) / max(|f_old|,
    |f|, 1) <= tolerance_change``), ``history_size`` is ``maxcor``, ``max_iter`` is
    ``maxiter`` and ``max_eval`` is ``maxfun + 1`` (both checked between iterations, so
    the last line search may pass ``max_eval``). The defaults stay this function's
    (``max_iter=20``, ``history_size=100``); scipy's are ``max_iter=15000,
    max_eval=15001, tolerance_grad=1e-5, tolerance_change=2.2e-9, history_size=10``.
    ``lr``, ``line_search_fn`` and ``state`` do not apply (a ``ValueError``), nor do
    complex ``x0``. Statuses 0 (the projected-gradient test; ``converged``), 1, 2, 3 (the
    relative value change, which scipy also reports as success), 7 and 8 (the line
    search found no lower point even without the memory: scipy's
    ``ABNORMAL_TERMINATION_IN_LNSRCH``) occur. ``grad`` is the plain gradient (scipy's
    ``jac``), ``state`` is ``None``. ``lower > upper``, a NaN bound or bounds whose
    structure differs from ``x0``'s raise ``ValueError`` naming the path (bounds traced
    under ``jax.jit`` are not checked).

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> def rosenbrock(x):
      ...     return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
      >>> result = gradxform.minimize(rosenbrock, jnp.array([-1.5, 2.0]), max_iter=200,
      ...                             line_search_fn="strong_wolfe")
      >>> [round(float(v), 4) for v in result.params], bool(result.converged)
      ([1.0, 1.0], True)
      >>> int(result.status), result.message  # float32: the gradient stays above 1e-7
      (5, 'converged: the directional derivative along the L-BFGS direction is above -tolerance_change (grad·H·grad, an estimate of twice the decrease left, is below it)')

      With bounds (L-BFGS-B), the box ``[-2, 0.5]²`` cuts off the minimum at (1, 1):

      >>> boxed = gradxform.minimize(rosenbrock, jnp.array([-1.5, 2.0]), bounds=(-2.0, 0.5), max_iter=100)
      >>> [round(float(v), 4) for v in boxed.params], int(boxed.status)
      ([0.5, 0.25], 0)
    """
    if method != "lbfgs":
        raise ValueError(f"unknown method {method!r}; available: 'lbfgs'")
    # As scipy's setdefault: an explicit tolerance, else tol, else torch's default.
    if tolerance_grad is None:
        tolerance_grad = 1e-7 if tol is None else tol
    if tolerance_change is None:
        tolerance_change = 1e-9 if tol is None else tol
    if bounds is not None:
        from gradxform.optimizers import lbfgsb

        return lbfgsb.minimize_bounded(
            fun, x0, *args, bounds=bounds, lr=lr, max_iter=max_iter, max_eval=max_eval,
            tolerance_grad=tolerance_grad, tolerance_change=tolerance_change, history_size=history_size,
            line_search_fn=line_search_fn, has_aux=has_aux, state=state, callback=callback,
        )  # fmt: skip
    options = LbfgsOptions(lr, max_iter, max_eval, tolerance_grad, tolerance_change, history_size, line_search_fn)
    _check_options(options)
    options = options.resolved()
    # The loop sees no tangents: derivatives in args come from the implicit function
    # theorem at the solution (_implicit), never from the iterations.
    float_args, rebuild_args = split_differentiable(args)
    x0_constant, args_constant = jax.lax.stop_gradient(x0), rebuild_args(jax.lax.stop_gradient(float_args))
    x_flat, unflatten = flatten(x0_constant)
    value_only = lambda p, *a: _with_aux(fun(p, *a), has_aux)[0]  # noqa: E731

    value_and_grad_flat = _flat_value_and_grad(lambda p: value_only(p, *args_constant), unflatten)

    if state is None:
        state = init_state(x_flat.size, x_flat.dtype, history_size, like=x_flat)
    check_state(state, x_flat.size, history_size)
    on_iteration = None if callback is None else _progress_reporter(callback, unflatten)
    run = _run(value_and_grad_flat, x_flat, state, options, on_iteration)

    def final_eval(run):
        value, grad = value_and_grad_flat(run.x)
        return run._replace(loss=jnp.asarray(value).astype(run.loss.dtype), grad=grad)

    run = jax.lax.cond(run.fresh, lambda r: r, final_eval, run)
    status = final_status(run.status, run.loss, run.grad, options.tolerance_grad)
    # The solution and its gradient are placed as x0 (the flat vectors are not: see
    # init_state).
    params = jax.tree.map(_numerics.like_param, unflatten(run.x), x0)
    grad = jax.tree.map(_numerics.like_param, torch_gradient(unflatten(run.grad)), x0)
    params, value, grad, aux = _solution_outputs(fun, has_aux, args, x0, params, run.loss, grad)
    return MinimizeResult(
        params=params,
        value=value,
        grad=grad,
        n_iter=run.n_iter,
        n_evals=run.current_evals,
        converged=jnp.isin(status, jnp.asarray(CONVERGED_STATUSES)),
        failed=run.failed,
        aux=aux,
        state=run.state,
        status=status,
    )


class MultistartResult(NamedTuple):
    """Result of :func:`minimize_multistart`.

    Attributes:
      best: the :class:`MinimizeResult` of the start that reached the lowest value.
      best_index: int32, that start's index.
      all: every start's :class:`MinimizeResult`, batched along a leading axis.
    """

    best: MinimizeResult
    best_index: jax.Array
    all: MinimizeResult


def minimize_multistart(fun: Callable, x0s, *args, **options) -> MultistartResult:
    """:func:`minimize` from several starting points at once; the lowest solution wins.

    The starts are solved together by ``jax.vmap`` of :func:`minimize` (one compiled loop;
    each start stops on its own criterion, and its counters are its own). The best is the
    start with the lowest finite ``value`` among those that did not fail (the first one
    when none qualifies). Jittable, and differentiable with respect to ``args`` as
    :func:`minimize` is (the derivative of the best solution is that of its start).

    Args:
      fun: as in :func:`minimize`.
      x0s: the starting points: a pytree like :func:`minimize`'s ``x0`` whose leaves all
        have one more leading axis, along the starts.
      *args: passed to ``fun``, shared by all starts.
      **options: :func:`minimize`'s keyword options.

    Returns:
      A :class:`MultistartResult`.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> double_well = lambda x: jnp.sum((x ** 2 - 1) ** 2 + 0.3 * x)  # lower well at x < 0
      >>> out = gradxform.minimize_multistart(double_well, jnp.array([[2.0], [-2.0], [0.5]]),
      ...                                     line_search_fn="strong_wolfe")
      >>> int(out.best_index), round(float(out.best.params[0]), 3), out.all.params.shape
      (1, -1.036, (3, 1))
    """
    results = jax.vmap(lambda x0: minimize(fun, x0, *args, **options))(x0s)
    usable = jnp.isfinite(results.value) & ~results.failed
    best_index = jnp.argmin(jnp.where(usable, results.value, jnp.inf)).astype(jnp.int32)
    best = jax.tree.map(lambda leaf: leaf[best_index], results)
    return MultistartResult(best=best, best_index=best_index, all=results)


class MinimizeProgress(NamedTuple):
    """What :func:`minimize`'s ``callback`` receives after an iteration.

    Attributes:
      params: the iterate, a pytree like ``x0``.
      value: the objective there.
      n_iter: int, iterations done.
      n_evals: int, evaluations of the objective so far (as torch counts them).
    """

    params: Any
    value: Any
    n_iter: Any
    n_evals: Any


def _progress_reporter(callback: Callable, unflatten: Callable) -> Callable:
    """An ``on_iteration`` hook (see :func:`lbfgs_tell`) that reports to ``callback`` on the host."""

    def report(ended, params, value, n_iter, n_evals):
        if bool(ended):
            callback(MinimizeProgress(params, value, int(n_iter), int(n_evals)))

    def on_iteration(ended, x, value, n_iter, n_evals):
        jax.debug.callback(report, ended, unflatten(x), value, n_iter, n_evals)

    return on_iteration


def _value_and_torch_grad(fun: Callable) -> Callable:
    """``(x, args) -> (fun(x, *args), torch-convention gradient in x)``."""

    def value_and_grad(x, args):
        value, grad = jax.value_and_grad(fun)(x, *args)
        return value, torch_gradient(grad)

    return value_and_grad


def _solution_outputs(fun, has_aux, args, x0, params, value, grad, bounds=None):
    """``(params, value, grad, aux)`` of a finished solve, differentiable in ``args``.

    ``params`` (placed as ``x0``), ``value`` and ``grad`` are what the solver found, as
    constants. ``params`` gets the implicit derivatives of the minimizer
    (:func:`gradxform._implicit.solution_with_implicit_grad`, with ``bounds`` for
    L-BFGS-B), ``value`` and ``grad`` those of ``fun`` evaluated there, and ``aux`` (with
    ``has_aux``) is recomputed from ``params``. Shared by both solvers of :func:`minimize`.
    """
    value_only = lambda p, *a: _with_aux(fun(p, *a), has_aux)[0]  # noqa: E731
    float_args, rebuild_args = split_differentiable(args)
    # (Placed as x0 again: the implicit rule works on a flat vector.)
    params = jax.tree.map(
        _numerics.like_param, solution_with_implicit_grad(value_only, params, args, bounds=bounds), x0
    )
    value_in_floats = lambda p, *floats: value_only(p, *rebuild_args(floats))  # noqa: E731
    value, grad = _evaluated_at(_value_and_torch_grad(value_in_floats), params, tuple(float_args), value, grad)
    aux = _with_aux(fun(params, *args), has_aux)[1] if has_aux else None
    return params, value, grad, aux


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _evaluated_at(value_and_grad: Callable, x, args, value, grad):
    """``(value, grad)``, computed by the solver at ``x``, with the derivatives they have as
    ``value_and_grad(x, args)``: the derivative rule evaluates there, the primal does not."""
    del value_and_grad, x, args
    return value, grad


@_evaluated_at.defjvp
def _evaluated_at_jvp(value_and_grad, primals, tangents):
    x, args, value, grad = primals
    _, (value_dot, grad_dot) = jax.jvp(value_and_grad, (x, args), tangents[:2])
    grad_dot = jax.tree.map(lambda t, g: t.astype(g.dtype), grad_dot, grad)
    return (value, grad), (jnp.asarray(value_dot).astype(value.dtype), grad_dot)


def final_status(status, value, grad, tolerance_grad):
    """The status of a finished run, judged at its final point (value and ``[n]`` gradient).

    A failed run keeps ``NON_FINITE``. Otherwise a non-finite value or gradient
    there gives ``NON_FINITE_VALUE``, a gradient test met there gives ``GRADIENT``
    (whatever stopped the run: the budget may run out at a stationary point), and else
    the reason the run stopped stands.
    """
    grad_max = _numerics.max_abs(grad)
    finite = jnp.isfinite(value) & jnp.isfinite(grad_max)
    stationary = grad_max <= tolerance_grad
    return jnp.where(
        status == NON_FINITE,
        status,
        jnp.where(~finite, NON_FINITE_VALUE, jnp.where(stationary, GRADIENT, status)),
    ).astype(jnp.int32)


def _with_aux(out, has_aux):
    if has_aux:
        value, aux = out
        return value, aux
    return out, None


class ScaleByLbfgsState(NamedTuple):
    """State of :func:`lbfgs`: the :class:`LbfgsState` of the flattened parameters."""

    lbfgs: LbfgsState


def lbfgs(
    learning_rate=1.0,
    max_iter: int = 20,
    max_eval: int | None = None,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    history_size: int = 100,
    line_search_fn: str | None = None,
) -> GradientTransformation:
    r"""L-BFGS as a transformation: each ``update`` is one torch ``LBFGS.step(closure)``.

    ``update(grads, state, params, *, value_fn, value=None)`` runs up to ``max_iter``
    iterations from ``params`` on the objective ``value_fn(params)`` and returns the
    update to the final iterate. ``grads`` (and ``value``, when given) are the objective's
    gradient (and value) at ``params``; without ``value`` the objective is evaluated there
    once more. The state carries torch's history between updates.

    As in :func:`minimize`: with ``max_iter <= 0`` the update only evaluates the
    objective (once, or not at all when ``value`` is given) and is zero; a non-finite
    value with a finite gradient is used as torch uses it, and a non-finite gradient or
    point stops the step at the last point where both were finite. Updates without leaves (``{}``,
    ``None``) come back as they are, without calling ``value_fn``; ``params`` may then be
    left out. A state of another size is refused with a ``ValueError`` when traced.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform
      >>> f = lambda p: jnp.sum((p["w"] - 3.0) ** 2)
      >>> tx = gradxform.lbfgs(line_search_fn="strong_wolfe")
      >>> params = {"w": jnp.zeros(2)}
      >>> state = tx.init(params)
      >>> value, grads = jax.value_and_grad(f)(params)
      >>> updates, state = tx.update(grads, state, params, value_fn=f, value=value)
      >>> gradxform.apply_updates(params, updates)["w"].tolist()
      [3.0, 3.0]
    """
    options = LbfgsOptions(
        learning_rate, max_iter, max_eval, tolerance_grad, tolerance_change, history_size, line_search_fn
    )
    _check_options(options)
    options = options.resolved()

    def init(params):
        flat, _ = flatten(params)
        return ScaleByLbfgsState(init_state(flat.size, flat.dtype, history_size, like=flat))

    def update(updates, state, params=None, *, value_fn=None, value=None, **extra_args):
        del extra_args
        if value_fn is None or (params is None and not _numerics.has_no_leaves(updates)):
            raise ValueError("lbfgs needs params and the objective: update(grads, state, params, value_fn=f)")
        if params is not None:
            _treecheck.check_updates(updates, params)
        if _numerics.has_no_leaves(updates):  # nothing to optimize: the objective is not called
            return updates, state
        x_flat, unflatten = flatten(params)
        check_state(state.lbfgs, x_flat.size, history_size)

        value_and_grad_flat = _flat_value_and_grad(value_fn, unflatten)

        # When the caller evaluated params already, that is the first evaluation.
        at_x = None if value is None else (value, flatten(torch_gradient(updates))[0].astype(x_flat.dtype))
        run = _run(value_and_grad_flat, x_flat, state.lbfgs, options, at_x=at_x)
        new_params = unflatten(run.x)
        updates = jax.tree.map(lambda new, p: _numerics.like_param(new - p, p), new_params, params)
        return updates, ScaleByLbfgsState(_numerics.keep_placement(run.state, state.lbfgs))

    return GradientTransformation(init, update)
