"""Strong-Wolfe line search with cubic interpolation, as torch's ``LBFGS`` runs it.

The search is written once, as a resumable state machine over flat vectors:

* :func:`wolfe_start` sets it up and proposes a first step length ``state.t``;
* :func:`wolfe_tell` takes the objective's value and gradient at ``x + state.t * d``
  and either proposes the next step length or finishes (``state.phase == FINISHED``);
* :func:`wolfe_result` gives ``(value, grad, t, evaluations)`` once finished.

``gradxform.minimize`` drives it inside one ``lax.while_loop``; torch_compat's ``LBFGS``
drives it from Python with a user closure. Both therefore take the same steps as torch's
``_strong_wolfe``: the same bracketing and zoom phases, constants (``c1 = 1e-4``,
``c2 = 0.9``), ``max_ls`` budget and the ``tolerance_change`` test on the bracket width.
All functions are jittable; scalars are arrays of the default float dtype (float64
under ``jax_enable_x64``, as torch's Python floats).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _numerics

BRACKET, ZOOM, FINISHED = 0, 1, 2


class WolfeState(NamedTuple):
    """State of one strong-Wolfe search along ``d`` from ``x`` (n = size of ``x``).

    Scalars are of the default float dtype unless noted; vectors have ``x``'s dtype.

    Attributes:
      phase: int32, ``BRACKET``, ``ZOOM`` (both waiting for an evaluation at ``t``) or
        ``FINISHED``.
      t: the step length to evaluate next (or the last one evaluated).
      f0, gtd0, d_norm: value, directional derivative and ``max|d|`` at ``x``.
      g0: ``[n]``, gradient at ``x``.
      max_ls: int32, the evaluation budget.
      ls_iter, evals: int32, torch's ``ls_iter`` and ``ls_func_evals``.
      t_prev, f_prev, gtd_prev, g_prev: the previous point of the bracketing phase.
      f_new, gtd_new, g_new: the latest evaluation.
      bracket, bracket_f, bracket_gtd: ``[2]``, the bracket's step lengths, values and
        directional derivatives; bracket_g: ``[2, n]``, its gradients.
      low: int32, index of the bracket's lower-value end.
      insuf_progress, done: bool.
    """

    phase: jax.Array
    t: jax.Array
    f0: jax.Array
    gtd0: jax.Array
    d_norm: jax.Array
    g0: jax.Array
    max_ls: jax.Array
    ls_iter: jax.Array
    evals: jax.Array
    t_prev: jax.Array
    f_prev: jax.Array
    gtd_prev: jax.Array
    g_prev: jax.Array
    f_new: jax.Array
    gtd_new: jax.Array
    g_new: jax.Array
    bracket: jax.Array
    bracket_f: jax.Array
    bracket_gtd: jax.Array
    bracket_g: jax.Array
    low: jax.Array
    insuf_progress: jax.Array
    done: jax.Array


def cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """Minimizer of the cubic through two points with values and slopes, clipped to bounds.

    torch's ``_cubic_interpolate``: without bounds the interval is ``[min(x1,x2),
    max(x1,x2)]``; when the cubic has no real minimizer, the interval's midpoint.
    """
    if bounds is None:
        lo, hi = jnp.minimum(x1, x2), jnp.maximum(x1, x2)
    else:
        lo, hi = bounds
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    d2 = jnp.sqrt(jnp.maximum(d2_square, 0))
    ordered = x1 <= x2
    min_pos = jnp.where(
        ordered,
        x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2)),
        x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2)),
    )
    inside = jnp.minimum(jnp.maximum(min_pos, lo), hi)
    # A non-finite minimizer (a degenerate cubic, or a failed evaluation at one end) falls
    # back on the midpoint too, where torch would go on with NaN.
    return jnp.where((d2_square >= 0) & jnp.isfinite(inside), inside, (lo + hi) / 2.0)


def _dot(a, b):
    return jnp.vdot(a, b).astype(_numerics.hyper_dtype())


def wolfe_start(f0, g0, gtd0, t, d, max_ls) -> WolfeState:
    """Starts a search from value ``f0``, gradient ``g0``, slope ``gtd0`` along ``d``.

    The first evaluation is asked at step length ``t``; ``max_ls`` bounds the number of
    evaluations after it, as torch's ``max_ls``.
    """
    s = jnp.asarray(0, _numerics.hyper_dtype())
    f0, gtd0, t = (jnp.asarray(v).astype(s.dtype) for v in (f0, gtd0, t))
    i32 = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731
    return WolfeState(
        phase=i32(BRACKET),
        t=t,
        f0=f0,
        gtd0=gtd0,
        d_norm=_numerics.max_abs(d).astype(s.dtype),
        g0=g0,
        max_ls=i32(max_ls),
        ls_iter=i32(0),
        evals=i32(0),
        t_prev=s,
        f_prev=f0,
        gtd_prev=gtd0,
        g_prev=g0,
        f_new=f0,
        gtd_new=gtd0,
        g_new=g0,
        bracket=jnp.stack([s, s]),
        bracket_f=jnp.stack([f0, f0]),
        bracket_gtd=jnp.stack([gtd0, gtd0]),
        bracket_g=jnp.stack([g0, g0]),
        low=i32(0),
        insuf_progress=jnp.asarray(False),
        done=jnp.asarray(False),
    )


def _select(pred, a: WolfeState, b: WolfeState) -> WolfeState:
    """``a`` where ``pred`` else ``b``, field by field (a cheap select, no branch)."""
    # A field alike on both sides is kept as it is (a smaller program, the same values).
    return jax.tree.map(lambda x, y: x if x is y else jnp.where(pred, x, y), a, b)


def _low_end(bracket_f):
    return jnp.where(bracket_f[0] <= bracket_f[1], 0, 1).astype(jnp.int32)


def _zoom_next(s: WolfeState, tolerance_change) -> WolfeState:
    """Ends the search, or proposes the next zoom step (torch's zoom loop head)."""
    b0, b1 = s.bracket[0], s.bracket[1]
    stop = s.done | (s.ls_iter >= s.max_ls) | (jnp.abs(b1 - b0) * s.d_norm < tolerance_change)
    t = cubic_interpolate(b0, s.bracket_f[0], s.bracket_gtd[0], b1, s.bracket_f[1], s.bracket_gtd[1])
    b_max, b_min = jnp.maximum(b0, b1), jnp.minimum(b0, b1)
    eps = 0.1 * (b_max - b_min)
    near_edge = jnp.minimum(b_max - t, t - b_min) < eps
    move = near_edge & (s.insuf_progress | (t >= b_max) | (t <= b_min))
    moved_t = jnp.where(jnp.abs(t - b_max) < jnp.abs(t - b_min), b_max - eps, b_min + eps)
    t = jnp.where(move, moved_t, t)
    insuf = near_edge & ~move
    return s._replace(
        phase=jnp.where(stop, FINISHED, ZOOM).astype(jnp.int32),
        t=jnp.where(stop, s.t, t),
        insuf_progress=jnp.where(stop, s.insuf_progress, insuf),
    )


@jax.named_scope("bracket_step")
def _bracket_step(s: WolfeState, c1, c2):
    """torch's bracketing-loop body for the evaluation just received at ``s.t``.

    Returns the new state and whether the bracketing phase is over (then the caller
    enters the zoom phase).
    """
    t = s.t
    out_of_budget = s.ls_iter >= s.max_ls
    armijo_fails = (s.f_new > s.f0 + c1 * t * s.gtd0) | ((s.ls_iter > 1) & (s.f_new >= s.f_prev))
    wolfe_met = ~out_of_budget & ~armijo_fails & (jnp.abs(s.gtd_new) <= -c2 * s.gtd0)
    bracketed = ~out_of_budget & ~wolfe_met & (armijo_fails | (s.gtd_new >= 0))
    # The bracket's left end: 0 and the start point when the budget is spent (torch's
    # bracket = [0, t]), t itself when the Wolfe conditions hold, else the previous point.
    left = lambda spent, met, other: jnp.where(out_of_budget, spent, jnp.where(wolfe_met, met, other))  # noqa: E731
    new_t = cubic_interpolate(
        s.t_prev, s.f_prev, s.gtd_prev, t, s.f_new, s.gtd_new, bounds=(t + 0.01 * (t - s.t_prev), t * 10)
    )
    over = out_of_budget | wolfe_met | bracketed
    bracket_f = jnp.stack([left(s.f0, s.f_new, s.f_prev), s.f_new])
    # One state for both outcomes: an ended bracketing phase never reads the previous
    # point again, and one that goes on never reads the bracket or ``low`` (rewritten
    # when it ends; ``done`` and ``insuf_progress`` are False then either way). Only the
    # step length differs: a program without ~20 selections, the same iterates.
    return s._replace(
        t=jnp.where(over, t, new_t),
        t_prev=t,
        f_prev=s.f_new,
        g_prev=s.g_new,
        gtd_prev=s.gtd_new,
        bracket=jnp.stack([left(jnp.zeros_like(t), t, s.t_prev), t]),
        bracket_f=bracket_f,
        bracket_gtd=jnp.stack([left(s.gtd0, s.gtd_new, s.gtd_prev), s.gtd_new]),
        bracket_g=jnp.stack([left(s.g0, s.g_new, s.g_prev), s.g_new]),
        done=wolfe_met,
        insuf_progress=jnp.asarray(False),
        low=_low_end(bracket_f),
    ), over


@jax.named_scope("zoom_step")
def _zoom_update(s: WolfeState, c1, c2) -> WolfeState:
    """torch's zoom-loop update of the bracket with the evaluation at ``s.t``."""
    low, high = s.low, 1 - s.low
    t = s.t
    shrink_high = (s.f_new > s.f0 + c1 * t * s.gtd0) | (s.f_new >= s.bracket_f[low])
    done = ~shrink_high & (jnp.abs(s.gtd_new) <= -c2 * s.gtd0)
    # Moving the low end: the old low end first becomes the high end when the slope
    # points past it (torch's "gtd_new * (high - low) >= 0").
    flip = ~shrink_high & ~done & (s.gtd_new * (s.bracket[high] - s.bracket[low]) >= 0)
    target = jnp.where(shrink_high, high, low)
    index = jnp.arange(2, dtype=jnp.int32)

    def update(array, new):
        # array[high] = array[low] where flip, then array[target] = new, written as two
        # selections over the two ends (a smaller program than indexed writes; the same values).
        ends = index.reshape((2,) + (1,) * (array.ndim - 1))
        array = jnp.where(flip & (ends == high), array[low], array)
        return jnp.where(ends == target, new, array)

    s = s._replace(
        bracket=update(s.bracket, t),
        bracket_f=update(s.bracket_f, s.f_new),
        bracket_g=update(s.bracket_g, s.g_new),
        bracket_gtd=update(s.bracket_gtd, s.gtd_new),
        done=done,
    )
    return s._replace(low=jnp.where(shrink_high, _low_end(s.bracket_f), s.low))


def wolfe_tell(s: WolfeState, f_new, g_new, d, *, c1=1e-4, c2=0.9, tolerance_change=1e-9) -> WolfeState:
    """Feeds the value and gradient at ``x + s.t * d``; returns the advanced search."""
    first = s.evals == 0
    s = s._replace(
        f_new=jnp.asarray(f_new).astype(s.f0.dtype),
        g_new=g_new,
        gtd_new=_dot(g_new, d),
        evals=s.evals + 1,
        ls_iter=s.ls_iter + jnp.where(first, 0, 1).astype(jnp.int32),
    )
    in_zoom = s.phase == ZOOM
    # One phase's update runs (a branch), the zoom's head after it when the search zooms.
    s, zooms = jax.lax.cond(
        in_zoom, lambda s: (_zoom_update(s, c1, c2), jnp.asarray(True)), lambda s: _bracket_step(s, c1, c2), s
    )
    return _select(zooms, _zoom_next(s, tolerance_change), s)


def wolfe_result(s: WolfeState):
    """``(value, grad, t, evaluations)`` of a finished search: the bracket's low end."""
    return s.bracket_f[s.low], s.bracket_g[s.low], s.bracket[s.low], s.evals
