"""Adagrad (``torch.optim.Adagrad``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradxform import _numerics, _treecheck
from gradxform.base import GradientTransformation
from gradxform.optimizers import _common
from gradxform.registry import SPECS


class ScaleByAdagradState(NamedTuple):
    """State of :func:`scale_by_adagrad`.

    Attributes:
      step: int32 ``[]``, the updates done: one scalar for all the leaves (what ``init``
        makes), or a tree of per-leaf scalars like params (torch's per-parameter
        ``step``, as torch_compat fills it); ``update`` keeps the form it is given.
      sum: like params, the running sum of squared gradients.
    """

    step: Any
    sum: Any


def scale_by_adagrad(lr_decay=0.0, eps=1e-10, initial_accumulator_value=0.0, *, state_dtype=None):
    r"""Adagrad's direction, as in torch (eps outside the square root).

    .. math::
       s_t = s_{t-1} + g_t^2, \qquad
       d_t = \frac{1}{1 + (t-1)\,\eta} \cdot \frac{g_t}{\sqrt{s_t} + \epsilon}

    ``s_0 = initial_accumulator_value`` (``v + v i`` for complex parameters). optax puts
    eps inside the square root and starts from 0.1; torch does neither.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.scale_by_adagrad()
      >>> g = jnp.array([3.0, 4.0])
      >>> d1, state = tx.update(g, tx.init(g))
      >>> d2, state = tx.update(g, state)
      >>> d1.tolist(), [round(v, 4) for v in d2.tolist()]  # g / sqrt(t g^2): 1, then 1/sqrt(2)
      ([1.0, 1.0], [0.7071, 0.7071])
    """

    def init(params):
        return ScaleByAdagradState(
            _numerics.shared_step(params),
            _numerics.full_like_buffer(params, initial_accumulator_value, state_dtype),
        )

    def scalars(step):
        """The new step, and this step's coefficients (a function of dtype)."""
        step = step + 1
        t = step.astype(_numerics.hyper_dtype())
        decay = 1 / (1 + (t - 1) * jnp.asarray(lr_decay))
        return (step,), _numerics.cast_once(eps, decay)

    def leaf(g, s, coefficients):
        dtype = _numerics.compute_dtype(g.dtype)
        g = g.astype(dtype)
        eps_, decay = coefficients(dtype)
        s_new = s.astype(dtype) + g * g
        std = jnp.sqrt(s_new) + eps_
        return (g / std) * decay, s_new.astype(s.dtype)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        if _numerics.has_no_leaves(updates):
            return updates, state
        _treecheck.check_state(updates, state, like=("sum",))
        coefficients, (step,) = _numerics.scalar_rule(scalars, updates, state.step)
        direction, s = _numerics.leafwise(leaf, updates, state.sum, num_outputs=2, per_leaf=coefficients)
        return direction, ScaleByAdagradState(step, s)

    return GradientTransformation(init, update)


def adagrad(
    learning_rate=1e-2,
    lr_decay=0.0,
    weight_decay=0.0,
    initial_accumulator_value=0.0,
    eps=1e-10,
    *,
    maximize: bool = False,
    state_dtype=None,
) -> GradientTransformation:
    r"""Adagrad, number for number with ``torch.optim.Adagrad``.

    .. math::
       g_t \leftarrow \pm g_t + \lambda\theta_{t-1}, \quad
       \theta_t = \theta_{t-1} - \gamma\, d_t

    with :math:`d_t` from :func:`scale_by_adagrad`.

    Args:
      learning_rate: :math:`\gamma`; a float, a scalar array or a schedule.
      lr_decay: :math:`\eta`, the learning rate decay.
      weight_decay: :math:`\lambda`, an L2 penalty.
      initial_accumulator_value: the starting value of the sum of squares.
      eps: added to the denominator.
      maximize: maximize the objective.
      state_dtype: dtype of the sum buffer.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.adagrad(0.1)
      >>> updates, _ = tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))
      >>> round(updates.tolist()[0], 6)
      -0.1

    Reference: Duchi et al., 2011; ``torch.optim.Adagrad``.
    """
    SPECS["adagrad"].check_core(
        learning_rate=learning_rate,
        lr_decay=lr_decay,
        weight_decay=weight_decay,
        initial_accumulator_value=initial_accumulator_value,
        eps=eps,
    )
    _common.check_hyperparams(dict(initial_accumulator_value=initial_accumulator_value))  # used by init

    def build(learning_rate, lr_decay, eps, weight_decay=None):
        return _common.standard_chain(
            scale_by_adagrad(lr_decay, eps, initial_accumulator_value, state_dtype=state_dtype),
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            maximize=maximize,
        )

    return _common.inject(
        build, learning_rate=learning_rate, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps
    )
