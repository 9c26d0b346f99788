"""RMSprop, plain, centered and with momentum (``torch.optim.RMSprop``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradxform import _numerics, _treecheck
from gradxform.base import GradientTransformation
from gradxform.optimizers import _common
from gradxform.registry import SPECS


class ScaleByRmspropState(NamedTuple):
    """State of :func:`scale_by_rmsprop`.

    Attributes:
      step: int32 ``[]``, the updates done: one scalar for all the leaves (what ``init``
        makes), or a tree of per-leaf scalars like params (torch's per-parameter
        ``step``, as torch_compat fills it); ``update`` keeps the form it is given.
      square_avg: like params, running average of squared gradients.
      momentum_buffer: like params when ``momentum`` is used, else ``None``.
      grad_avg: like params when ``centered``, else ``None``.
    """

    step: Any
    square_avg: Any
    momentum_buffer: Any
    grad_avg: Any


def scale_by_rmsprop(
    alpha=0.99, eps=1e-8, momentum=None, *, centered: bool = False, state_dtype=None
):
    r"""RMSprop's direction, as in torch (eps added after the square root).

    .. math::
       v_t = \alpha v_{t-1} + (1-\alpha) g_t^2, \quad
       \bar g_t = \mathrm{lerp}(\bar g_{t-1}, g_t, 1-\alpha) \text{ (centered)}, \\
       a_t = \sqrt{v_t - \bar g_t^2} + \epsilon, \quad
       b_t = \mu b_{t-1} + g_t / a_t, \quad d_t = b_t \text{ (or } g_t/a_t \text{ without momentum)}

    Args:
      alpha: smoothing constant.
      eps: added to the denominator (optax adds it inside the square root).
      momentum: ``None`` for no momentum buffer, else :math:`\mu`.
      centered: normalize by the estimated variance.
      state_dtype: dtype of the buffers.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.scale_by_rmsprop(alpha=0.99)
      >>> d, _ = tx.update(jnp.array([0.5, -3.0]), tx.init(jnp.zeros(2)))
      >>> d.tolist()  # g / sqrt(0.01 g^2) = 10 sign(g)
      [10.0, -10.0]
    """
    with_momentum = momentum is not None

    def init(params):
        zeros = lambda: _numerics.zeros_like_buffer(params, state_dtype)  # noqa: E731
        return ScaleByRmspropState(
            _numerics.shared_step(params),
            zeros(),
            zeros() if with_momentum else None,
            zeros() if centered else None,
        )

    def leaf(g, v, buf, gbar, coefficients):
        dtype = _numerics.compute_dtype(g.dtype)
        g = g.astype(dtype)
        alpha_, one_minus_alpha, eps_, momentum_, lerp_weight = coefficients(dtype)
        v_new = v.astype(dtype) * alpha_ + one_minus_alpha * g * g
        if centered:
            gbar_new = _numerics.lerp(gbar.astype(dtype), g, lerp_weight)
            avg = jnp.sqrt(v_new - gbar_new * gbar_new)
            gbar = gbar_new.astype(gbar.dtype)
        else:
            avg = jnp.sqrt(v_new)
        avg = avg + eps_
        if with_momentum:
            buf_new = buf.astype(dtype) * momentum_ + g / avg
            direction, buf = buf_new, buf_new.astype(buf.dtype)
        else:
            direction = g / avg
        return direction, v_new.astype(v.dtype), buf, gbar

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        if _numerics.has_no_leaves(updates):
            return updates, state
        _treecheck.check_state(updates, state, like=("square_avg", "momentum_buffer", "grad_avg"))
        cast = _numerics.cast_once(alpha, 1 - jnp.asarray(alpha), eps, 0.0 if momentum is None else momentum)
        per_dtype = _numerics.once_per_dtype(
            lambda real: (*cast(real), _numerics.lerp_weight(1 - jnp.asarray(alpha), real))
        )
        coefficients, (step,) = _numerics.scalar_rule(lambda step: ((step + 1,), per_dtype), updates, state.step)
        direction, v, buf, gbar = _numerics.leafwise(
            leaf,
            updates,
            state.square_avg,
            state.momentum_buffer,
            state.grad_avg,
            num_outputs=4,
            per_leaf=coefficients,
        )
        return direction, ScaleByRmspropState(step, v, buf, gbar)

    return GradientTransformation(init, update)


def rmsprop(
    learning_rate=1e-2,
    alpha=0.99,
    eps=1e-8,
    weight_decay=0.0,
    momentum=0.0,
    centered: bool = False,
    *,
    maximize: bool = False,
    state_dtype=None,
) -> GradientTransformation:
    r"""RMSprop, number for number with ``torch.optim.RMSprop``.

    :math:`\theta_t = \theta_{t-1} - \gamma d_t` with :math:`d_t` from
    :func:`scale_by_rmsprop` and the gradient :math:`\pm g_t + \lambda\theta_{t-1}`.

    Args:
      learning_rate: :math:`\gamma`; a float, a scalar array or a schedule.
      alpha: smoothing constant.
      eps: added to the denominator.
      weight_decay: :math:`\lambda`, an L2 penalty.
      momentum: :math:`\mu`. The number 0 keeps no momentum buffer (torch keeps none
        while ``momentum == 0``); ``momentum`` is then not a state hyperparameter.
      centered: centered RMSprop.
      maximize: maximize the objective.
      state_dtype: dtype of the buffers.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.rmsprop(0.01)
      >>> updates, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
      >>> round(updates.tolist()[0], 6)
      -0.1

    Reference: Hinton, Lecture 6e; Graves, 2013 (centered); ``torch.optim.RMSprop``.
    """
    SPECS["rmsprop"].check_core(
        learning_rate=learning_rate, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum
    )
    with_momentum = not _common.is_zero(momentum)

    def build(learning_rate, alpha, eps, weight_decay=None, momentum=None):
        return _common.standard_chain(
            scale_by_rmsprop(alpha, eps, momentum, centered=centered, state_dtype=state_dtype),
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            maximize=maximize,
        )

    hyperparams = dict(learning_rate=learning_rate, alpha=alpha, eps=eps, weight_decay=weight_decay)
    if with_momentum:
        hyperparams["momentum"] = momentum
    return _common.inject(build, **hyperparams)
