"""Generic stateless building blocks: scaling, weight decay, sign flips.

Each computes in the parameter's precision (float32 for 16-bit floats) and returns its
updates in that precision.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradxform import _numerics
from gradxform.base import EmptyState, GradientTransformation


def _stateless(fn) -> GradientTransformation:
    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra_args):
        del extra_args
        return fn(updates, params), state

    return GradientTransformation(init, update)


def _upcast(x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    return x.astype(_numerics.compute_dtype(x.dtype))


def scale(step_size) -> GradientTransformation:
    """Multiplies updates by ``step_size`` (a float or scalar array).

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.scale(-2.0)
      >>> tx.update(jnp.ones(2), tx.init(None))[0].tolist()
      [-2.0, -2.0]
    """

    def fn(updates, params):
        del params
        return jax.tree.map(lambda u: _upcast(u) * _numerics.scalar(step_size, _upcast(u)), updates)

    return _stateless(fn)


def scale_by_learning_rate(learning_rate, *, flip_sign: bool = True) -> GradientTransformation:
    """Multiplies updates by ``-learning_rate`` (by ``learning_rate`` if not ``flip_sign``).

    This is torch's ``param.add_(direction, alpha=-lr)``: gradxform's building blocks
    return ascent directions, and this block turns them into descent updates.
    """
    sign = -1 if flip_sign else 1

    def fn(updates, params):
        del params
        return jax.tree.map(
            lambda u: _upcast(u) * _numerics.scalar(sign * jnp.asarray(learning_rate), _upcast(u)),
            updates,
        )

    return _stateless(fn)


def negate() -> GradientTransformation:
    """Negates updates: torch's ``maximize=True`` (``grad = -grad``).

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.negate()
      >>> tx.update(jnp.array([1.0, -2.0]), tx.init(None))[0].tolist()
      [-1.0, 2.0]
    """
    return _stateless(lambda updates, params: jax.tree.map(lambda u: -_upcast(u), updates))


def add_decayed_weights(weight_decay) -> GradientTransformation:
    """Adds ``weight_decay * params`` to the updates.

    Placed before an adaptive rule this is torch's L2 penalty
    (``grad = grad.add(param, alpha=weight_decay)``); placed after it and before
    :func:`scale_by_learning_rate` it is decoupled weight decay
    (``param.mul_(1 - lr * weight_decay)``), as in AdamW.
    """

    def fn(updates, params):
        if params is None:
            raise ValueError("add_decayed_weights needs the params argument of update")

        def decay(u, p):
            u = _upcast(u)
            rate = _numerics.scalar(weight_decay, u)
            # torch skips the term when weight_decay == 0 (so an inf parameter stays harmless).
            return jnp.where(rate == 0, u, u + rate * _upcast(p))

        return jax.tree.map(decay, updates, params)

    return _stateless(fn)
