r"""Schedules: pure, jittable functions of the step count.

A schedule is a callable ``count -> value``. ``count`` is an integer array, the number
of updates done so far (0 at the first update); the value is a scalar array of the
default float dtype (float64 under ``jax_enable_x64``, float32 otherwise). Any of them
can be given to a gradxform optimizer as ``learning_rate`` or as another float
hyperparameter (``momentum``, one of ``betas``): :func:`gradxform.inject_hyperparams`
evaluates it before each update and keeps the value in the optimizer state, so a jitted
training step is compiled once, whatever the step.

Each schedule here has a twin among torch's ``lr_scheduler`` classes (see
:mod:`torch_compat.optim.lr_scheduler`), with torch's argument names: the value at
``count = t`` is the learning rate torch's scheduler writes into the optimizer after
``t`` calls of ``scheduler.step()``, that is the one the ``t``-th ``optimizer.step()``
(counted from 0) uses. ``init_value`` plays the part of the optimizer's initial ``lr``.

Where torch's scheduler is *chainable* (it multiplies the current ``group["lr"]`` by a
ratio at each step: ``StepLR``, ``ExponentialLR``, ``CosineAnnealingLR``, ...), the
function here uses the closed form. The two agree to rounding when nothing else touches
the learning rate; they part ways when the learning rate is changed by hand or by
another scheduler between steps, which the chainable form carries along and a function
of the count cannot see.

How close "to rounding" is: in float64 (``jax_enable_x64``), every schedule here is
within a relative 1e-12 of torch's Python floats in the tests, and a cosine annealing
over 1000 steps within 1e-13. The differences come from torch's chainable forms, which
round once per step, and from XLA, which divides by a constant through its reciprocal
and has its own ``cos``. Without x64 the values are float32.

The formulas are written once, in ``gradxform._schedule_math``: the functions here
evaluate them on JAX arrays, and torch_compat's schedulers on Python floats (their closed
forms, CyclicLR's and OneCycleLR's phases).

Reduce-on-plateau depends on a metric, not on the count: it is the stateful
transformation :func:`gradxform.reduce_on_plateau`.

Example:
  >>> import jax, jax.numpy as jnp, gradxform
  >>> from gradxform import schedules
  >>> warmup_then_cosine = schedules.join(
  ...     [schedules.linear(0.1, start_factor=0.1, total_iters=5),
  ...      schedules.cosine_annealing(0.1, T_max=20)],
  ...     boundaries=[5])
  >>> schedules.sample(warmup_then_cosine, 26)[[0, 4, 5, 15, 25]].round(4).tolist()
  [0.01, 0.082, 0.1, 0.05, 0.0]
  >>> tx = gradxform.sgd(warmup_then_cosine, momentum=0.9)
  >>> step = jax.jit(lambda p, s: tx.update(2 * p, s, p))
  >>> params = jnp.ones(2)
  >>> state = tx.init(params)
  >>> for _ in range(3):
  ...     updates, state = step(params, state)
  >>> round(float(gradxform.get_hyperparams(state)["learning_rate"]), 4)
  0.046
"""

from __future__ import annotations

import numbers
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _numerics
from gradxform import _schedule_math as formulas
from gradxform._schedule_math import ARRAYS
from gradxform.base import Schedule

__all__ = [
    "constant",
    "cosine_annealing",
    "cosine_annealing_warm_restarts",
    "cyclic",
    "exponential",
    "join",
    "linear",
    "multistep",
    "one_cycle",
    "one_cycle_momentum",
    "polynomial",
    "sample",
    "step",
]


# -- helpers ---------------------------------------------------------------------------


def _float(value) -> jax.Array:
    """``value`` as a scalar array of the default float dtype (decided at call time)."""
    return jnp.asarray(value, dtype=_numerics.hyper_dtype())


def _steps(count) -> jax.Array:
    """The step count as a float array (integer-valued), for the formulas."""
    return ARRAYS.as_float(count)


def _check_positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"Expected positive integer {name}, but got {value}")


