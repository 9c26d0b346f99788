"""Adamax, Adam with the infinity norm (``torch.optim.Adamax``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradxform import _numerics, _treecheck
from gradxform.base import GradientTransformation
from gradxform.optimizers import _common
from gradxform.registry import SPECS


class ScaleByAdamaxState(NamedTuple):
    """State of :func:`scale_by_adamax`.

    Attributes:
      step: int32 ``[]``, the updates done: one scalar for all the leaves (what ``init``
        makes), or a tree of per-leaf scalars like params (torch's per-parameter
        ``step``, as torch_compat fills it); ``update`` keeps the form it is given.
      exp_avg: like params, the first moment.
      exp_inf: like params, the exponentially weighted infinity norm.
    """

    step: Any
    exp_avg: Any
    exp_inf: Any


def scale_by_adamax(beta1=0.9, beta2=0.999, eps=1e-8, *, state_dtype=None):
    r"""Adamax's direction.

    .. math::
       m_t = \mathrm{lerp}(m_{t-1}, g_t, 1-\beta_1), \quad
       u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon), \quad
       d_t = \frac{m_t}{(1-\beta_1^t)\, u_t}

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.scale_by_adamax()
      >>> d, _ = tx.update(jnp.array([0.5, -3.0]), tx.init(jnp.zeros(2)))
      >>> d.tolist()  # (0.1 g / 0.1) / |g|
      [1.0, -1.0]
    """

    def init(params):
        zeros = lambda: _numerics.zeros_like_buffer(params, state_dtype)  # noqa: E731
        return ScaleByAdamaxState(_numerics.shared_step(params), zeros(), zeros())

    def scalars(step):
        """The new step, and this step's coefficients (a function of dtype)."""
        step = step + 1
        bias_correction = 1 - jnp.asarray(beta1) ** step.astype(_numerics.hyper_dtype())
        cast = _numerics.cast_once(beta2, eps, 1 / bias_correction)
        return (step,), _numerics.once_per_dtype(
            lambda real: (_numerics.lerp_weight(1 - jnp.asarray(beta1), real), *cast(real))
        )

    def leaf(g, m, u, coefficients):
        dtype = _numerics.compute_dtype(g.dtype)
        g = g.astype(dtype)
        lerp_weight, beta2_, eps_, inverse_correction = coefficients(dtype)
        m_new = _numerics.lerp(m.astype(dtype), g, lerp_weight)
        u_new = jnp.maximum(u.astype(dtype) * beta2_, jnp.abs(g) + eps_)
        direction = (m_new / u_new) * inverse_correction
        return direction, m_new.astype(m.dtype), u_new.astype(u.dtype)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        if _numerics.has_no_leaves(updates):
            return updates, state
        _treecheck.check_state(updates, state, like=("exp_avg", "exp_inf"))
        coefficients, (step,) = _numerics.scalar_rule(scalars, updates, state.step)
        direction, m, u = _numerics.leafwise(
            leaf, updates, state.exp_avg, state.exp_inf, num_outputs=3, per_leaf=coefficients
        )
        return direction, ScaleByAdamaxState(step, m, u)

    return GradientTransformation(init, update)


def adamax(
    learning_rate=2e-3,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0.0,
    *,
    maximize: bool = False,
    state_dtype=None,
) -> GradientTransformation:
    r"""Adamax, number for number with ``torch.optim.Adamax``.

    :math:`\theta_t = \theta_{t-1} - \gamma d_t` with :math:`d_t` from
    :func:`scale_by_adamax` and the gradient :math:`\pm g_t + \lambda\theta_{t-1}`.

    Args:
      learning_rate: :math:`\gamma`; a float, a scalar array or a schedule.
      betas: :math:`(\beta_1, \beta_2)`.
      eps: added to :math:`|g_t|`.
      weight_decay: :math:`\lambda`, an L2 penalty.
      maximize: maximize the objective.
      state_dtype: dtype of the buffers.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.adamax(0.1)
      >>> updates, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
      >>> round(updates.tolist()[0], 6)
      -0.1

    Reference: Kingma & Ba, 2015, section 7; ``torch.optim.Adamax``.
    """
    SPECS["adamax"].check_core(learning_rate=learning_rate, betas=betas, eps=eps, weight_decay=weight_decay)

    def build(learning_rate, betas, eps, weight_decay=None):
        return _common.standard_chain(
            scale_by_adamax(betas[0], betas[1], eps, state_dtype=state_dtype),
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            maximize=maximize,
        )

    return _common.inject(
        build, learning_rate=learning_rate, betas=betas, eps=eps, weight_decay=weight_decay
    )
