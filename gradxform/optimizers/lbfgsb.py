"""L-BFGS-B: bound-constrained L-BFGS, compiled as one ``lax.while_loop``.

``gradxform.minimize(fun, x0, bounds=(lower, upper))`` runs this solver. It is the
projected limited-memory BFGS method of Byrd, Lu, Nocedal and Zhu (1995), with the rules
of scipy's ``L-BFGS-B`` (version 3.0, Morales and Nocedal 2011), so on the same problem
it visits nearly the same points and stops for the same reasons:

1. the **generalised Cauchy point**: the first local minimiser of the quadratic model
   ``m(x + z) = f + g·z + z·B z / 2`` along the projected steepest-descent path
   ``P(x - t g)``, with ``B = theta I - W M Wᵀ`` the compact limited-memory matrix. The
   path's breakpoints are sorted once and the model's slope and curvature on every
   segment come from prefix sums, so the search has no sequential loop;
2. **subspace minimisation** (the direct primal method): the model is minimised over the
   variables left free at the Cauchy point (a ``2m x 2m`` solve by the
   Sherman-Morrison-Woodbury formula), the result projected onto the box, and truncated
   back to the box instead when the projection is not a descent direction;
3. a **feasible line search**: MINPACK-2's More-Thuente search (``dcsrch``, ``ftol=1e-3``,
   ``gtol=0.9``, ``xtol=0.1``) on ``[0, largest feasible step]``, at most 20 evaluations;
   a failed search drops the memory and retries along the projected gradient once.

The loop runs one evaluation of ``fun`` per iteration (:func:`_solve`): a branch that
evaluates and takes one ``dcsrch`` step (:func:`_tell`), then, when an iteration ended, a
branch that updates the memory and plans the next one (:func:`_plan`). Its state is
carried packed in four arrays (:class:`_Packed`). On problems of a few variables the
time goes to XLA's per-kernel and per-thread-handoff costs rather than to arithmetic,
and this layout keeps both low.

The two-loop recursion of unbounded L-BFGS has no place here (the bounded method needs
``B`` itself, not its inverse); the pytree flattening is :mod:`lbfgs`'s.

References:
  R. H. Byrd, P. Lu, J. Nocedal, C. Zhu. A limited memory algorithm for bound
  constrained optimization. SIAM J. Sci. Comput. 16(5), 1995.
  J. L. Morales, J. Nocedal. Remark on "Algorithm 778: L-BFGS-B". ACM TOMS 38(1), 2011.
  J. J. More, D. J. Thuente. Line search algorithms with guaranteed sufficient decrease.
  ACM TOMS 20(3), 1994.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gradxform import _numerics
from gradxform._implicit import split_differentiable
from gradxform._paths import path_string
from gradxform.optimizers import lbfgs as _lbfgs

INIT, SEARCH, DONE, PLAN = 0, 1, 2, 3
# The memory change an ended line search leaves to the plan (BoundedRun.pending).
KEEP, ADD_PAIR, DROP = 0, 1, 2
# dcsrch's answers: evaluate at the new step, or stop (converged or a warning: both
# accept the step).
_FG, _CONVERGED, _WARNING = 0, 1, 2

MAX_LINE_SEARCH = 20  # scipy's maxls: evaluations per line search
_FTOL, _GTOL, _XTOL = 1e-3, 0.9, 0.1  # dcsrch's constants in L-BFGS-B
_BIG_STEP = 1e10  # the line search's step bound without bounds


class SearchState(NamedTuple):
    """MINPACK-2 ``dcsrch``'s saved variables (scalars of the vector dtype).

    Attributes:
      brackt: bool, a minimiser is bracketed.
      stage: int32, 1 until the modified function has a nonpositive value and positive
        slope, then 2.
      ginit, gtest, finit: slope at 0, ``ftol * ginit``, value at 0.
      stx, fx, gx: the best step so far, its value and slope.
      sty, fy, gy: the other end of the interval.
      stmin, stmax: the interval the next step is drawn from.
      width, width1: the interval's last two widths (for the bisection safeguard).
    """

    brackt: jax.Array
    stage: jax.Array
    ginit: jax.Array
    gtest: jax.Array
    finit: jax.Array
    stx: jax.Array
    fx: jax.Array
    gx: jax.Array
    sty: jax.Array
    fy: jax.Array
    gy: jax.Array
    stmin: jax.Array
    stmax: jax.Array
    width: jax.Array
    width1: jax.Array


def _search_start(f, g, stp, stpmax) -> SearchState:
    zero = jnp.zeros_like(f)
    return SearchState(
        brackt=jnp.asarray(False),
        stage=jnp.asarray(1, jnp.int32),
        ginit=g,
        gtest=_FTOL * g,
        finit=f,
        stx=zero,
        fx=f,
        gx=g,
        sty=zero,
        fy=f,
        gy=g,
        stmin=zero,
        stmax=stp + 4.0 * stp,
        width=stpmax,
        width1=stpmax / 0.5,
    )


def _cubic_step(stx, fx, dx, sty, fy, dy, stp, fp, dp, brackt, stpmin, stpmax):
    """MINPACK-2 ``dcstep``: the safeguarded next step and the updated interval.

    Four cases on the new point (value ``fp``, slope ``dp`` at ``stp``) against the best
    one (``stx``): a higher value (a minimiser is bracketed: cubic or quadratic
    interpolation), a slope of opposite sign (bracketed: cubic or secant), a smaller
    slope of the same sign (extrapolate, safeguarded), or a larger one (cubic through
    ``stp`` and ``sty`` when bracketed, else the interval's end).
    """
    sgnd = dp * jnp.sign(dx)

    def gamma_of(theta, a, b, clamp=False):
        s = jnp.maximum(jnp.abs(theta), jnp.maximum(jnp.abs(a), jnp.abs(b)))
        inner = (theta / s) ** 2 - (a / s) * (b / s)
        return s * jnp.sqrt(jnp.maximum(inner, 0.0) if clamp else inner)

    theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
    # Case 1: a higher value.
    gamma = gamma_of(theta, dx, dp)
    gamma = jnp.where(stp < stx, -gamma, gamma)
    r = ((gamma - dx) + theta) / (((gamma - dx) + gamma) + dp)
    stpc = stx + r * (stp - stx)
    stpq = stx + ((dx / ((fx - fp) / (stp - stx) + dx)) / 2.0) * (stp - stx)
    case1 = jnp.where(jnp.abs(stpc - stx) < jnp.abs(stpq - stx), stpc, stpc + (stpq - stpc) / 2.0)
    # Case 2: slopes of opposite sign.
    gamma = gamma_of(theta, dx, dp)
    gamma = jnp.where(stp > stx, -gamma, gamma)
    r = ((gamma - dp) + theta) / (((gamma - dp) + gamma) + dx)
    stpc = stp + r * (stx - stp)
    stpq = stp + (dp / (dp - dx)) * (stx - stp)
    case2 = jnp.where(jnp.abs(stpc - stp) > jnp.abs(stpq - stp), stpc, stpq)
    # Case 3: same sign, the slope's magnitude decreases.
    gamma = gamma_of(theta, dx, dp, clamp=True)
    gamma = jnp.where(stp > stx, -gamma, gamma)
    r = ((gamma - dp) + theta) / ((gamma + (dx - dp)) + gamma)
    stpc = jnp.where((r < 0) & (gamma != 0), stp + r * (stx - stp), jnp.where(stp > stx, stpmax, stpmin))
    stpq = stp + (dp / (dp - dx)) * (stx - stp)
    closer = jnp.where(jnp.abs(stpc - stp) < jnp.abs(stpq - stp), stpc, stpq)
    bracketed = jnp.where(
        stp > stx, jnp.minimum(stp + 0.66 * (sty - stp), closer), jnp.maximum(stp + 0.66 * (sty - stp), closer)
    )
    farther = jnp.where(jnp.abs(stpc - stp) > jnp.abs(stpq - stp), stpc, stpq)
    case3 = jnp.where(brackt, bracketed, jnp.maximum(stpmin, jnp.minimum(stpmax, farther)))
    # Case 4: same sign, the slope does not decrease.
    theta4 = 3.0 * (fp - fy) / (sty - stp) + dy + dp
    gamma = gamma_of(theta4, dy, dp)
    gamma = jnp.where(stp > sty, -gamma, gamma)
    r = ((gamma - dp) + theta4) / (((gamma - dp) + gamma) + dy)
    case4 = jnp.where(brackt, stp + r * (sty - stp), jnp.where(stp > stx, stpmax, stpmin))

    higher, opposite = fp > fx, sgnd < 0
    stpf = jnp.select([higher, opposite, jnp.abs(dp) < jnp.abs(dx)], [case1, case2, case3], case4)
    brackt = brackt | higher | opposite
    # The new interval: a higher value becomes its far end; otherwise the new point is
    # the best one, and the old best becomes the far end when the slopes differ in sign.
    move_y = higher | opposite
    y_from = lambda at_x, at_p: jnp.where(higher, at_p, at_x)  # noqa: E731
    sty, fy, dy = (jnp.where(move_y, y_from(a, b), c) for a, b, c in ((stx, stp, sty), (fx, fp, fy), (dx, dp, dy)))
    stx, fx, dx = (jnp.where(higher, a, b) for a, b in ((stx, stp), (fx, fp), (dx, dp)))
    return stx, fx, dx, sty, fy, dy, stpf, brackt


def _search_step(s: SearchState, f, g, stp, stpmax):
    """One ``dcsrch`` call after an evaluation at ``stp``: ``(state, next stp, task)``.

    ``task`` is ``_FG`` (evaluate at the next step), ``_CONVERGED`` (the strong Wolfe
    conditions with ``ftol``/``gtol`` hold) or ``_WARNING`` (no further progress is
    possible; the step is taken as it is, as in L-BFGS-B).
    """
    stpmin = jnp.zeros_like(stp)
    ftest = s.finit + stp * s.gtest
    stage = jnp.where((s.stage == 1) & (f <= ftest) & (g >= 0), 2, s.stage).astype(jnp.int32)
    warn = (
        (s.brackt & ((stp <= s.stmin) | (stp >= s.stmax)))
        | (s.brackt & (s.stmax - s.stmin <= _XTOL * s.stmax))
        | ((stp == stpmax) & (f <= ftest) & (g <= s.gtest))
        | ((stp == stpmin) & ((f > ftest) | (g >= s.gtest)))
    )
    converged = (f <= ftest) & (jnp.abs(g) <= _GTOL * (-s.ginit))
    task = jnp.where(converged, _CONVERGED, jnp.where(warn, _WARNING, _FG)).astype(jnp.int32)

    # Stage 1 with a lower value above the sufficient-decrease line: step on the
    # modified function f(stp) - stp * gtest.
    modified = (stage == 1) & (f <= s.fx) & (f > ftest)
    shift = jnp.where(modified, s.gtest, 0.0)
    stx, fx, gx, sty, fy, gy, new_stp, brackt = _cubic_step(
        s.stx, s.fx - s.stx * shift, s.gx - shift,
        s.sty, s.fy - s.sty * shift, s.gy - shift,
        stp, f - stp * shift, g - shift, s.brackt, s.stmin, s.stmax,
    )  # fmt: skip
    fx, fy, gx, gy = fx + stx * shift, fy + sty * shift, gx + shift, gy + shift
    # Bisect when the bracket does not shrink fast enough.
    bisect = brackt & (jnp.abs(sty - stx) >= 0.66 * s.width1)
    new_stp = jnp.where(bisect, stx + 0.5 * (sty - stx), new_stp)
    width1 = jnp.where(brackt, s.width, s.width1)
    width = jnp.where(brackt, jnp.abs(sty - stx), s.width)
    stmin = jnp.where(brackt, jnp.minimum(stx, sty), new_stp + 1.1 * (new_stp - stx))
    stmax = jnp.where(brackt, jnp.maximum(stx, sty), new_stp + 4.0 * (new_stp - stx))
    new_stp = jnp.minimum(jnp.maximum(new_stp, stpmin), stpmax)
    stuck = brackt & ((new_stp <= stmin) | (new_stp >= stmax) | (stmax - stmin <= _XTOL * stmax))
    new_stp = jnp.where(stuck, stx, new_stp)
    moved = SearchState(brackt, stage, s.ginit, s.gtest, s.finit, stx, fx, gx, sty, fy, gy, stmin, stmax, width, width1)
    keep = task != _FG
    out = jax.tree.map(lambda a, b: jnp.where(keep, a, b), s._replace(stage=stage), moved)
    return out, jnp.where(keep, stp, new_stp), task


# -- the limited-memory matrix --------------------------------------------------------


class Memory(NamedTuple):
    """The compact L-BFGS matrix ``B = theta I - W M Wᵀ`` (``m`` = history size).

    Attributes:
      s, y: ``[m, n]``, the last ``count`` steps and gradient changes, oldest first, in
        the last ``count`` rows (the others are zero).
      count: int32, number of stored pairs.
      theta: scalar, ``y·y / s·y`` of the newest pair (1 without pairs).
    """

    s: jax.Array
    y: jax.Array
    count: jax.Array
    theta: jax.Array


def _empty_memory(m: int, n: int, dtype) -> Memory:
    return Memory(jnp.zeros((m, n), dtype), jnp.zeros((m, n), dtype), jnp.zeros([], jnp.int32), jnp.ones([], dtype))


def _compact(memory: Memory):
    """``(W, M, M⁻¹)``: ``W = [Y, theta S]`` (``[n, 2m]``) and the middle matrix.

    ``M⁻¹ = [[-D, Lᵀ], [L, theta SᵀS]]`` with ``D = diag(sᵢ·yᵢ)`` and ``L`` the strictly
    lower part of ``SᵀY``. Unused slots get identity rows and columns (and zero columns
    in ``W``), so they drop out of every product.
    """
    m = memory.s.shape[0]
    theta = memory.theta
    sy = memory.s @ memory.y.T
    ss = memory.s @ memory.s.T
    low = jnp.tril(sy, -1)
    inverse = jnp.block([[-jnp.diag(jnp.diag(sy)), low.T], [low, theta * ss]])
    used = jnp.tile(jnp.arange(m) >= m - memory.count, 2)
    both = used[:, None] & used[None, :]
    eye = jnp.eye(2 * m, dtype=inverse.dtype)
    inverse = jnp.where(both, inverse, eye)
    w = jnp.concatenate([memory.y.T, theta * memory.s.T], axis=1)
    return w, jnp.linalg.inv(inverse), inverse


# -- one iteration's direction ---------------------------------------------------------


def projected_gradient(x, g, lower, upper):
    """The projected gradient whose largest entry scipy's ``pgtol`` tests.

    A component pushing ``x`` out through a bound it sits on counts only as far as the
    bound allows (``x - u`` or ``x - l``), so at a bound-constrained minimum it is 0.
    """
    return jnp.where(g < 0, jnp.maximum(x - upper, g), jnp.minimum(x - lower, g))


def _cauchy_point(x, g, lower, upper, w, middle, theta):
    """The generalised Cauchy point: ``(xcp, free, c = Wᵀ(xcp - x))``.

    ``free`` marks the variables not held at a bound there (the subspace minimisation
    moves only those).
    """
    n = x.size
    eps = jnp.finfo(x.dtype).eps
    at_lower = x <= lower
    at_upper = x >= upper
    held = (at_lower & (g >= 0)) | (at_upper & (g <= 0))
    d = jnp.where(held, 0.0, -g)
    moving = d != 0
    breakpoint_ = jnp.where(d < 0, (x - lower) / -d, jnp.where(d > 0, (upper - x) / d, jnp.inf))
    breakpoint_ = jnp.where(moving, breakpoint_, jnp.inf)
    order = jnp.argsort(breakpoint_)
    rank = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    ds, ts, ws = d[order], breakpoint_[order], w[order]

    # Prefix and suffix sums as parallel scans: XLA's CPU backend runs jnp.cumsum as a
    # reduce-window, quadratic in n (400 us for n = 1000, against 90).
    def prefix(v):
        return jax.lax.associative_scan(jnp.add, v, axis=0)

    def suffix(v):
        return jnp.concatenate([jax.lax.associative_scan(jnp.add, v, reverse=True, axis=0), jnp.zeros_like(v[:1])])

    # Segment j runs from the j-th smallest breakpoint (0 for j = 0) to the next one; on it
    # the variables of rank >= j move along d, the others sit at their bound.
    starts = jnp.concatenate([jnp.zeros(1, x.dtype), ts])
    ends = jnp.concatenate([ts, jnp.full(1, jnp.inf, x.dtype)])
    valid = jnp.isfinite(starts)
    t0 = jnp.where(valid, starts, 0.0)
    moving_sq = suffix(ds**2)  # d_j·d_j
    p = suffix(ws * ds[:, None])  # Wᵀ d_j
    at_bound = jnp.where(jnp.isfinite(ts), ts * ds, 0.0)
    c = jnp.concatenate([jnp.zeros_like(ws[:1]), prefix(ws * at_bound[:, None])]) + t0[:, None] * p
    pm = p @ middle
    slope = -moving_sq + theta * t0 * moving_sq - jnp.sum(pm * c, axis=1)
    curvature = theta * moving_sq - jnp.sum(pm * p, axis=1)
    curvature = jnp.maximum(eps * curvature[0], curvature)
    step = -slope / curvature
    inside = valid & (step < ends - starts)
    j = jnp.argmax(inside)
    t_star = starts[j] + jnp.maximum(step[j], 0.0)
    passed = moving & (rank < j)
    bound = jnp.where(d > 0, upper, lower)
    xcp = jnp.where(passed, bound, x + t_star * d)
    any_moving = jnp.any(moving)
    xcp = jnp.where(any_moving, xcp, x)
    free = ~held & ~(passed & any_moving)
    return xcp, free, w.T @ (xcp - x)


def _subspace_minimum(x, g, lower, upper, xcp, free, c, w, middle, inverse, theta):
    """Minimises the model over the free variables from ``xcp`` (direct primal method)."""
    r = jnp.where(free, -(g + theta * (xcp - x) - w @ (middle @ c)), 0.0)
    wf = w * free[:, None]
    k = inverse - (wf.T @ wf) / theta
    v = jnp.linalg.solve(k, wf.T @ r)
    du = (r + (wf @ v) / theta) / theta
    projected = jnp.where(free, jnp.clip(xcp + du, lower, upper), xcp)
    touched = jnp.any(free & ((projected == lower) | (projected == upper)))
    uphill = jnp.vdot(projected - x, g) > 0
    # The projection is not a descent direction: truncate the step at the first bound.
    ratio = jnp.where(
        free & (du < 0),
        jnp.where(lower - xcp >= 0, 0.0, (lower - xcp) / du),
        jnp.where(free & (du > 0), jnp.where(upper - xcp <= 0, 0.0, (upper - xcp) / du), jnp.inf),
    )
    first = jnp.argmin(ratio)
    alpha = jnp.minimum(1.0, ratio[first])
    truncated = xcp + alpha * du
    hit = (jnp.arange(x.size) == first) & (alpha < 1)
    truncated = jnp.where(hit, jnp.where(du > 0, upper, lower), truncated)
    return jnp.where(touched & uphill, truncated, projected)


def _target(x, g, lower, upper, memory: Memory, constrained):
    """``(z, usable)``: the point the line search heads for (``d = z - x``), and whether
    the middle matrix could be formed (else the memory must go, as after L-BFGS-B's
    failed Cholesky factorisation)."""
    w, middle, inverse = _compact(memory)
    usable = jnp.all(jnp.isfinite(middle))
    has_pairs = memory.count > 0

    def cauchy(_):
        return _cauchy_point(x, g, lower, upper, w, middle, memory.theta)

    def unconstrained(_):  # L-BFGS-B skips the Cauchy point without bounds
        return x, jnp.ones(x.shape, bool), jnp.zeros(w.shape[1], x.dtype)

    if constrained is True:  # known finite bounds: always the Cauchy point
        xcp, free, c = cauchy(None)
    else:
        xcp, free, c = jax.lax.cond(constrained | ~has_pairs, cauchy, unconstrained, None)
    z = jax.lax.cond(
        has_pairs & jnp.any(free),
        lambda _: _subspace_minimum(x, g, lower, upper, xcp, free, c, w, middle, inverse, memory.theta),
        lambda _: xcp,
        None,
    )
    return z, usable


# -- the solver ------------------------------------------------------------------------


class BoundedRun(NamedTuple):
    """The solve in progress (n unknowns; scalars of the vector dtype unless noted)."""

    phase: jax.Array  # int32: INIT, SEARCH or DONE
    status: jax.Array  # int32, why the run stopped (RUNNING until it does)
    x: jax.Array  # [n], the current iterate (always evaluated)
    value: jax.Array
    grad: jax.Array  # [n]
    memory: Memory
    n_iter: jax.Array  # int32, accepted iterations (scipy's nit)
    n_evals: jax.Array  # int32, evaluations of fun (scipy's nfev)
    direction: jax.Array  # [n], d = z - x
    target: jax.Array  # [n], z
    step: jax.Array  # the step length to evaluate next
    max_step: jax.Array  # the largest feasible step
    slope0: jax.Array  # g·d at x
    search_evals: jax.Array  # int32, evaluations in this line search
    search: SearchState
    failed: jax.Array  # bool: stopped at a non-finite first point
    pending: jax.Array  # int32, KEEP, ADD_PAIR or DROP: the memory change _plan makes first
    change: jax.Array  # [n], the accepted step's gradient change (the pair's y)


class _Packed(NamedTuple):
    """A :class:`BoundedRun` as the loop carries it: four arrays instead of 38.

    XLA's CPU backend spends a kernel (a select or a copy) per carried array and per
    iteration on top of the arithmetic, which on problems of a few variables is most of
    the time; packed, these costs are paid four times instead of 38. The solver's code
    works on the :class:`BoundedRun` view (:func:`_unpack`, :func:`_pack`: exact).

    Attributes:
      vectors: ``[5, n]``: ``x, grad, direction, target, change``.
      memory: ``[2, m, n]``: the memory's ``s`` and ``y`` (``None`` where the code
        does not need them: see :func:`_solve`).
      reals: ``value, step, max_step, slope0``, the memory's ``theta``, then the search
        state's real fields (``_SEARCH_REALS``).
      ints: int32 ``phase, status, n_iter, n_evals, search_evals``, the memory's
        ``count``, ``failed``, ``pending``, then the search state's ``brackt`` and
        ``stage``.
    """

    vectors: jax.Array
    memory: jax.Array
    reals: jax.Array
    ints: jax.Array


_SEARCH_REALS = tuple(f for f in SearchState._fields if f not in ("brackt", "stage"))


def _stacked(parts, dtype):
    """``jnp.stack(parts)``, written as selects: XLA fuses these, and the computations of
    the parts, into one kernel, where a stack costs one kernel per part."""
    index = jax.lax.broadcasted_iota(jnp.int32, (len(parts), *jnp.shape(parts[0])), 0)
    out = jnp.zeros(index.shape, dtype)
    for i, part in enumerate(parts):
        out = jnp.where(index == i, jnp.asarray(part).astype(dtype), out)
    return out


def _pack(run: BoundedRun) -> _Packed:
    search = run.search
    dtype = run.x.dtype
    return _Packed(
        vectors=_stacked([run.x, run.grad, run.direction, run.target, run.change], dtype),
        memory=None if run.memory.s is None else _stacked([run.memory.s, run.memory.y], dtype),
        reals=_stacked(
            [run.value, run.step, run.max_step, run.slope0, run.memory.theta]
            + [getattr(search, f) for f in _SEARCH_REALS],
            dtype,
        ),
        ints=_stacked(
            [run.phase, run.status, run.n_iter, run.n_evals, run.search_evals, run.memory.count]
            + [run.failed, run.pending, search.brackt, search.stage],
            jnp.int32,
        ),
    )


def _unpack(packed: _Packed) -> BoundedRun:
    x, grad, direction, target, change = packed.vectors
    value, step, max_step, slope0, theta, *search_reals = packed.reals
    phase, status, n_iter, n_evals, search_evals, count, failed, pending, brackt, stage = packed.ints
    s, y = (None, None) if packed.memory is None else packed.memory
    search = SearchState(brackt=brackt.astype(bool), stage=stage, **dict(zip(_SEARCH_REALS, search_reals)))
    return BoundedRun(
        phase=phase,
        status=status,
        x=x,
        value=value,
        grad=grad,
        memory=Memory(s, y, count, theta),
        n_iter=n_iter,
        n_evals=n_evals,
        direction=direction,
        target=target,
        step=step,
        max_step=max_step,
        slope0=slope0,
        search_evals=search_evals,
        search=search,
        failed=failed.astype(bool),
        pending=pending,
        change=change,
    )


class BoundedOptions(NamedTuple):
    max_iter: Any
    max_eval: Any
    tolerance_grad: Any
    tolerance_change: Any


def _trial(run: BoundedRun, lower, upper):
    off_target = jnp.clip(run.x + run.step * run.direction, lower, upper)
    return jnp.where((run.phase == SEARCH) & (run.step != 1), off_target, jnp.where(run.phase == SEARCH, run.target, run.x))


def _select(pred, on_true, on_false):
    """``on_true`` where ``pred`` else ``on_false``, leaf by leaf (both computed: cheap)."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def _plan_once(run: BoundedRun, lower, upper, constrained, boxed) -> BoundedRun:
    """The iteration's direction and the start of its line search.

    A direction that is not downhill drops the memory and leaves the phase at ``PLAN`` (the
    direction is then recomputed along the projected gradient, see :func:`_plan`); one not
    downhill without memory stops the run (``LINE_SEARCH``).
    """
    z, usable = _target(run.x, run.grad, lower, upper, run.memory, constrained)
    d = z - run.x
    slope = jnp.vdot(run.grad, d)
    retry = ~((slope < 0) & usable) & (run.memory.count > 0)
    empty = run._replace(memory=_empty_memory(*run.memory.s.shape, run.x.dtype))
    started = _start_line_search(run, z, d, slope, lower, upper, constrained, boxed)
    return _select(retry, empty, started)


