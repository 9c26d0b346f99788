"""Private numerical helpers shared by every update rule.

Conventions, chosen to reproduce torch 2.13's single-tensor (for-loop) optimizers:

* Hyperparameters are scalar arrays of the default float type (float64 when
  ``jax_enable_x64`` is on, as torch's Python floats are doubles). Scalar coefficients
  (bias corrections, step sizes) are computed in that precision and cast to the
  parameter's precision where they meet a tensor, as torch casts a Python scalar.
* Per-parameter scalar state that torch keeps in a float32 tensor (``eta``, ``mu``,
  ``mu_product``) is float32 here too, rounded where torch rounds it.
* Complex leaves are handled as torch's ``view_as_real`` does: real and imaginary parts
  are independent real numbers.
* bfloat16/float16 leaves are computed in float32 (torch's "opmath"); buffers are stored
  in their own dtype.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

TORCH_SCALAR_DTYPE = jnp.float32
"""dtype of torch's per-parameter scalar state (``torch.get_default_dtype()``)."""


def hyper_dtype():
    """The dtype of hyperparameters: float64 under ``jax_enable_x64``, else float32."""
    return jnp.result_type(float)


def real_dtype(dtype) -> jnp.dtype:
    """float32 for complex64, float64 for complex128, the dtype itself otherwise."""
    return jnp.finfo(dtype).dtype


def compute_dtype(dtype) -> jnp.dtype:
    """The dtype arithmetic runs in for a leaf of ``dtype`` (float32 for 16-bit floats)."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32:
        return jnp.dtype(jnp.float32)
    return dtype


def buffer_dtype(param_dtype, state_dtype=None) -> jnp.dtype:
    """dtype of a moment buffer: ``state_dtype`` if given (complex for complex params)."""
    param_dtype = jnp.dtype(param_dtype)
    if state_dtype is None:
        return param_dtype
    state_dtype = jnp.dtype(state_dtype)
    if jnp.issubdtype(param_dtype, jnp.complexfloating) and not jnp.issubdtype(
        state_dtype, jnp.complexfloating
    ):
        return jnp.result_type(state_dtype, jnp.complex64)
    return state_dtype


def scalar(value, like) -> jax.Array:
    """Casts a hyperparameter or coefficient to the real dtype of array ``like``."""
    return jnp.asarray(value).astype(real_dtype(like.dtype))


def as_real(x: jax.Array) -> jax.Array:
    """torch's ``view_as_real``: a complex array as a real one with a trailing axis of 2."""
    if jnp.iscomplexobj(x):
        return jnp.stack([x.real, x.imag], axis=-1)
    return x


def as_complex(x: jax.Array) -> jax.Array:
    """Inverse of :func:`as_real` (``view_as_complex``)."""
    return jax.lax.complex(x[..., 0], x[..., 1])


def lerp(start, end, weight):
    """torch's ``lerp``, with its two formulas split at ``weight < 0.5``."""
    weight = scalar(weight, start)
    return jnp.where(
        jnp.abs(weight) < 0.5,
        start + weight * (end - start),
        end - (end - start) * (1 - weight),
    )


def zeros_like_buffer(params, state_dtype=None):
    """Zero buffers shaped as ``params``, in :func:`buffer_dtype`."""
    return jax.tree.map(
        lambda p: jnp.zeros(jnp.shape(p), buffer_dtype(jnp.result_type(p), state_dtype)), params
    )


def full_like_buffer(params, value, state_dtype=None):
    """Buffers filled with ``value`` (``value + value*1j`` for complex leaves, as torch)."""

    def make(p):
        dtype = buffer_dtype(jnp.result_type(p), state_dtype)
        fill = jnp.asarray(value).astype(real_dtype(dtype))
        if jnp.issubdtype(dtype, jnp.complexfloating):
            fill = jax.lax.complex(fill, fill)
        return jnp.full(jnp.shape(p), fill, dtype)

    return jax.tree.map(make, params)


def step_counts(params):
    """One int32 step counter per parameter leaf, as torch keeps ``state["step"]``."""
    return jax.tree.map(lambda _: jnp.zeros([], jnp.int32), params)


def per_leaf_scalars(params, value, dtype=TORCH_SCALAR_DTYPE):
    """One scalar per parameter leaf (torch's per-parameter ``eta``, ``mu``, ...)."""
    return jax.tree.map(lambda _: jnp.asarray(value, dtype), params)


def leafwise(fn: Callable[..., tuple], updates, *trees, num_outputs: int):
    """Maps ``fn`` over matching leaves of ``updates`` and ``trees``.

    ``fn`` gets real arrays: a complex leaf (and the matching leaves of the other trees)
    is passed through :func:`as_real`, and ``fn``'s outputs are turned back into complex
    arrays. ``fn`` returns a tuple of ``num_outputs`` arrays; the result is a tuple of
    ``num_outputs`` trees shaped like ``updates``. A tree given as ``None`` gives ``None``
    leaves to ``fn``.
    """
    treedef = jax.tree.structure(updates)
    leaf_lists = [jax.tree.leaves(updates)]
    for tree in trees:
        if tree is None:
            leaf_lists.append([None] * treedef.num_leaves)
        else:
            leaf_lists.append(treedef.flatten_up_to(tree))
    outputs = [[] for _ in range(num_outputs)]
    for leaves in zip(*leaf_lists):
        is_complex = any(leaf is not None and jnp.iscomplexobj(leaf) for leaf in leaves)
        if is_complex:
            leaves = [None if leaf is None else as_real(leaf) for leaf in leaves]
        results = fn(*leaves)
        if len(results) != num_outputs:
            raise AssertionError("leaf function returned the wrong number of outputs")
        for out, result in zip(outputs, results):
            if is_complex and result is not None and jnp.ndim(result) > 0 and not jnp.iscomplexobj(result):
                result = as_complex(result)
            out.append(result)
    return tuple(
        None if all(r is None for r in out) else treedef.unflatten(out) for out in outputs
    )


def tree_cast(tree: Any, like: Any):
    """Casts each leaf of ``tree`` to the dtype of the matching leaf of ``like``."""
    return jax.tree.map(lambda x, ref: jnp.asarray(x).astype(jnp.result_type(ref)), tree, like)
