"""Gradient accumulation: one optimizer step per ``k`` micro-batches."""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _numerics, base


class AccumulateState(NamedTuple):
    """State of :func:`accumulate`.

    Attributes:
      micro_step: int32 ``[]``, the micro-batches summed since the last step
        (``0 .. num_micro_batches - 1``).
      gradient_sum: like the updates, the sum of the gradients since the last step, in
        their compute precision (float32 for 16-bit floats).
      inner_state: the wrapped transformation's state, which changes only on the
        micro-batch that completes a step.
    """

    micro_step: jax.Array
    gradient_sum: Any
    inner_state: Any


def accumulate(inner: base.GradientTransformation, num_micro_batches: int) -> base.GradientTransformation:
    r"""Accumulates gradients over ``num_micro_batches`` calls, then steps once on their mean.

    The first ``k - 1`` calls of ``update`` (for :math:`k` = ``num_micro_batches``) add
    their gradients to a sum and return ``-0.0`` updates (``apply_updates`` leaves the
    parameters bit for bit as they were); the ``k``-th call gives ``inner`` the mean

    .. math::
       \bar g = \frac{g_1 + g_2 + \cdots + g_k}{k}

    (summed in that order, in the gradients' compute precision, and divided once),
    returns ``inner``'s updates and clears the sum. So ``k`` micro-batches of a batch
    give the step that one batch would, as torch's loop ``loss / k``, ``backward()``
    ``k`` times, ``step()``; and an optimizer's step counters, schedules and
    hyperparameters advance once per ``k`` micro-batches.

    Extra keyword arguments (``value=``) reach ``inner`` on the ``k``-th call only.

    It composes with the other wrappers: :func:`gradxform.skip_non_finite` outside
    drops a non-finite micro-batch (it is not summed, and ``k`` finite ones still make a
    step); inside (``accumulate(skip_non_finite(tx), k)``) a non-finite micro-batch spoils
    its whole step, which is then skipped. Inside :func:`gradxform.param_groups`'
    optimizer, or around it, it accumulates every group at once.

    The choice of branch is a ``jax.lax.cond``: ``inner`` runs only on a completing call.

    Args:
      inner: the transformation to step (gradxform's, optax's, a chain).
      num_micro_batches: ``k``, a positive int (1 steps on every call).

    Returns:
      A transformation whose state is an :class:`AccumulateState`.

    Raises:
      ValueError: if ``num_micro_batches`` is not a positive int.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.accumulate(gradxform.sgd(1.0), num_micro_batches=2)
      >>> params = jnp.zeros(1)
      >>> state = tx.init(params)
      >>> u1, state = tx.update(jnp.array([1.0]), state, params)
      >>> u2, state = tx.update(jnp.array([3.0]), state, params)
      >>> u1.tolist(), u2.tolist()  # nothing, then -lr * mean(1, 3)
      ([-0.0], [-2.0])
    """
    if (
        isinstance(num_micro_batches, bool)
        or not isinstance(num_micro_batches, numbers.Integral)
        or num_micro_batches < 1
    ):
        raise ValueError(f"num_micro_batches must be a positive int, got {num_micro_batches!r}")
    k = int(num_micro_batches)

    def zero_sum(tree):
        return jax.tree.map(
            lambda x: _numerics.like_param(jnp.zeros(jnp.shape(x), _numerics.compute_dtype(jnp.result_type(x))), x),
            tree,
        )

    def init(params):
        micro_step = _numerics.replicate_over_params(jnp.zeros([], jnp.int32), params)
        return AccumulateState(micro_step, zero_sum(params), inner.init(params))

    def update(updates, state, params=None, **extra_args):
        total = jax.tree.map(lambda s, g: s + jnp.asarray(g).astype(s.dtype), state.gradient_sum, updates)
        completes = state.micro_step == k - 1

        def mean(updates):
            return jax.tree.map(
                lambda s, g: (s / jnp.asarray(k, _numerics.real_dtype(s.dtype))).astype(jnp.result_type(g)),
                total,
                updates,
            )

        new_updates, new_inner = base._update_or_hold(
            completes, inner, updates, state.inner_state, params, extra_args, prepare=mean
        )
        new_sum = jax.tree.map(lambda s: jnp.where(completes, jnp.zeros_like(s), s), total)
        micro_step = jnp.where(completes, 0, state.micro_step + 1).astype(state.micro_step.dtype)
        return new_updates, AccumulateState(micro_step, new_sum, new_inner)

    return base.GradientTransformation(init, update)