def _remember(run: BoundedRun) -> BoundedRun:
    """Makes the memory change the line search left pending (``run.pending``)."""
    slope = jnp.vdot(run.grad, run.direction).astype(run.x.dtype)
    added = _update_memory(run.memory, run.step * run.direction, run.change, slope - run.slope0, run.slope0, run.step)
    dropped = _empty_memory(*run.memory.s.shape, run.x.dtype)
    memory = _select(run.pending == ADD_PAIR, added, _select(run.pending == DROP, dropped, run.memory))
    return run._replace(memory=memory, pending=jnp.asarray(KEEP, jnp.int32))


def _plan(packed: _Packed, lower, upper, constrained, boxed) -> _Packed:
    """Phase ``PLAN``: the pending memory change, :func:`_plan_once`, and once more without
    memory when it asks to (the second never does: it has no memory to drop). Leaves
    ``SEARCH`` or ``DONE``."""
    plan = lambda run: _pack(_plan_once(run, lower, upper, constrained, boxed))  # noqa: E731
    # (The barrier keeps XLA from moving the packing into the branches, which would
    # unpack the branch's operands again.)
    packed = jax.lax.optimization_barrier(plan(_remember(_unpack(packed))))
    return jax.lax.cond(packed.ints[0] == PLAN, lambda p: plan(_unpack(p)), lambda p: p, packed)


