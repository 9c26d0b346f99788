"""Resilient backpropagation (``torch.optim.Rprop``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradxform import _numerics, _treecheck, transforms
from gradxform.base import GradientTransformation, chain
from gradxform.optimizers import _common
from gradxform.registry import SPECS


class ScaleByRpropState(NamedTuple):
    """State of :func:`scale_by_rprop`.

    Attributes:
      step: int32 ``[]``, the updates done: one scalar for all the leaves (what ``init``
        makes), or a tree of per-leaf scalars like params (torch's per-parameter
        ``step``, as torch_compat fills it); ``update`` keeps the form it is given.
      prev: like params, the previous (masked) gradient.
      step_size: like params, each element's step size (starts at the learning rate).
    """

    step: Any
    prev: Any
    step_size: Any


def scale_by_rprop(learning_rate=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0), *, state_dtype=None):
    r"""Rprop's step, as in torch. Returns descent updates.

    .. math::
       s_t = \mathrm{clip}(s_{t-1} \cdot \eta^{\pm}, s_{\min}, s_{\max}), \quad
       g_t \leftarrow 0 \text{ where } g_t g_{t-1} < 0, \quad
       \theta_t = \theta_{t-1} - \mathrm{sign}(g_t)\, s_t

    where :math:`\eta^+` applies when :math:`g_t g_{t-1} > 0`, :math:`\eta^-` when it is
    negative, and 1 when it is zero. The learning rate is only the initial step size.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.scale_by_rprop(learning_rate=0.1)
      >>> g = jnp.array([3.0, -0.5])
      >>> u1, state = tx.update(g, tx.init(g))
      >>> u2, state = tx.update(g, state)
      >>> u1.tolist(), u2.tolist()  # -s sign(g); same signs twice: s grows by eta+ = 1.2
      ([-0.1, 0.1], [-0.12, 0.12])
    """

    def init(params):
        return ScaleByRpropState(
            _numerics.shared_step(params),
            _numerics.zeros_like_buffer(params, state_dtype),
            _numerics.full_like_buffer(params, learning_rate, state_dtype),
        )

    def leaf(g, prev, size, coefficients):
        dtype = _numerics.compute_dtype(g.dtype)
        g = g.astype(dtype)
        sign = jnp.sign(g * prev.astype(dtype))
        eta_minus, eta_plus, lo, hi = coefficients(dtype)
        factor = jnp.where(sign > 0, eta_plus, jnp.where(sign < 0, eta_minus, jnp.ones_like(g)))
        size_new = jnp.minimum(jnp.maximum(size.astype(dtype) * factor, lo), hi)
        g = jnp.where(sign < 0, jnp.zeros_like(g), g)
        return -jnp.sign(g) * size_new, g.astype(prev.dtype), size_new.astype(size.dtype)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        if _numerics.has_no_leaves(updates):
            return updates, state
        _treecheck.check_state(updates, state, like=("prev", "step_size"))
        cast = _numerics.cast_once(*etas, *step_sizes)
        coefficients, (step,) = _numerics.scalar_rule(lambda step: ((step + 1,), cast), updates, state.step)
        updates, prev, size = _numerics.leafwise(
            leaf, updates, state.prev, state.step_size, num_outputs=3, per_leaf=coefficients
        )
        return updates, ScaleByRpropState(step, prev, size)

    return GradientTransformation(init, update)


def rprop(
    learning_rate=1e-2,
    etas=(0.5, 1.2),
    step_sizes=(1e-6, 50.0),
    *,
    maximize: bool = False,
    state_dtype=None,
) -> GradientTransformation:
    r"""Rprop, number for number with ``torch.optim.Rprop``.

    See :func:`scale_by_rprop` for the rule.

    Args:
      learning_rate: the initial step size; a float, a scalar array or a schedule (as in
        torch, only its value at ``init`` matters).
      etas: :math:`(\eta^-, \eta^+)`, with :math:`0 < \eta^- < 1 < \eta^+`.
      step_sizes: :math:`(s_{\min}, s_{\max})`.
      maximize: maximize the objective.
      state_dtype: dtype of the buffers.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.rprop(0.1)
      >>> updates, _ = tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))
      >>> updates.tolist()
      [-0.1, 0.1]

    Reference: Riedmiller & Braun, 1993; ``torch.optim.Rprop``.
    """
    SPECS["rprop"].check_core(learning_rate=learning_rate, etas=etas, step_sizes=step_sizes)

    def build(learning_rate, etas, step_sizes):
        parts = [transforms.negate()] if maximize else []
        parts.append(scale_by_rprop(learning_rate, etas, step_sizes, state_dtype=state_dtype))
        return chain(*parts)

    return _common.inject(
        build, optional=(), learning_rate=learning_rate, etas=etas, step_sizes=step_sizes
    )
