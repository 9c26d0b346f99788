"""Dynamic loss scaling for float16 training, with torch's ``GradScaler`` arithmetic.

:func:`loss_scaled` wraps any transformation: it holds a loss scale, takes the
gradients of the *scaled* loss, unscales them, skips the update when they hold an Inf
or a NaN, and grows or backs off the scale by the rules of torch 2.13's
``torch.amp.GradScaler`` (its ``_amp_update_scale_``). :func:`get_loss_scale` reads the
current scale from a state, to multiply the loss by before differentiating.

The arithmetic lives here once; ``torch_compat.amp.GradScaler`` runs the same
functions (through ``gradxform._internal``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _numerics, base
from gradxform.robust import all_finite


class LossScaledState(NamedTuple):
    """State of :func:`loss_scaled`.

    Attributes:
      inner_state: the wrapped transformation's state, unchanged by a skipped update.
      scale: float32 ``[]``, the current loss scale.
      growth_tracker: int32 ``[]``, the number of finite updates in a row since the scale
        last changed (torch's ``_growth_tracker``).
    """

    inner_state: Any
    scale: jax.Array
    growth_tracker: jax.Array


def _check_factors(growth_factor: float, backoff_factor: float) -> None:
    """torch's checks of the growth and backoff factors (``AssertionError`` there too)."""
    if growth_factor <= 1.0:
        raise AssertionError("The growth factor must be > 1.0.")
    if backoff_factor >= 1.0:
        raise AssertionError("The backoff factor must be < 1.0.")


def _scale_outputs(outputs, scale):
    """``outputs * scale`` with torch's result dtype for a tensor times a 0-d float32 tensor.

    An array with dimensions keeps its floating dtype (the product is computed in float32
    or wider and rounded once, so a float16 loss of 1.0 scaled by 2**16 overflows, as in
    torch); a 0-d array or a non-float one promotes with float32 as usual.
    """
    outputs = jnp.asarray(outputs)
    if jnp.ndim(outputs) and jnp.issubdtype(outputs.dtype, jnp.inexact):
        wide = jnp.promote_types(outputs.dtype, jnp.float32)
        return (outputs.astype(wide) * scale.astype(wide)).astype(outputs.dtype)
    return outputs * scale


def _unscale_leaf(grad, inv_scale):
    # torch's _amp_foreach_non_finite_check_and_unscale_: the product is computed in
    # float32 (or the gradient's wider dtype) and rounded back to the gradient's dtype.
    if not jnp.issubdtype(grad.dtype, jnp.inexact):
        return grad
    wide = jnp.promote_types(grad.dtype, jnp.float32)
    real = jnp.finfo(wide).dtype
    return (grad.astype(wide) * inv_scale.astype(real)).astype(grad.dtype)


def _unscale(grads, scale):
    """The gradients divided by ``scale`` and whether the scaled ones held an Inf or NaN.

    As torch: ``inv_scale`` is ``1 / scale`` rounded to float32 and each gradient is
    multiplied by it; the check is made on the gradients as given (so a finite gradient
    that overflows once unscaled is not counted). Returns ``(unscaled, found_inf)``,
    ``found_inf`` a bool ``[]`` array.
    """
    inv_scale = jnp.reciprocal(jnp.asarray(scale, jnp.float32))
    found_inf = jnp.logical_not(all_finite(grads))
    return jax.tree.map(lambda g: _unscale_leaf(g, inv_scale), grads), found_inf


def _split_factor(factor):
    """A host float as a pair ``(hi, lo)`` for :func:`_times_factor`.

    Under ``jax_enable_x64``: the float64 factor itself and 0. Otherwise two float32
    numbers whose sum is within 2**-48 of it. A traced or array factor is taken as is
    (``lo = 0``).
    """
    if isinstance(factor, (int, float, np.floating, np.integer)):
        if _numerics.hyper_dtype() == jnp.float64:
            return np.float64(factor), np.float64(0.0)
        hi = np.float32(factor)
        return hi, np.float32(float(factor) - float(hi))
    return jnp.asarray(factor), jnp.zeros([], jnp.asarray(factor).dtype)


def _two_product(a, b):
    """``(p, e)`` with ``p = fl(a * b)`` and ``a * b == p + e`` exactly (Dekker, float32)."""

    def split(x):
        c = x * np.float32(4097.0)  # 2**12 + 1
        high = c - (c - x)
        return high, x - high

    p = a * b
    a_hi, a_lo = split(a)
    b_hi, b_lo = split(b)
    e = ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    return p, e


def _times_factor(scale, factor):
    """``scale * factor`` as torch computes it: in double, rounded to float32.

    ``factor`` is a host float, or a ``(hi, lo)`` pair from :func:`_split_factor` (which
    may be traced). Under ``jax_enable_x64`` the product is torch's exactly. Without
    float64 (JAX's default) it is formed in two float32 parts, exact to about 2**-48,
    then rounded once: torch's result for every factor float32 holds (2.0, 0.5, ...)
    and for most others; for a product within about 2**-48 of half-way between two
    float32 numbers (a few percent of the scales for 1.1, none found for 0.3 or 0.9999)
    it may round the other way than torch's double rounding.
    """
    hi, lo = factor if isinstance(factor, tuple) else _split_factor(factor)
    if _numerics.hyper_dtype() == jnp.float64:
        wide = jnp.asarray(hi, jnp.float64) + jnp.asarray(lo, jnp.float64)
        return (scale.astype(jnp.float64) * wide).astype(jnp.float32)
    hi, lo = jnp.asarray(hi, jnp.float32), jnp.asarray(lo, jnp.float32)
    p, e = _two_product(scale, hi)
    out = p + (e + scale * lo)
    # The split overflows for scales near the float32 maximum: the plain product then.
    return jnp.where(jnp.isfinite(out), out, p)


def _update_scale(scale, growth_tracker, found_inf, growth_factor, backoff_factor, growth_interval):
    """torch's ``_amp_update_scale_``: the next ``(scale, growth_tracker)``.

    On ``found_inf`` the scale is multiplied by ``backoff_factor`` and the tracker reset.
    Otherwise the tracker counts one more finite step; when it reaches
    ``growth_interval`` the scale is multiplied by ``growth_factor`` (unless that
    overflows float32, when it is kept) and the tracker reset. The factors are host
    floats or ``(hi, lo)`` pairs of :func:`_split_factor` (which may be traced); the
    interval may be traced.
    """
    scale = jnp.asarray(scale, jnp.float32)
    growth_tracker = jnp.asarray(growth_tracker, jnp.int32)
    successful = growth_tracker + 1
    grow = successful == growth_interval
    grown = _times_factor(scale, growth_factor)
    grown = jnp.where(jnp.isfinite(grown), grown, scale)
    new_scale = jnp.where(found_inf, _times_factor(scale, backoff_factor), jnp.where(grow, grown, scale))
    new_tracker = jnp.where(found_inf | grow, 0, successful).astype(jnp.int32)
    return new_scale, new_tracker


def loss_scaled(
    inner: base.GradientTransformation,
    init_scale: float = 2.0**16,
    growth_factor: float = 2.0,
    backoff_factor: float = 0.5,
    growth_interval: int = 2000,
) -> base.GradientTransformation:
    """Dynamic loss scaling around ``inner``, as torch's ``GradScaler`` does it.

    The gradients given to ``update`` are those of the loss multiplied by the current
    scale (read it with :func:`get_loss_scale`). Each update:

    1. checks them for Inf and NaN and multiplies them by ``1 / scale`` (float32);
    2. if they were finite, runs ``inner`` on the unscaled gradients; otherwise the
       update is skipped: ``-0.0`` updates (parameters unchanged bit for bit) and
       ``inner``'s state kept, step counts included (the choice is a ``lax.cond``, inside
       the compiled step, with no host synchronization);
    3. updates the scale: times ``backoff_factor`` after a skipped update, times
       ``growth_factor`` after ``growth_interval`` finite updates in a row.

    The sequence of scales is torch's for the same gradients (bit for bit; without
    ``jax_enable_x64``, a factor that float32 cannot hold, such as 1.1, may rarely give
    a scale one float32 step apart, see :func:`_times_factor`). Gradients in float16 or
    bfloat16 are unscaled in float32 and rounded back (torch refuses float16
    gradients; keep float32 master parameters, see ``docs/mixed-precision.md``).

    Args:
      inner: the transformation the unscaled gradients go to (any optimizer, a chain,
        ``param_groups``, an optax transformation).
      init_scale: the first scale.
      growth_factor: the factor the scale grows by (``> 1``).
      backoff_factor: the factor the scale shrinks by after a non-finite step (``< 1``).
      growth_interval: the number of finite updates in a row before the scale grows.

    Returns:
      A transformation whose state is a :class:`LossScaledState`.

    Raises:
      AssertionError: torch's, for ``growth_factor <= 1`` or ``backoff_factor >= 1``.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform
      >>> tx = gradxform.loss_scaled(gradxform.sgd(0.1), init_scale=1024.0)
      >>> params = jnp.array([1.0, 2.0])
      >>> state = tx.init(params)
      >>> scale = gradxform.get_loss_scale(state)
      >>> grads = jax.grad(lambda p: jnp.sum(p ** 2) * scale)(params)
      >>> updates, state = tx.update(grads, state, params)
      >>> [round(v, 6) for v in gradxform.apply_updates(params, updates).tolist()]
      [0.8, 1.6]
      >>> _, state = tx.update(grads * jnp.inf, state, params)  # overflow: skipped
      >>> float(gradxform.get_loss_scale(state))
      512.0
    """
    _check_factors(growth_factor, backoff_factor)

    def init(params):
        # Two buffers (one shared buffer cannot be donated twice).
        scale, tracker = _numerics.replicate_over_params(
            (jnp.full([], init_scale, jnp.float32), jnp.zeros([], jnp.int32)), params
        )
        return LossScaledState(inner.init(params), scale, tracker)

    def update(updates, state, params=None, **extra_args):
        unscaled, found_inf = _unscale(updates, state.scale)
        new_updates, new_inner = base._update_or_hold(
            jnp.logical_not(found_inf), inner, unscaled, state.inner_state, params, extra_args
        )
        scale, tracker = _update_scale(
            state.scale, state.growth_tracker, found_inf, growth_factor, backoff_factor, growth_interval
        )
        return new_updates, LossScaledState(new_inner, scale, tracker)

    return base.GradientTransformation(init, update)


def get_loss_scale(state) -> jax.Array:
    """The current loss scale (float32 ``[]``) of the :func:`loss_scaled` state in ``state``.

    ``state`` may be the :class:`LossScaledState` itself or any state holding exactly
    one (a ``chain``'s tuple, a wrapper's). Multiply the loss by it before taking the
    gradient; pass it into a jitted step as an argument or read it there from the state,
    so that the compiled function does not freeze one value.

    Raises:
      ValueError: if ``state`` holds no :class:`LossScaledState`, or more than one.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> state = gradxform.loss_scaled(gradxform.adam(0.1)).init(jnp.ones(2))
      >>> float(gradxform.get_loss_scale(state))
      65536.0
    """
    found = [
        leaf.scale
        for leaf in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, LossScaledState))
        if isinstance(leaf, LossScaledState)
    ]
    if len(found) != 1:
        raise ValueError(f"get_loss_scale needs a state holding one LossScaledState, found {len(found)}")
    return found[0]