def _start_line_search(run, z, d, slope, lower, upper, constrained, boxed):
    norm = jnp.sqrt(jnp.vdot(d, d))
    ratio = jnp.where(
        d < 0,
        jnp.where(lower - run.x >= 0, 0.0, (lower - run.x) / d),
        jnp.where(d > 0, jnp.where(upper - run.x <= 0, 0.0, (upper - run.x) / d), jnp.inf),
    )
    feasible = jnp.minimum(_BIG_STEP, jnp.min(ratio, initial=jnp.inf))
    first = run.n_iter == 0
    max_step = jnp.where(constrained, jnp.where(first, 1.0, feasible), _BIG_STEP).astype(run.x.dtype)
    step = jnp.where(first & jnp.logical_not(boxed), jnp.minimum(1.0 / norm, max_step), 1.0)
    step = jnp.minimum(step, max_step).astype(run.x.dtype)
    stop = ~(slope < 0)
    started = run._replace(
        phase=jnp.asarray(SEARCH, jnp.int32),
        direction=d,
        target=z,
        step=step,
        max_step=max_step,
        slope0=slope.astype(run.x.dtype),
        search_evals=jnp.zeros([], jnp.int32),
        search=_search_start(run.value, slope.astype(run.x.dtype), step, max_step),
    )
    stopped = run._replace(phase=jnp.asarray(DONE, jnp.int32), status=jnp.asarray(LINE_SEARCH, jnp.int32))
    return _select(stop, stopped, started)


