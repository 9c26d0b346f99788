"""Adadelta (``torch.optim.Adadelta``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradxform import _numerics, _treecheck
from gradxform.base import GradientTransformation
from gradxform.optimizers import _common
from gradxform.registry import SPECS


class ScaleByAdadeltaState(NamedTuple):
    """State of :func:`scale_by_adadelta`.

    Attributes:
      step: int32 ``[]``, the updates done: one scalar for all the leaves (what ``init``
        makes), or a tree of per-leaf scalars like params (torch's per-parameter
        ``step``, as torch_compat fills it); ``update`` keeps the form it is given.
      square_avg: like params, running average of squared gradients.
      acc_delta: like params, running average of squared updates.
    """

    step: Any
    square_avg: Any
    acc_delta: Any


def scale_by_adadelta(rho=0.9, eps=1e-6, *, state_dtype=None):
    r"""Adadelta's direction.

    .. math::
       v_t = \rho v_{t-1} + (1-\rho) g_t^2, \quad
       d_t = \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}} g_t, \quad
       u_t = \rho u_{t-1} + (1-\rho) d_t^2

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.scale_by_adadelta(rho=0.9, eps=1e-6)
      >>> d, _ = tx.update(jnp.array([1.0]), tx.init(jnp.zeros(1)))
      >>> round(d.tolist()[0], 6)  # sqrt(0 + 1e-6) / sqrt(0.1 + 1e-6)
      0.003162
    """

    def init(params):
        zeros = lambda: _numerics.zeros_like_buffer(params, state_dtype)  # noqa: E731
        return ScaleByAdadeltaState(_numerics.shared_step(params), zeros(), zeros())

    def leaf(g, v, u, coefficients):
        dtype = _numerics.compute_dtype(g.dtype)
        g = g.astype(dtype)
        r, one_minus_r, e = coefficients(dtype)
        v_new = v.astype(dtype) * r + one_minus_r * g * g
        std = jnp.sqrt(v_new + e)
        delta = jnp.sqrt(u.astype(dtype) + e) / std * g
        u_new = u.astype(dtype) * r + one_minus_r * delta * delta
        return delta, v_new.astype(v.dtype), u_new.astype(u.dtype)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        if _numerics.has_no_leaves(updates):
            return updates, state
        _treecheck.check_state(updates, state, like=("square_avg", "acc_delta"))
        coefficients, (step,) = _numerics.scalar_rule(
            lambda step: ((step + 1,), _numerics.cast_once(rho, 1 - jnp.asarray(rho), eps)), updates, state.step
        )
        delta, v, u = _numerics.leafwise(
            leaf, updates, state.square_avg, state.acc_delta, num_outputs=3, per_leaf=coefficients
        )
        return delta, ScaleByAdadeltaState(step, v, u)

    return GradientTransformation(init, update)


def adadelta(
    learning_rate=1.0,
    rho=0.9,
    eps=1e-6,
    weight_decay=0.0,
    *,
    maximize: bool = False,
    state_dtype=None,
) -> GradientTransformation:
    r"""Adadelta, number for number with ``torch.optim.Adadelta``.

    :math:`\theta_t = \theta_{t-1} - \gamma d_t` with :math:`d_t` from
    :func:`scale_by_adadelta` and the gradient :math:`\pm g_t + \lambda\theta_{t-1}`.

    Args:
      learning_rate: :math:`\gamma`, scales the delta; a float, scalar array or schedule.
      rho: :math:`\rho`, the running-average coefficient.
      eps: added inside both square roots.
      weight_decay: :math:`\lambda`, an L2 penalty.
      maximize: maximize the objective.
      state_dtype: dtype of the buffers.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.adadelta()
      >>> updates, _ = tx.update(jnp.array([1.0]), tx.init(jnp.zeros(1)))
      >>> round(updates.tolist()[0], 7)
      -0.0031623

    Reference: Zeiler, 2012; ``torch.optim.Adadelta``.
    """
    SPECS["adadelta"].check_core(learning_rate=learning_rate, rho=rho, eps=eps, weight_decay=weight_decay)

    def build(learning_rate, rho, eps, weight_decay=None):
        return _common.standard_chain(
            scale_by_adadelta(rho, eps, state_dtype=state_dtype),
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            maximize=maximize,
        )

    return _common.inject(
        build, learning_rate=learning_rate, rho=rho, eps=eps, weight_decay=weight_decay
    )
