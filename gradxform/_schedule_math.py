r"""The arithmetic of the schedules and of reduce-on-plateau, written once for both faces.

:mod:`gradxform.schedules` and :mod:`gradxform.plateau` evaluate these functions on JAX
arrays, traced, in the default float dtype; :mod:`torch_compat.optim.lr_scheduler`
evaluates them on Python floats, where they are torch 2.13's arithmetic to the last bit.
Each function uses arithmetic operators and, where it needs more, the functions of its
first argument ``xp``, a :class:`Namespace`:

* :data:`FLOATS`: ``math``, Python's ``min``/``max``, and branches as Python runs them
  (only the branch taken is computed, so a division by zero in the other one raises
  nothing, as in torch);
* :data:`ARRAYS`: ``jax.numpy``; both branches are computed and one is selected with
  ``jnp.where``.

The operations and their order are torch's: floating point is not associative, so
``a * b / c`` must not become ``a * (b / c)``. The only place where the faces compute
differently on purpose is :attr:`Namespace.fraction_left` (see there).

What stays outside: torch's *chainable* forms (each new learning rate computed from the
group's current one), which only torch_compat has, and the bookkeeping of each face
(torch's ``last_epoch``, state dicts and warnings; the step count and ``jax.jit`` of the
functional schedules).

Example:
  >>> import jax.numpy as jnp
  >>> from gradxform import _schedule_math as sm
  >>> sm.cosine(sm.FLOATS, 0.1, 0.0, 1, 3)  # CosineAnnealingLR(T_max=3), epoch 1
  0.07500000000000001
  >>> sm.cyclic_position(sm.FLOATS, 1, 2.0, 1.0)  # no falling half, nothing divided by 0
  (1, 0.5)
  >>> cycle, height = sm.cyclic_position(sm.ARRAYS, jnp.arange(3.0), 2.0, 1.0)
  >>> height.tolist()
  [0.0, 0.5, 0.0]
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax.numpy as jnp

from gradxform import _numerics


class Namespace(NamedTuple):
    r"""The few functions the formulas need beyond arithmetic operators.

    Attributes:
      pi: :math:`\pi`.
      cos: the cosine.
      floor: rounding down (``math.floor`` gives an int, as torch's CyclicLR has it).
      minimum: the smaller of two values (for Python: ``min``, which returns the first
        of two equal values).
      maximum: the larger of two values (``max`` likewise).
      where: ``where(condition, a, b)``, ``a`` where the condition holds, else ``b``.
      select: ``select(condition, if_true, if_false)``, as ``where`` with the two values
        given as functions of no argument; :data:`FLOATS` calls only the one it returns.
      as_float: a count or a condition as a float. Python's arithmetic promotes ints and
        bools by itself, so :data:`FLOATS` returns them as they are.
      fraction_left: ``fraction_left(done, total)``, the fraction :math:`1 - d / T` still
        to go. :data:`FLOATS` computes ``1.0 - done / total`` as torch does;
        :data:`ARRAYS` computes ``(total - done) / total``, because XLA divides by a
        constant through its reciprocal and only this form gives exactly 0 at the end.
    """

    pi: float
    cos: Callable[[Any], Any]
    floor: Callable[[Any], Any]
    minimum: Callable[[Any, Any], Any]
    maximum: Callable[[Any, Any], Any]
    where: Callable[[Any, Any, Any], Any]
    select: Callable[[Any, Callable[[], Any], Callable[[], Any]], Any]
    as_float: Callable[[Any], Any]
    fraction_left: Callable[[Any, Any], Any]


FLOATS = Namespace(
    pi=math.pi,
    cos=math.cos,
    floor=math.floor,
    minimum=min,
    maximum=max,
    where=lambda condition, a, b: a if condition else b,
    select=lambda condition, if_true, if_false: if_true() if condition else if_false(),
    as_float=lambda value: value,
    fraction_left=lambda done, total: 1.0 - done / total,
)
"""Python floats, torch's arithmetic."""

ARRAYS = Namespace(
    pi=jnp.pi,
    cos=jnp.cos,
    floor=jnp.floor,
    minimum=jnp.minimum,
    maximum=jnp.maximum,
    where=jnp.where,
    select=lambda condition, if_true, if_false: jnp.where(condition, if_true(), if_false()),
    as_float=lambda value: jnp.asarray(value).astype(_numerics.hyper_dtype()),
    fraction_left=lambda done, total: (total - done) / total,
)
"""JAX arrays of the default float dtype, jittable."""


# -- closed forms ------------------------------------------------------------------------
#
# ``init`` is the value at step 0 (torch's ``base_lr``, the group's ``initial_lr``) and
# ``t`` the step (torch's ``last_epoch``).


def decay(xp: Namespace, init, gamma, times):
    r""":math:`v_0\,\gamma^{n}`: StepLR (:math:`n = \lfloor t / \text{step\_size}\rfloor`),
    MultiStepLR (:math:`n` = the milestones passed) and ExponentialLR (:math:`n = t`)."""
    return init * gamma ** xp.as_float(times)


def constant(xp: Namespace, init, factor, t, total_iters):
    """ConstantLR: ``init * factor`` before step ``total_iters``, ``init`` from it on."""
    return init * (factor + xp.as_float(t >= total_iters) * (1 - factor))


def linear(xp: Namespace, init, start_factor, end_factor, t, total_iters):
    """LinearLR: the multiplier goes linearly from ``start_factor`` to ``end_factor``."""
    done = xp.minimum(total_iters, t)
    return init * (start_factor + (end_factor - start_factor) * done / total_iters)


def polynomial(xp: Namespace, init, t, total_iters, power):
    """PolynomialLR: ``init * (1 - min(t, T) / T) ** power``."""
    return init * xp.fraction_left(xp.minimum(total_iters, t), total_iters) ** power


def cosine(xp: Namespace, init, eta_min, t, period):
    """CosineAnnealingLR (``period = T_max``) and, within a cycle,
    CosineAnnealingWarmRestarts (``t = T_cur``, ``period = T_i``)."""
    return eta_min + (init - eta_min) * (1 + xp.cos(xp.pi * t / period)) / 2


# -- CyclicLR ----------------------------------------------------------------------------------


def cyclic_sizes(step_size_up, step_size_down):
    """``(total_size, step_ratio)``: the steps of a cycle and the rising share of them."""
    up = float(step_size_up)
    down = float(step_size_down) if step_size_down is not None else up
    total_size = up + down
    return total_size, up / total_size


def cyclic_scale_mode(mode: str) -> str:
    """What a built-in ``mode``'s scale is a function of: ``"cycle"`` or ``"iterations"``."""
    return "iterations" if mode == "exp_range" else "cycle"


def cyclic_scale(mode: str, gamma, x):
    """The amplitude scale of a built-in ``mode`` at cycle (or step) ``x``."""
    if mode == "triangular":
        return 1.0
    if mode == "triangular2":
        return 1 / (2.0 ** (x - 1))
    return gamma**x


def cyclic_position(xp: Namespace, t, total_size, step_ratio):
    """``(cycle, height)`` at step ``t``: the cycle number (from 1) and the height in it,
    from 0 up to 1 over the rising share, then back down to 0."""
    cycle = xp.floor(1 + t / total_size)
    x = 1.0 + t / total_size - cycle
    height = xp.select(x <= step_ratio, lambda: x / step_ratio, lambda: (x - 1) / (step_ratio - 1))
    return cycle, height


def cyclic(low, high, height, scale):
    """From ``low`` (height 0) towards ``high`` (height 1), the amplitude times ``scale``.

    The momentum that torch cycles against the rate is ``cyclic(max_momentum,
    base_momentum, ...)``: torch writes it ``max - (max - base) * ...``, which is the same
    number, bit for bit (IEEE rounding is symmetric in sign)."""
    return low + (high - low) * height * scale


# -- OneCycleLR --------------------------------------------------------------------------------


def one_cycle_phases(total_steps, pct_start, three_phase, start, peak, end) -> list[tuple]:
    """torch's phases: ``(last step, value at its start, value at its end)`` each.

    The values may be anything (numbers, or the names of group keys, as torch_compat
    gives): they are only placed in the table. Rising from ``start`` to ``peak``, then to
    ``end``; ``three_phase``: back from ``peak`` to ``start`` over as many steps as the
    rise, then to ``end``."""
    rise_end = float(pct_start * total_steps) - 1
    if three_phase:
        return [
            (rise_end, start, peak),
            (float(2 * pct_start * total_steps) - 2, peak, start),
            (total_steps - 1, start, end),
        ]
    return [(rise_end, start, peak), (total_steps - 1, peak, end)]


def check_anneal_strategy(anneal_strategy) -> None:
    """Raises torch's ValueError unless ``anneal_strategy`` is ``"cos"`` or ``"linear"``."""
    if anneal_strategy not in ("cos", "linear"):
        raise ValueError(
            f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}"
        )