def _update_memory(memory: Memory, s, y, slope_change, slope0, step) -> Memory:
    """Adds the pair ``(s, y)`` unless ``s·y <= eps * (-g·s)`` (L-BFGS-B's skip rule)."""
    eps = jnp.finfo(s.dtype).eps
    sy = slope_change * step
    keep = sy > eps * (-slope0 * step)
    added = Memory(
        s=jnp.roll(memory.s, -1, axis=0).at[-1].set(s),
        y=jnp.roll(memory.y, -1, axis=0).at[-1].set(y),
        count=jnp.minimum(memory.count + 1, memory.s.shape[0]),
        theta=jnp.vdot(y, y) / sy,
    )
    return _select(keep, added, memory)


def _tell(run: BoundedRun, value, grad, lower, upper, options: BoundedOptions) -> BoundedRun:
    """Feeds ``fun``'s value and gradient at :func:`_trial`; returns the advanced run.

    The run leaves in phase ``SEARCH`` (evaluate the next step), ``PLAN`` (an iteration
    ended, or a line search failed with memory to drop: :func:`_plan` comes next and
    makes the memory change left ``pending``) or ``DONE``; ``run.memory`` holds only
    ``count`` and ``theta`` here. Every outcome is cheap, so all are computed and the
    right one selected: on XLA's CPU backend a branch costs more than these few scalars.
    """
    dtype = run.x.dtype
    value = jnp.asarray(value).astype(dtype)
    grad = grad.astype(dtype)
    finite = jnp.isfinite(value) & _numerics.all_finite(grad)
    plan_next = jnp.asarray(PLAN, jnp.int32)

    def done(r, status):
        return r._replace(phase=jnp.asarray(DONE, jnp.int32), status=jnp.asarray(status, jnp.int32))

    # The first evaluation, at x0 (phase INIT).
    first = run._replace(value=value, grad=grad, n_evals=jnp.ones([], jnp.int32))
    pg = _numerics.max_abs(projected_gradient(first.x, grad, lower, upper))
    stop_grad = pg <= options.tolerance_grad
    stop = ~finite | stop_grad | (jnp.asarray(options.max_iter) <= 0)
    status = jnp.where(~finite, _lbfgs.NON_FINITE_VALUE, jnp.where(stop_grad, _lbfgs.GRADIENT, _lbfgs.MAX_ITER))
    initial = _select(stop, done(first, status)._replace(failed=~finite), first._replace(phase=plan_next))

    # An evaluation of the line search (phase SEARCH): one dcsrch call.
    x_new = _trial(run, lower, upper)
    n_evals = run.n_evals + 1
    search_evals = run.search_evals + 1
    slope = jnp.vdot(grad, run.direction).astype(dtype)
    search, next_step, task = _search_step(run.search, value, slope, run.step, run.max_step)
    # A non-finite evaluation halves the step towards the best point and goes on.
    search = _select(finite, search, run.search)
    next_step = jnp.where(finite, next_step, run.search.stx + 0.5 * (run.step - run.search.stx))
    task = jnp.where(finite, task, _FG)
    searching = run._replace(n_evals=n_evals, search_evals=search_evals, search=search, step=next_step)

    # The step is accepted: the iteration ends, and the run stops or updates its memory.
    accepted = searching._replace(x=x_new, value=value, grad=grad, n_iter=searching.n_iter + 1)
    pg = _numerics.max_abs(projected_gradient(x_new, grad, lower, upper))
    scale = jnp.maximum(jnp.maximum(jnp.abs(run.value), jnp.abs(value)), 1.0)
    checks = [
        accepted.n_iter >= options.max_iter,
        n_evals >= options.max_eval,
        pg <= options.tolerance_grad,
        (run.value - value) <= options.tolerance_change * scale,
    ]
    codes = [_lbfgs.MAX_ITER, _lbfgs.MAX_EVAL, _lbfgs.GRADIENT, _lbfgs.VALUE_CHANGE]
    stop = checks[0] | checks[1] | checks[2] | checks[3]
    # (The plan adds the pair: the memory stays out of this part, see _solve.)
    go_on = accepted._replace(phase=plan_next, pending=jnp.asarray(ADD_PAIR, jnp.int32), change=grad - run.grad)
    accept = _select(stop, done(accepted, jnp.select(checks, codes, _lbfgs.RUNNING)), go_on)
    # The search ran out of evaluations: back at x, drop the memory and retry along the
    # projected gradient, or stop when the memory was empty already.
    retry = searching._replace(phase=plan_next, pending=jnp.asarray(DROP, jnp.int32))
    give_up = _select(run.memory.count > 0, retry, done(searching, LINE_SEARCH))

    after_search = _select(task != _FG, accept, _select(search_evals >= MAX_LINE_SEARCH, give_up, searching))
    return _select(run.phase == INIT, initial, after_search)


