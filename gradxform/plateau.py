r"""Reduce-on-plateau: scale the updates down when a metric stops improving.

This is the functional form of ``torch.optim.lr_scheduler.ReduceLROnPlateau``. Instead
of rewriting the learning rate, it multiplies the updates by a ``scale`` held in its
state (1 at the start), and chained after an optimizer it is the same thing: every
gradxform optimizer ends with its ``-learning_rate`` multiplication, so scaling the
updates scales the learning rate.

Its rules (what counts as an improvement, the count of bad metrics and the cooldown, a
reduction) are written once, in ``gradxform._schedule_math``; torch_compat's
``ReduceLROnPlateau`` evaluates the same functions on Python floats.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _numerics
from gradxform import _schedule_math as formulas
from gradxform._schedule_math import ARRAYS
from gradxform.base import GradientTransformation


class ReduceOnPlateauState(NamedTuple):
    """State of :func:`reduce_on_plateau`.

    Attributes:
      scale: float ``[]`` (default float dtype), the factor applied to the updates.
      best: float ``[]``, the best metric seen (``+inf`` in ``"min"`` mode at the start,
        ``-inf`` in ``"max"`` mode).
      num_bad_epochs: int32 ``[]``, metrics in a row that did not improve on ``best``.
      cooldown_counter: int32 ``[]``, metrics still to ignore after a reduction.
      count: int32 ``[]``, the number of metrics received (torch's ``last_epoch``).
    """

    scale: jax.Array
    best: jax.Array
    num_bad_epochs: jax.Array
    cooldown_counter: jax.Array
    count: jax.Array


def reduce_on_plateau(
    factor=0.1,
    patience: int = 10,
    threshold=1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_scale=0.0,
    eps=1e-8,
    mode: str = "min",
) -> GradientTransformation:
    r"""Multiplies the updates by a scale that drops by ``factor`` when a metric plateaus.

    Each call ``update(updates, state, params, value=metric)`` is one of torch's
    ``scheduler.step(metric)``. With :math:`b` the best metric so far, a metric
    :math:`m` is an improvement when

    * ``mode="min"``: :math:`m < b(1 - \text{threshold})` (``"rel"``) or
      :math:`m < b - \text{threshold}` (``"abs"``);
    * ``mode="max"``: :math:`m > b(1 + \text{threshold})` or :math:`m > b + \text{threshold}`.

    After more than ``patience`` metrics in a row without improvement, the scale becomes
    :math:`\max(s \cdot \text{factor}, \text{min\_scale})` (unless that changes it by
    ``eps`` or less) and the next ``cooldown`` metrics are not counted as bad.

    The updates of the call are multiplied by the scale *after* the metric has been taken
    into account: give the metric measured at the current parameters (for example the
    validation loss of the epoch just finished, before the first update of the next),
    and the update follows the learning rate torch would use next. Called without
    ``value`` (``value=None``), the state is left as it is and the updates are only
    scaled, so one can pass the metric once per epoch and update on every batch.

    torch's ``min_lr`` and ``eps`` bound learning rates; here they bound the scale. To
    follow ``ReduceLROnPlateau(optimizer, min_lr=m, eps=e)`` for a learning rate
    :math:`\gamma`, use ``min_scale=m/γ`` and ``eps=e/γ``.

    Everything is jittable: the rules are written with ``jnp.where``.

    Args:
      factor: the multiplier of a reduction, < 1.
      patience: the number of bad metrics tolerated before reducing.
      threshold: how much better a metric must be to count as an improvement.
      threshold_mode: ``"rel"`` or ``"abs"``.
      cooldown: metrics ignored after each reduction.
      min_scale: the smallest scale.
      eps: reductions by ``eps`` or less are skipped.
      mode: ``"min"`` (a lower metric is better) or ``"max"``.

    Returns:
      A transformation with :class:`ReduceOnPlateauState`.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.chain(gradxform.sgd(1.0), gradxform.reduce_on_plateau(factor=0.5, patience=1))
      >>> params = jnp.zeros(1)
      >>> state = tx.init(params)
      >>> lrs = []
      >>> for metric in [3.0, 2.0, 2.0, 2.0, 2.0, 2.0]:
      ...     updates, state = tx.update(jnp.ones(1), state, params, value=metric)
      ...     lrs.append(-float(updates[0]))
      >>> lrs
      [1.0, 1.0, 1.0, 0.5, 0.5, 0.25]

    Reference: ``torch.optim.lr_scheduler.ReduceLROnPlateau``.
    """
    if not float(factor) < 1.0:
        raise ValueError("Factor should be < 1.0.")
    if mode not in ("min", "max"):
        raise ValueError("mode " + str(mode) + " is unknown!")
    if threshold_mode not in ("rel", "abs"):
        raise ValueError("threshold mode " + str(threshold_mode) + " is unknown!")
    worst = formulas.worst_metric(mode)

    def init(params):
        dtype = _numerics.hyper_dtype()
        zero = lambda: jnp.zeros([], jnp.int32)  # noqa: E731 - one array per field (donation)
        state = ReduceOnPlateauState(jnp.ones([], dtype), jnp.asarray(worst, dtype), zero(), zero(), zero())
        return _numerics.replicate_over_params(state, params)

    def observe(state: ReduceOnPlateauState, value) -> ReduceOnPlateauState:
        metric = jnp.asarray(value).astype(state.best.dtype).reshape(())
        better = formulas.improves(metric, state.best, mode, threshold, threshold_mode)
        best, bad, cooldown_counter = formulas.count_bad_epochs(
            ARRAYS, better, metric, state.best, state.num_bad_epochs, state.cooldown_counter
        )
        reduce = bad > patience
        smaller, lowers = formulas.reduced(
            ARRAYS, state.scale, factor, jnp.asarray(min_scale, state.scale.dtype), eps
        )
        scale = jnp.where(reduce & lowers, smaller, state.scale)
        cooldown_counter = jnp.where(reduce, cooldown, cooldown_counter)
        bad = jnp.where(reduce, 0, bad)
        return ReduceOnPlateauState(
            scale,
            best,
            bad.astype(jnp.int32),
            cooldown_counter.astype(jnp.int32),
            state.count + 1,
        )

    def update(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        if value is not None:
            state = observe(state, value)
        scaled = jax.tree.map(lambda u: u * _numerics.scalar(state.scale, u), updates)
        return scaled, state

    return GradientTransformation(init, update)
