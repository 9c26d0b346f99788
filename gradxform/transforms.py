"""Generic stateless building blocks: scaling, weight decay, sign flips, clipping.

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
        factor = _numerics.cast_once(step_size)  # once per dtype, not per leaf
        return jax.tree.map(lambda u: _upcast(u) * factor(_upcast(u).dtype)[0], updates)

    return _stateless(fn)


def scale_by_learning_rate(learning_rate, *, flip_sign: bool = True) -> GradientTransformation:
    """Multiplies updates by ``-learning_rate`` (by ``learning_rate`` if not ``flip_sign``).

    This is torch's ``param.add_(direction, alpha=-lr)``: gradxform's building blocks
    return ascent directions, and this block turns them into descent updates.
    """
    sign = -1 if flip_sign else 1

    def fn(updates, params):
        del params
        factor = _numerics.cast_once(sign * jnp.asarray(learning_rate))  # once per dtype, not per leaf
        return jax.tree.map(lambda u: _upcast(u) * factor(_upcast(u).dtype)[0], updates)

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
        if _numerics.has_no_leaves(updates):
            return updates
        if params is None:
            raise ValueError("add_decayed_weights needs the params argument of update")

        rates = _numerics.cast_once(weight_decay)  # once per dtype, not per leaf

        def decay(u, p):
            u = _upcast(u)
            rate = rates(u.dtype)[0]
            # torch skips the term when weight_decay == 0 (so an inf parameter stays harmless).
            return jnp.where(rate == 0, u, u + rate * _upcast(p))

        return jax.tree.map(decay, updates, params)

    return _stateless(fn)


def _check_norm_type(norm_type) -> float:
    if isinstance(norm_type, str) and norm_type == "inf":
        return float("inf")
    return float(norm_type)


def _vector_norm(x: jax.Array, norm_type: float = 2.0) -> jax.Array:
    """torch's ``linalg.vector_norm(x, norm_type)`` of one array, in its real dtype.

    16-bit floats are reduced in float32 and the norm is rounded to their dtype, as
    torch does; complex arrays give the norm of their moduli.
    """
    x = jnp.asarray(x)
    dtype = _numerics.real_dtype(x.dtype)
    compute = _numerics.compute_dtype(dtype)
    if jnp.iscomplexobj(x):
        magnitude = jnp.abs(x.astype(jnp.result_type(compute, jnp.complex64)))
    else:
        magnitude = jnp.abs(x.astype(compute))
    magnitude = magnitude.reshape(-1)
    if norm_type == float("inf"):
        norm = jnp.max(magnitude)
    elif norm_type == float("-inf"):
        norm = jnp.min(magnitude)
    elif norm_type == 0:
        norm = jnp.sum(magnitude != 0).astype(compute)
    elif norm_type == 1:
        norm = jnp.sum(magnitude)
    elif norm_type == 2:
        norm = jnp.sqrt(jnp.sum(magnitude * magnitude))
    else:
        exponent = jnp.asarray(norm_type, compute)
        norm = jnp.sum(magnitude**exponent) ** (1 / exponent)
    return norm.astype(dtype)


def global_norm(tree, norm_type: float = 2.0) -> jax.Array:
    """torch's ``nn.utils.get_total_norm``: the ``norm_type`` norm of the leaves' norms.

    Each leaf's norm is taken in its own (real) dtype; the norms (ordered by dtype, as
    torch groups them) are promoted to a common dtype (float64 if any leaf is float64) and their norm is the total. A tree
    without leaves has total norm ``0.0`` (float32, as torch's ``torch.tensor(0.0)``).

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> float(gradxform.global_norm({"a": jnp.array([3.0]), "b": jnp.array([4.0])}))
      5.0
    """
    norm_type = _check_norm_type(norm_type)
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.asarray(0.0, jnp.float32)
    # torch groups the tensors by dtype (in order of first appearance) before stacking.
    dtypes = list(dict.fromkeys(jnp.result_type(leaf) for leaf in leaves))
    leaves = [leaf for d in dtypes for leaf in leaves if jnp.result_type(leaf) == d]
    norms = [_vector_norm(leaf, norm_type) for leaf in leaves]
    common = jnp.result_type(*norms)
    return _vector_norm(jnp.stack([n.astype(common) for n in norms]), norm_type)


def _clip_scale(max_norm, total_norm: jax.Array) -> jax.Array:
    """torch's clipping coefficient ``min(max_norm / (total_norm + 1e-6), 1.0)``.

    It is computed in ``total_norm``'s dtype (in float32 and rounded, for 16-bit norms).
    """
    dtype = jnp.result_type(total_norm)
    compute = _numerics.compute_dtype(dtype)
    total = jnp.asarray(total_norm).astype(compute)
    # torch rounds after each operation on a 16-bit tensor.
    shifted = (total + jnp.asarray(1e-6, compute)).astype(dtype).astype(compute)
    coef = (jnp.asarray(max_norm).astype(compute) / shifted).astype(dtype).astype(compute)
    return jnp.minimum(coef, jnp.asarray(1.0, compute)).astype(dtype)


def _scale_by_coefficient(tree, coef: jax.Array):
    """Multiplies every leaf by the scalar ``coef`` in the leaf's dtype (torch's ``g.mul_(coef)``)."""

    def mul(g):
        g = jnp.asarray(g)
        compute = _numerics.compute_dtype(g.dtype)
        c = jnp.asarray(coef).astype(_numerics.compute_dtype(_numerics.real_dtype(g.dtype)))
        return (g.astype(compute) * c).astype(g.dtype)

    return jax.tree.map(mul, tree)


def clip_by_global_norm(max_norm, norm_type: float = 2.0) -> GradientTransformation:
    """Scales the updates so that their global norm is at most ``max_norm``: torch's ``clip_grad_norm_``.

    .. math::
        n = \\big\\|\\,(\\|g_1\\|_p, \\ldots, \\|g_k\\|_p)\\,\\big\\|_p, \\qquad
        g_i \\leftarrow g_i \\cdot \\min\\!\\Big(\\frac{\\text{max\\_norm}}{n + 10^{-6}},\\ 1\\Big)

    The arithmetic is torch 2.13's (per-leaf norms in each leaf's dtype, the
    coefficient in the total norm's dtype, the ``1e-6`` added before dividing, the
    coefficient clamped to 1 and multiplied in even when it is 1), so clipped gradients
    agree with torch to rounding (float64: 1e-12).

    Unlike ``optax.clip_by_global_norm``, which returns the updates untouched when the
    norm is below the limit and divides by the norm without ``1e-6``, this always
    multiplies by torch's coefficient, and takes any ``norm_type``.

    torch's ``error_if_nonfinite`` is not offered: inside ``jax.jit`` a value cannot
    raise. A non-finite norm gives non-finite updates (as in torch without the flag);
    wrap the optimizer in :func:`skip_non_finite` to drop such steps, or use
    :func:`global_norm` eagerly and check the result. ``torch_compat.nn.utils.clip_grad_norm_``
    offers the flag (it reads the norm on the host).

    Args:
      max_norm: a float, or a scalar array (it may be traced, e.g. under
        :func:`inject_hyperparams`).
      norm_type: the ``p`` of the p-norm, a Python float (``float("inf")`` or the
        string ``"inf"`` for the max norm; ``0`` counts non-zeros; any other value,
        fractional ones included, is ``(sum |x|^p)^(1/p)``).

    Returns:
      A stateless transformation.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.clip_by_global_norm(1.0)
      >>> updates, _ = tx.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, tx.init(None))
      >>> [round(float(u[0]), 6) for u in (updates["a"], updates["b"])]
      [0.6, 0.8]
    """
    norm_type = _check_norm_type(norm_type)

    def fn(updates, params):
        del params
        if not jax.tree.leaves(updates):
            return updates
        return _scale_by_coefficient(updates, _clip_scale(max_norm, global_norm(updates, norm_type)))

    return _stateless(fn)


def clip_by_value(clip_value) -> GradientTransformation:
    """Clamps every update to ``[-clip_value, clip_value]``: torch's ``clip_grad_value_``.

    NaN stays NaN (as torch's ``clamp``). Complex updates are refused, as torch refuses
    them.

    Args:
      clip_value: a float or a scalar array (it may be traced).

    Returns:
      A stateless transformation.

    Raises:
      NotImplementedError: at trace time, for a complex leaf (torch's error and message).

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.clip_by_value(0.5)
      >>> tx.update(jnp.array([-2.0, 0.25, 3.0]), tx.init(None))[0].tolist()
      [-0.5, 0.25, 0.5]
    """

    def clamp(g):
        g = jnp.asarray(g)
        if jnp.iscomplexobj(g):
            raise NotImplementedError("clamp is not supported for complex types")
        compute = _numerics.compute_dtype(g.dtype)
        limit = jnp.asarray(clip_value).astype(compute)
        x = g.astype(compute)
        return jnp.minimum(jnp.maximum(x, -limit), limit).astype(g.dtype)

    return _stateless(lambda updates, params: jax.tree.map(clamp, updates))