LINE_SEARCH = _lbfgs.LINE_SEARCH


def _solve(
    value_and_grad, x0, lower, upper, history_size: int, options: BoundedOptions, on_iteration=None, bounded=None
) -> BoundedRun:
    """Runs L-BFGS-B from ``x0`` in one ``lax.while_loop``, one evaluation of ``fun`` per
    iteration of the loop.

    ``on_iteration(ended, x, value, n_iter, n_evals)``, if given, is called after each
    evaluation (``ended`` true when it completed an iteration, as
    :func:`gradxform.optimizers.lbfgs.lbfgs_tell`'s). ``bounded``, if given, is
    ``(constrained, boxed)`` as Python bools: whether any bound, and every bound, is finite
    (known when the bounds are not traced; else computed in the loop).
    """
    n, dtype = x0.size, x0.dtype
    if bounded is None:
        bounded = jnp.any(jnp.isfinite(lower) | jnp.isfinite(upper)), jnp.all(jnp.isfinite(lower) & jnp.isfinite(upper))
    constrained, boxed = bounded
    zero = jnp.zeros([], dtype)
    zero_i = jnp.zeros([], jnp.int32)
    run = BoundedRun(
        phase=jnp.asarray(INIT, jnp.int32),
        status=jnp.asarray(_lbfgs.RUNNING, jnp.int32),
        x=x0,
        value=zero,
        grad=jnp.zeros_like(x0),
        memory=_empty_memory(history_size, n, dtype),
        n_iter=zero_i,
        n_evals=zero_i,
        direction=jnp.zeros_like(x0),
        target=x0,
        step=zero,
        max_step=zero,
        slope0=zero,
        search_evals=zero_i,
        search=_search_start(zero, zero, zero, zero),
        failed=jnp.asarray(False),
        pending=jnp.asarray(KEEP, jnp.int32),
        change=jnp.zeros_like(x0),
    )

    def evaluate(small):
        # Phase INIT or SEARCH: one evaluation and what follows from it, on the small
        # arrays only (not the memory's s and y).
        run = _unpack(_Packed(small[0], None, small[1], small[2]))
        value, grad = value_and_grad(_trial(run, lower, upper))
        n_iter = run.n_iter
        run = _tell(run, value, grad, lower, upper, options)
        if on_iteration is not None:
            on_iteration(run.n_iter > n_iter, run.x, run.value, run.n_iter, run.n_evals)
        packed = _pack(run)
        return packed.vectors, packed.reals, packed.ints

    def body(packed):
        # Evaluate, then plan the next iteration if one ended. Both run as branches, so
        # that the loop's body has a handful of thunks: XLA's CPU runtime runs a sequence
        # of at most 8 thunks (or one over buffers of at most 512 bytes) in order on one
        # thread, and a longer one in parallel, handing work between threads (tens of
        # microseconds each time on these tiny kernels). The evaluation's branch takes
        # only the small arrays; it always runs (the loop ends at DONE).
        small = jax.lax.cond(packed.ints[0] != DONE, evaluate, lambda s: s, packed[:1] + packed[2:])
        packed = _Packed(small[0], packed.memory, small[1], small[2])
        plan = lambda p: _plan(p, lower, upper, constrained, boxed)  # noqa: E731
        return jax.lax.cond(packed.ints[0] == PLAN, plan, lambda p: p, packed)

    return _unpack(jax.lax.while_loop(lambda p: p.ints[0] != DONE, body, _pack(run)))