def _check_choice(value, choices: Sequence[str], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _compiled(schedule: Schedule) -> Schedule:
    """``jax.jit(schedule)``: one compilation when called eagerly (an optimizer's ``init``,
    a plot), instead of one per operation; inside another jit it is inlined."""
    return jax.jit(schedule)


# -- closed-form schedules ---------------------------------------------------------------


def constant(init_value, factor=1.0, total_iters: int = 0) -> Schedule:
    r"""A constant, scaled by ``factor`` for the first ``total_iters`` steps.

    .. math::
       v_t = v_0 \cdot \begin{cases} \text{factor} & t < \text{total\_iters} \\
       1 & t \ge \text{total\_iters} \end{cases}

    The twin of ``torch.optim.lr_scheduler.ConstantLR``. Its defaults give a plain
    constant; torch's ConstantLR defaults to ``factor=1/3, total_iters=5``.

    Args:
      init_value: :math:`v_0`.
      factor: the multiplier used before ``total_iters``.
      total_iters: the number of steps that use the factor.

    Example:
      >>> from gradxform import schedules
      >>> s = schedules.constant(0.1, factor=0.5, total_iters=2)
      >>> schedules.sample(s, 4).round(4).tolist()
      [0.05, 0.05, 0.1, 0.1]
    """

    def schedule(count):
        return formulas.constant(ARRAYS, _float(init_value), _float(factor), jnp.asarray(count), total_iters)

    return _compiled(schedule)


def linear(init_value, start_factor=1.0 / 3, end_factor=1.0, total_iters: int = 5) -> Schedule:
    r"""A linear ramp of the multiplier from ``start_factor`` to ``end_factor`` (warm-up).

    .. math::
       v_t = v_0 \left(s + (e - s)\,\frac{\min(t, T)}{T}\right)

    The twin of ``torch.optim.lr_scheduler.LinearLR`` (same defaults). torch refuses a
    ``start_factor`` of 0 because its chainable form divides by it; this closed form does
    not, so ``linear(lr, 0.0, 1.0, T)`` is a warm-up from 0.

    Args:
      init_value: :math:`v_0`.
      start_factor: :math:`s`, the multiplier at step 0.
      end_factor: :math:`e`, the multiplier from step :math:`T` on.
      total_iters: :math:`T`, a positive int.

    Example:
      >>> from gradxform import schedules
      >>> schedules.sample(schedules.linear(1.0, 0.0, 1.0, total_iters=4), 6).tolist()
      [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """
    _check_positive_int(total_iters, "total_iters")

    def schedule(count):
        s, e = _float(start_factor), _float(end_factor)
        return formulas.linear(ARRAYS, _float(init_value), s, e, _steps(count), total_iters)

    return _compiled(schedule)


def polynomial(init_value, total_iters: int = 5, power=1.0) -> Schedule:
    r"""Polynomial decay to 0 in ``total_iters`` steps.

    .. math::
       v_t = v_0 \left(1 - \frac{\min(t, T)}{T}\right)^{p}

    The twin of ``torch.optim.lr_scheduler.PolynomialLR`` (same defaults).

    Args:
      init_value: :math:`v_0`.
      total_iters: :math:`T`, a positive int.
      power: :math:`p`.

    Example:
      >>> from gradxform import schedules
      >>> schedules.sample(schedules.polynomial(1.0, total_iters=4, power=2.0), 5).tolist()
      [1.0, 0.5625, 0.25, 0.0625, 0.0]
    """
    _check_positive_int(total_iters, "total_iters")

    def schedule(count):
        # ARRAYS.fraction_left computes (T - min(t, T)) / T, not torch's 1 - min(t, T) / T:
        # XLA divides by a constant through its reciprocal, and only this form gives
        # exactly 0 at the end.
        return formulas.polynomial(ARRAYS, _float(init_value), _steps(count), total_iters, _float(power))

    return _compiled(schedule)


def step(init_value, step_size: int, gamma=0.1) -> Schedule:
    r"""Multiplies by ``gamma`` every ``step_size`` steps.

    .. math::
       v_t = v_0\, \gamma^{\lfloor t / \text{step\_size} \rfloor}

    The twin of ``torch.optim.lr_scheduler.StepLR``.

    Args:
      init_value: :math:`v_0`.
      step_size: the period, a positive int.
      gamma: :math:`\gamma`.

    Example:
      >>> from gradxform import schedules
      >>> schedules.sample(schedules.step(1.0, step_size=2, gamma=0.5), 5).tolist()
      [1.0, 1.0, 0.5, 0.5, 0.25]
    """
    _check_positive_int(step_size, "step_size")

    def schedule(count):
        return formulas.decay(ARRAYS, _float(init_value), _float(gamma), jnp.asarray(count) // step_size)

    return _compiled(schedule)


def multistep(init_value, milestones: Sequence[int], gamma=0.1) -> Schedule:
    r"""Multiplies by ``gamma`` at each milestone.

    .. math::
       v_t = v_0\, \gamma^{\#\{m \in \text{milestones} : m \le t\}}

    A milestone listed twice counts twice, as in torch. The twin of
    ``torch.optim.lr_scheduler.MultiStepLR``.

    Args:
      init_value: :math:`v_0`.
      milestones: step counts, in any order.
      gamma: :math:`\gamma`.

    Example:
      >>> from gradxform import schedules
      >>> schedules.sample(schedules.multistep(1.0, [1, 3, 3], gamma=0.5), 5).tolist()
      [1.0, 0.5, 0.5, 0.125, 0.125]
    """
    marks = np.asarray(sorted(int(m) for m in milestones), dtype=np.int64)

    def schedule(count):
        count = jnp.asarray(count)
        if marks.size == 0:
            passed = jnp.zeros_like(count)
        else:
            passed = jnp.sum(count[..., None] >= jnp.asarray(marks, count.dtype), axis=-1)
        return formulas.decay(ARRAYS, _float(init_value), _float(gamma), passed)

    return _compiled(schedule)


def exponential(init_value, gamma) -> Schedule:
    r"""Multiplies by ``gamma`` at every step: :math:`v_t = v_0 \gamma^t`.

    The twin of ``torch.optim.lr_scheduler.ExponentialLR``.

    Example:
      >>> from gradxform import schedules
      >>> schedules.sample(schedules.exponential(1.0, gamma=0.5), 4).tolist()
      [1.0, 0.5, 0.25, 0.125]
    """

    def schedule(count):
        return formulas.decay(ARRAYS, _float(init_value), _float(gamma), jnp.asarray(count))

    return _compiled(schedule)


def cosine_annealing(init_value, T_max: int, eta_min=0.0) -> Schedule:  # noqa: N803
    r"""Cosine annealing from ``init_value`` down to ``eta_min`` in ``T_max`` steps.

    .. math::
       v_t = \eta_{min} + \tfrac12 (v_0 - \eta_{min})\left(1 + \cos\frac{\pi t}{T_{max}}\right)

    Past ``T_max`` the cosine goes on, back up to ``init_value`` at :math:`2 T_{max}`, as
    torch's scheduler does. The twin of ``torch.optim.lr_scheduler.CosineAnnealingLR``
    (whose chainable form is the recursion that this formula solves); Loshchilov & Hutter,
    2017 (SGDR) without the restarts.

    Args:
      init_value: :math:`v_0`.
      T_max: half the period, in steps.
      eta_min: :math:`\eta_{min}`.

    Example:
      >>> from gradxform import schedules
      >>> schedules.sample(schedules.cosine_annealing(1.0, T_max=2), 5).round(6).tolist()
      [1.0, 0.5, 0.0, 0.5, 1.0]
    """

    def schedule(count):
        return formulas.cosine(ARRAYS, _float(init_value), _float(eta_min), _steps(count), T_max)

    return _compiled(schedule)


def cosine_annealing_warm_restarts(init_value, T_0: int, T_mult: int = 1, eta_min=0.0) -> Schedule:  # noqa: N803
    r"""Cosine annealing restarted at ``init_value`` after ``T_0``, ``T_0 T_mult``, ... steps.

    .. math::
       v_t = \eta_{min} + \tfrac12 (v_0 - \eta_{min})\left(1 + \cos\frac{\pi T_{cur}}{T_i}\right)

    where the :math:`i`-th cycle lasts :math:`T_i = T_0 T_{mult}^i` steps and
    :math:`T_{cur}` counts the steps since it began. The cycle is found with integer
    arithmetic, exactly (torch's ``step(epoch)`` path uses a floating-point logarithm).
    The twin of ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``; Loshchilov &
    Hutter, 2017.

    Args:
      init_value: :math:`v_0`.
      T_0: the length of the first cycle, a positive int.
      T_mult: the growth of the cycle length, an int >= 1.
      eta_min: :math:`\eta_{min}`.

    Example:
      >>> from gradxform import schedules
      >>> s = schedules.cosine_annealing_warm_restarts(1.0, T_0=2, T_mult=2)
      >>> schedules.sample(s, 7).round(6).tolist()
      [1.0, 0.5, 1.0, 0.853553, 0.5, 0.146447, 1.0]
    """
    if isinstance(T_0, bool) or not isinstance(T_0, numbers.Integral) or T_0 <= 0:
        raise ValueError(f"Expected positive integer T_0, but got {T_0}")
    if isinstance(T_mult, bool) or not isinstance(T_mult, numbers.Integral) or T_mult < 1:
        raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
    # First step of each cycle and its length, while they fit in int32.
    starts, lengths = [0], [T_0]
    while T_mult > 1 and starts[-1] + lengths[-1] < 2**31 - 1:
        starts.append(starts[-1] + lengths[-1])
        lengths.append(lengths[-1] * T_mult)
    starts_table = np.asarray(starts, np.int64)
    lengths_table = np.asarray(lengths, np.float64)

    def schedule(count):
        count = jnp.asarray(count)
        if T_mult == 1:
            t_cur = count % T_0
            t_i = _float(T_0)
        else:
            cycle = jnp.sum(count[..., None] >= jnp.asarray(starts_table[1:], count.dtype), axis=-1)
            t_cur = count - jnp.asarray(starts_table, count.dtype)[cycle]
            t_i = jnp.asarray(lengths_table, _numerics.hyper_dtype())[cycle]
        return formulas.cosine(ARRAYS, _float(init_value), _float(eta_min), _steps(t_cur), t_i)

    return _compiled(schedule)


def cyclic(
    base_lr,
    max_lr,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma=1.0,
    scale_fn: Callable[[jax.Array], jax.Array] | None = None,
    scale_mode: str = "cycle",
) -> Schedule:
    r"""A cyclical learning rate (CLR): up from ``base_lr`` towards ``max_lr`` and back.

    Each cycle lasts :math:`N = \text{up} + \text{down}` steps. With
    :math:`c = \lfloor 1 + t/N \rfloor` the cycle number and
    :math:`x = 1 + t/N - c \in [0, 1)` the position in it, :math:`r = \text{up}/N`,

    .. math::
       h = \begin{cases} x / r & x \le r \\ (x - 1)/(r - 1) & x > r \end{cases}, \qquad
       v_t = \text{base} + (\text{max} - \text{base})\, h\, \sigma(c \text{ or } t)

    where the amplitude scale :math:`\sigma` is 1 (``"triangular"``),
    :math:`2^{1-c}` (``"triangular2"``), :math:`\gamma^t` (``"exp_range"``), or
    ``scale_fn``. The twin of ``torch.optim.lr_scheduler.CyclicLR``; Smith, 2017.

    torch cycles the momentum the other way, from ``max_momentum`` down towards
    ``base_momentum``: ``cyclic(max_momentum, base_momentum, ...)`` with the same other
    arguments is that momentum schedule, number for number.

    Args:
      base_lr: the value at the start of each cycle.
      max_lr: the value at the peak (scaled by :math:`\sigma`).
      step_size_up: steps in the rising half.
      step_size_down: steps in the falling half (default: ``step_size_up``).
      mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``; ignored when
        ``scale_fn`` is given. The built-in modes set ``scale_mode`` themselves
        (``"cycle"``, ``"cycle"``, ``"iterations"``), as in torch.
      gamma: the base of ``"exp_range"``.
      scale_fn: a custom, jittable :math:`\sigma`. It gets a float array holding an
        integer value: the cycle number (from 1) or the step count.
      scale_mode: ``"cycle"`` or ``"iterations"``, what ``scale_fn`` is given.

    Example:
      >>> from gradxform import schedules
      >>> s = schedules.cyclic(0.0, 1.0, step_size_up=2, mode="triangular2")
      >>> schedules.sample(s, 9).tolist()
      [0.0, 0.5, 1.0, 0.5, 0.0, 0.25, 0.5, 0.25, 0.0]
    """
    if scale_fn is None:
        _check_choice(mode, ("triangular", "triangular2", "exp_range"), "mode")
        scale_mode = formulas.cyclic_scale_mode(mode)
    _check_choice(scale_mode, ("cycle", "iterations"), "scale_mode")
    total_size, step_ratio = formulas.cyclic_sizes(step_size_up, step_size_down)

    def amplitude_scale(x):
        if scale_fn is not None:
            return scale_fn(x)
        return formulas.cyclic_scale(mode, _float(gamma), x)

    def schedule(count):
        t = _steps(count)
        cycle, height = formulas.cyclic_position(ARRAYS, t, total_size, step_ratio)
        scale = amplitude_scale(cycle if scale_mode == "cycle" else t)
        return formulas.cyclic(_float(base_lr), _float(max_lr), height, scale)

    return _compiled(schedule)


def _one_cycle_schedule(total_steps, pct_start, anneal_strategy, three_phase, values):
    _check_positive_int(total_steps, "total_steps")
    if isinstance(pct_start, bool) or not isinstance(pct_start, numbers.Real) or not 0 <= pct_start <= 1:
        raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
    formulas.check_anneal_strategy(anneal_strategy)

    def schedule(count):
        t = jnp.minimum(_steps(count), total_steps - 1)
        phases = formulas.one_cycle_phases(total_steps, pct_start, three_phase, *values())
        return formulas.one_cycle(
            ARRAYS, t, phases, lambda first, last, pct: formulas.anneal(ARRAYS, anneal_strategy, first, last, pct)
        )

    return _compiled(schedule)


def one_cycle(
    max_lr,
    total_steps: int,
    pct_start=0.3,
    anneal_strategy: str = "cos",
    div_factor=25.0,
    final_div_factor=1e4,
    three_phase: bool = False,
) -> Schedule:
    r"""The 1cycle policy: up from ``max_lr / div_factor`` to ``max_lr``, then far down.

    With :math:`v_{init} = \text{max\_lr}/\text{div\_factor}` and
    :math:`v_{min} = v_{init}/\text{final\_div\_factor}`, the value is annealed (cosine or
    linear, :math:`a(s, e, p)` from :math:`s` at :math:`p=0` to :math:`e` at :math:`p=1`)

    * from :math:`v_{init}` to max_lr over the first ``pct_start * total_steps`` steps,
    * then to :math:`v_{min}` at step ``total_steps - 1``;
    * with ``three_phase``, back to :math:`v_{init}` over as many steps as the rise, then
      to :math:`v_{min}`.

    The phase boundaries and the annealing formulas are torch's, to the rounding. From
    ``total_steps - 1`` on, the value stays at :math:`v_{min}`: there torch differs, as it
    extrapolates the last annealing once (at ``total_steps``, the cosine is on its way
    back up) and raises after that. The twin of ``torch.optim.lr_scheduler.OneCycleLR``; Smith & Topin,
    2018. :func:`one_cycle_momentum` is the momentum that goes with it.

    Args:
      max_lr: the peak.
      total_steps: the length of the cycle, a positive int (torch's ``epochs *
        steps_per_epoch``).
      pct_start: the fraction of the steps spent rising.
      anneal_strategy: ``"cos"`` or ``"linear"``.
      div_factor: ``max_lr / div_factor`` is the starting value.
      final_div_factor: the last value is the starting value over ``final_div_factor``.
      three_phase: use the three-phase form of the paper (fastai's two phases otherwise).

    Example:
      >>> from gradxform import schedules
      >>> s = schedules.one_cycle(1.0, total_steps=5, pct_start=0.4, anneal_strategy="linear",
      ...                         div_factor=10.0, final_div_factor=10.0)
      >>> schedules.sample(s, 5).round(4).tolist()
      [0.1, 1.0, 0.67, 0.34, 0.01]
    """

    def values():
        peak = _float(max_lr)
        start = peak / div_factor
        return start, peak, start / final_div_factor

    return _one_cycle_schedule(total_steps, pct_start, anneal_strategy, three_phase, values)


def one_cycle_momentum(
    total_steps: int,
    pct_start=0.3,
    anneal_strategy: str = "cos",
    base_momentum=0.85,
    max_momentum=0.95,
    three_phase: bool = False,
) -> Schedule:
    r"""The momentum (or :math:`\beta_1`) that torch's OneCycleLR cycles with the rate.

    It goes the other way from :func:`one_cycle`: from ``max_momentum`` down to
    ``base_momentum`` while the rate rises, then back up to ``max_momentum`` (and, with
    ``three_phase``, stays there in the third phase). Give it as ``momentum`` to
    :func:`gradxform.sgd` or as ``betas[0]`` to :func:`gradxform.adam`.

    Example:
      >>> from gradxform import schedules
      >>> s = schedules.one_cycle_momentum(5, pct_start=0.4, anneal_strategy="linear")
      >>> schedules.sample(s, 5).round(4).tolist()
      [0.95, 0.85, 0.8833, 0.9167, 0.95]
    """

    def values():
        top, bottom = _float(max_momentum), _float(base_momentum)
        return top, bottom, top

    return _one_cycle_schedule(total_steps, pct_start, anneal_strategy, three_phase, values)


def join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    r"""Runs ``schedules[i]`` from ``boundaries[i-1]`` on, each restarted at count 0.

    .. math::
       v_t = s_i(t - b_{i-1}) \quad \text{for } b_{i-1} \le t < b_i \quad (b_{-1} = 0)

    The twin of ``torch.optim.lr_scheduler.SequentialLR`` (``boundaries`` are its
    ``milestones``) when its schedulers have closed forms and start from the same
    learning rate.

    Args:
      schedules: the schedules, in order.
      boundaries: ``len(schedules) - 1`` non-decreasing step counts.

    Example:
      >>> from gradxform import schedules
      >>> s = schedules.join([schedules.linear(1.0, 0.5, 1.0, total_iters=2),
      ...                     schedules.exponential(1.0, gamma=0.5)], boundaries=[3])
      >>> schedules.sample(s, 6).tolist()
      [0.5, 0.75, 1.0, 1.0, 0.5, 0.25]
    """
    schedules = list(schedules)
    boundaries = [int(b) for b in boundaries]
    if len(schedules) < 1:
        raise ValueError("join expects at least one schedule, but got none.")
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            "join expects one boundary fewer than schedules, but got "
            f"{len(schedules)} schedules and {len(boundaries)} boundaries"
        )
    if any(b > c for b, c in zip(boundaries, boundaries[1:])):
        raise ValueError(f"boundaries must be non-decreasing, got {boundaries}")

    def schedule(count):
        count = jnp.asarray(count)
        value = _float(schedules[0](count))
        for boundary, later in zip(boundaries, schedules[1:]):
            shifted = jnp.maximum(count - boundary, 0)
            value = jnp.where(count >= boundary, _float(later(shifted)), value)
        return value

    return _compiled(schedule)


def sample(schedule: Schedule, num_steps: int, start: int = 0) -> np.ndarray:
    """The values of ``schedule`` at counts ``start, ..., start + num_steps - 1``, as numpy.

    This is the learning rate each of ``num_steps`` successive updates uses, ready to
    plot. :func:`torch_compat.optim.lr_scheduler.sample_lrs` does the same for torch-style
    schedulers.

    Example:
      >>> from gradxform import schedules
      >>> schedules.sample(schedules.exponential(2.0, 0.5), 3, start=1).tolist()
      [1.0, 0.5, 0.25]
    """
    counts = jnp.arange(start, start + num_steps, dtype=jnp.int32)
    return np.asarray(jax.jit(jax.vmap(schedule))(counts))

