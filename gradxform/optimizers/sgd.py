"""Stochastic gradient descent with momentum, dampening and Nesterov (``torch.optim.SGD``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradxform import _numerics, _treecheck
from gradxform.base import GradientTransformation, identity
from gradxform.optimizers import _common
from gradxform.registry import SPECS


class ScaleBySgdState(NamedTuple):
    """State of :func:`scale_by_sgd`.

    Attributes:
      step: int32 ``[]``, updates done (0 means the buffer is not yet set): one scalar
        for all the leaves (what ``init`` makes), or a tree of per-leaf scalars like
        params (torch's per-parameter ``step``, as torch_compat fills it); ``update``
        keeps the form it is given.
      momentum_buffer: like params (``state_dtype`` or the param dtype).
    """

    step: Any
    momentum_buffer: Any


def scale_by_sgd(momentum=0.9, dampening=0.0, nesterov: bool = False, *, state_dtype=None):
    r"""torch's SGD momentum, as an ascent direction.

    .. math::
       b_1 = g_1, \quad b_t = \mu b_{t-1} + (1 - \tau) g_t, \qquad
       d_t = g_t + \mu b_t \text{ (Nesterov) or } b_t

    Args:
      momentum: :math:`\mu`.
      dampening: :math:`\tau` (not applied at the first step, as in torch).
      nesterov: use Nesterov momentum.
      state_dtype: dtype of the buffer (default: the parameter's).

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.scale_by_sgd(momentum=0.9)
      >>> g = jnp.array([2.0])
      >>> d1, state = tx.update(g, tx.init(g))
      >>> d2, state = tx.update(g, state)
      >>> d1.tolist(), d2.tolist()  # b1 = g, b2 = 0.9 * b1 + g
      ([2.0], [3.8])
    """

    def init(params):
        return ScaleBySgdState(_numerics.shared_step(params), _numerics.zeros_like_buffer(params, state_dtype))

    def scalars(step):
        """The new step; the coefficients, a function of dtype, with whether it is the first."""
        cast = _numerics.cast_once(momentum, 1 - jnp.asarray(dampening))
        return (step + 1,), _numerics.once_per_dtype(lambda real: (*cast(real), step == 0))

    def leaf(g, buf, coefficients):
        dtype = _numerics.compute_dtype(g.dtype)
        g = g.astype(dtype)
        mu, one_minus_dampening, first = coefficients(dtype)
        new = buf.astype(dtype) * mu + g * one_minus_dampening
        new = jnp.where(first, g, new)
        direction = g + new * mu if nesterov else new
        return direction, new.astype(buf.dtype)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        if _numerics.has_no_leaves(updates):
            return updates, state
        _treecheck.check_state(updates, state, like=("momentum_buffer",))
        coefficients, (step,) = _numerics.scalar_rule(scalars, updates, state.step)
        direction, buf = _numerics.leafwise(
            leaf, updates, state.momentum_buffer, num_outputs=2, per_leaf=coefficients
        )
        return direction, ScaleBySgdState(step, buf)

    return GradientTransformation(init, update)


def sgd(
    learning_rate=1e-3,
    momentum=0.0,
    dampening=0.0,
    weight_decay=0.0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
    state_dtype=None,
) -> GradientTransformation:
    r"""Stochastic gradient descent, number for number with ``torch.optim.SGD``.

    .. math::
       g_t \leftarrow \pm g_t + \lambda \theta_{t-1}, \quad
       b_t = \mu b_{t-1} + (1-\tau) g_t \ (b_1 = g_1), \quad
       \theta_t = \theta_{t-1} - \gamma\,(g_t + \mu b_t \text{ if Nesterov else } b_t)

    Args:
      learning_rate: :math:`\gamma`; a float, a scalar array or a schedule.
      momentum: :math:`\mu`. With the number 0 no buffer is kept (as torch's
        ``momentum_buffer`` stays ``None``) and ``momentum`` is not a state hyperparameter.
      dampening: :math:`\tau`.
      weight_decay: :math:`\lambda`, an L2 penalty added to the gradient.
      nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
      maximize: maximize the objective instead of minimizing.
      state_dtype: dtype of the momentum buffer (default: the parameter's).

    Returns:
      A :class:`~gradxform.GradientTransformation` whose float hyperparameters live in its
      state (see :func:`gradxform.set_hyperparams`).

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.sgd(0.1, momentum=0.9)
      >>> params = jnp.array([1.0, -2.0])
      >>> state = tx.init(params)
      >>> updates, state = tx.update(2 * params, state, params)
      >>> gradxform.apply_updates(params, updates).tolist()
      [0.8, -1.6]

    Reference: ``torch.optim.SGD``; Sutskever et al., 2013.
    """
    SPECS["sgd"].check_core(
        learning_rate=learning_rate, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov
    )
    with_momentum = not _common.is_zero(momentum)

    def build(learning_rate, weight_decay=None, momentum=None, dampening=None):
        direction = (
            scale_by_sgd(momentum, dampening, nesterov, state_dtype=state_dtype)
            if with_momentum
            else identity()
        )
        return _common.standard_chain(
            direction, learning_rate=learning_rate, weight_decay=weight_decay, maximize=maximize
        )

    _common.check_hyperparams(dict(momentum=momentum, dampening=dampening))  # even when unused
    hyperparams = dict(learning_rate=learning_rate, weight_decay=weight_decay)
    if with_momentum:
        hyperparams.update(momentum=momentum, dampening=dampening)
    return _common.inject(build, **hyperparams)