# -- bounds: checks and flattening -----------------------------------------------------


def _leaf_paths(tree):
    return [path_string(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _bound_tree(bound, x0, name: str):
    """``bound`` as a pytree of arrays shaped and typed as ``x0``'s leaves."""
    leaves_x = jax.tree.leaves(x0)
    is_single = not jax.tree_util.treedef_is_leaf(jax.tree.structure(x0)) and (
        jax.tree_util.treedef_is_leaf(jax.tree.structure(bound)) and bound is not None
    )
    if is_single:
        bound = jax.tree.map(lambda _: bound, x0)
    if jax.tree.structure(bound) != jax.tree.structure(x0):
        got, want = _leaf_paths(bound), _leaf_paths(x0)
        missing = [p for p in want if p not in got]
        extra = [p for p in got if p not in want]
        where = (
            f"x0 has {missing[0]!r}, which {name} lacks"
            if missing
            else f"{name} has {extra[0]!r}, which x0 lacks"
            if extra
            else f"{name} is {jax.tree.structure(bound)}, x0 is {jax.tree.structure(x0)}"
        )
        raise ValueError(
            f"bounds: {name} must be a scalar or a pytree with x0's structure: {where} "
            "(use -inf/inf for an unbounded entry)"
        )
    out = []
    for path, b, x in zip(_leaf_paths(x0), jax.tree.leaves(bound), leaves_x):
        if jnp.iscomplexobj(x):
            raise ValueError(f"bounds: x0 at {path!r} is complex; bounds need real parameters")
        try:
            # numpy while known (outside jit, or constants inside it): see _known_bounds.
            to = jnp if isinstance(b, jax.core.Tracer) else np
            out.append(to.broadcast_to(to.asarray(b, jnp.result_type(x)), jnp.shape(x)))
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"bounds: {name} at {path!r} has shape {jnp.shape(b)}, which does not broadcast to x0's "
                f"{jnp.shape(x)}"
            ) from error
    return jax.tree.unflatten(jax.tree.structure(x0), out)


def _check_order(lower, upper, x0) -> None:
    """Raises ``ValueError`` naming the first entry with ``lower > upper`` or a NaN bound.

    Traced bounds (inside ``jax.jit``) cannot be checked and are taken as they are.
    """
    for path, lo, hi in zip(_leaf_paths(x0), jax.tree.leaves(lower), jax.tree.leaves(upper)):
        if isinstance(lo, jax.core.Tracer) or isinstance(hi, jax.core.Tracer):
            continue
        lo, hi = np.asarray(lo), np.asarray(hi)
        if np.isnan(lo).any() or np.isnan(hi).any():
            raise ValueError(f"bounds: NaN bound at {path!r} (use -inf/inf for an unbounded entry)")
        bad = np.argwhere(lo > hi)
        if bad.size:
            index = tuple(int(i) for i in bad[0])
            raise ValueError(
                f"bounds: lower > upper at {path!r}{list(index) if index else ''}: "
                f"{lo[index]} > {hi[index]}"
            )


def _known_bounds(lower, upper, dtype):
    """``(constrained, boxed)`` as Python bools (some bound finite, every bound finite) when
    no bound is traced, else ``None``. Known, they choose the solver's code at trace time."""
    leaves = jax.tree.leaves((lower, upper))
    if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return None
    flat = lambda tree: np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(tree)] + [np.zeros(0)])  # noqa: E731
    finite_lower, finite_upper = np.isfinite(flat(lower).astype(dtype)), np.isfinite(flat(upper).astype(dtype))
    return bool(np.any(finite_lower | finite_upper)), bool(np.all(finite_lower & finite_upper))