def anneal_cos(xp: Namespace, start, end, pct):
    """From ``start`` (``pct = 0``) to ``end`` (``pct = 1``) along half a cosine."""
    return end + (start - end) / 2.0 * (xp.cos(xp.pi * pct) + 1)


def anneal_linear(start, end, pct):
    """From ``start`` (``pct = 0``) to ``end`` (``pct = 1``) along a line."""
    return (end - start) * pct + start


def anneal(xp: Namespace, strategy: str, start, end, pct):
    """:func:`anneal_cos` for ``strategy="cos"``, :func:`anneal_linear` otherwise."""
    if strategy == "cos":
        return anneal_cos(xp, start, end, pct)
    return anneal_linear(start, end, pct)


def one_cycle(xp: Namespace, t, phases: Sequence[tuple], value: Callable[[Any, Any, Any], Any]):
    """The value at step ``t`` in the first phase whose last step is ``>= t`` (the last
    phase takes every later step), as torch's OneCycleLR finds it.

    Args:
      xp: the namespace.
      t: the step.
      phases: :func:`one_cycle_phases`' table.
      value: ``value(first, last, pct)``: the value at the fraction ``pct`` of a phase
        whose ends are ``first`` and ``last`` (as they stand in ``phases``).
    """

    def from_phase(index, begin):
        end, first, last = phases[index]

        def here():
            return value(first, last, (t - begin) / (end - begin))

        if index == len(phases) - 1:
            return here()
        return xp.select(t <= end, here, lambda: from_phase(index + 1, end))

    return from_phase(0, 0.0)