def minimize_bounded(
    fun: Callable,
    x0,
    *args,
    bounds,
    max_iter,
    max_eval,
    tolerance_grad,
    tolerance_change,
    history_size: int,
    has_aux: bool,
    lr=1.0,
    line_search_fn=None,
    state=None,
    callback=None,
):
    """``minimize(..., bounds=(lower, upper))``: see :func:`gradxform.minimize`.

    As without bounds, the loop sees no tangents: the derivatives of the solution in
    ``args`` come from the implicit function theorem at it, with the coordinates held at
    an active bound fixed (:func:`gradxform._implicit.solution_with_implicit_grad`). The
    bounds themselves are taken as constants.
    """
    if line_search_fn is not None:
        raise ValueError("line_search_fn does not apply with bounds: L-BFGS-B runs its own line search")
    if isinstance(lr, jax.core.Tracer) or not (isinstance(lr, (int, float)) and lr == 1.0):
        raise ValueError("lr does not apply with bounds: L-BFGS-B's line search chooses the step")
    if state is not None:
        raise ValueError("state does not apply with bounds: each bounded solve starts afresh")
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise ValueError("bounds must be a pair (lower, upper) of scalars or pytrees like x0")
    if int(history_size) < 1:
        raise ValueError(f"history_size must be at least 1 with bounds, got {history_size}")
    lower = _bound_tree(bounds[0], x0, "lower")
    upper = _bound_tree(bounds[1], x0, "upper")
    _check_order(lower, upper, x0)
    max_eval = max_iter * 5 // 4 if max_eval is None else max_eval
    options = BoundedOptions(max_iter, max_eval, tolerance_grad, tolerance_change)
    x_flat, unflatten = _lbfgs.flatten(jax.lax.stop_gradient(x0))
    bounded = _known_bounds(lower, upper, x_flat.dtype)
    lower, upper = jax.lax.stop_gradient((lower, upper))
    float_args, rebuild_args = split_differentiable(args)
    args_constant = rebuild_args(jax.lax.stop_gradient(float_args))
    lower_flat = ravel_pytree(lower)[0].astype(x_flat.dtype)
    upper_flat = ravel_pytree(upper)[0].astype(x_flat.dtype)
    x_flat = jnp.clip(x_flat, lower_flat, upper_flat)  # scipy projects x0 onto the box
    value_only = lambda p, *a: _lbfgs._with_aux(fun(p, *a), has_aux)[0]  # noqa: E731

    def value_and_grad(v):
        value, grad = jax.value_and_grad(lambda p: value_only(p, *args_constant))(unflatten(v))
        return value, _lbfgs.flatten(grad)[0].astype(v.dtype)

    on_iteration = None if callback is None else _lbfgs._progress_reporter(callback, unflatten)
    run = _solve(value_and_grad, x_flat, lower_flat, upper_flat, int(history_size), options, on_iteration, bounded)
    pg = _numerics.max_abs(projected_gradient(run.x, run.grad, lower_flat, upper_flat))
    finite = jnp.isfinite(run.value) & _numerics.all_finite(run.grad)
    status = jnp.where(
        ~finite, _lbfgs.NON_FINITE_VALUE, jnp.where(pg <= tolerance_grad, _lbfgs.GRADIENT, run.status)
    ).astype(jnp.int32)
    params = jax.tree.map(_numerics.like_param, unflatten(run.x), x0)
    grad = jax.tree.map(_numerics.like_param, unflatten(run.grad), x0)
    params, value, grad, aux = _lbfgs._solution_outputs(
        fun, has_aux, args, x0, params, run.value, grad, bounds=(lower, upper)
    )
    return _lbfgs.MinimizeResult(
        params=params,
        value=value,
        grad=grad,
        n_iter=run.n_iter,
        n_evals=run.n_evals,
        converged=status == _lbfgs.GRADIENT,
        failed=run.failed,
        aux=aux,
        state=None,
        status=status,
    )