# -- ReduceLROnPlateau -------------------------------------------------------------------------


def worst_metric(mode: str) -> float:
    """The best metric before any is seen: ``inf`` in ``"min"`` mode, ``-inf`` in ``"max"``."""
    return math.inf if mode == "min" else -math.inf


def improves(metric, best, mode: str, threshold, threshold_mode: str):
    """Whether ``metric`` beats ``best`` by ``threshold`` (``"rel"`` or ``"abs"``) in the
    direction of ``mode`` (torch's ``ReduceLROnPlateau._is_better``)."""
    if mode == "min":
        bound = best * (1.0 - threshold) if threshold_mode == "rel" else best - threshold
        return metric < bound
    bound = best * (threshold + 1.0) if threshold_mode == "rel" else best + threshold
    return metric > bound


def count_bad_epochs(xp: Namespace, better, metric, best, num_bad_epochs, cooldown_counter):
    """``(best, num_bad_epochs, cooldown_counter)`` after one metric, before any reduction.

    An improvement becomes the best and resets the count of bad epochs; otherwise the
    count grows by one. During a cooldown (``cooldown_counter > 0``) the counter goes
    down by one and the count is reset."""
    best = xp.where(better, metric, best)
    num_bad_epochs = xp.where(better, 0, num_bad_epochs + 1)
    cooling = cooldown_counter > 0
    return best, xp.where(cooling, 0, num_bad_epochs), xp.where(cooling, cooldown_counter - 1, cooldown_counter)


def reduced(xp: Namespace, value, factor, minimum, eps):
    """``(new, lowers)``: ``new = max(value * factor, minimum)``, and whether it is more
    than ``eps`` below ``value`` (a reduction happens only then)."""
    new = xp.maximum(value * factor, minimum)
    return new, value - new > eps
