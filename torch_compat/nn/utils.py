"""torch.nn.utils's gradient clipping, on :class:`~torch_compat.Parameter` gradients.

``clip_grad_norm_``, ``clip_grad_value_``, ``get_total_norm`` and
``clip_grads_with_norm_`` have torch 2.13's signatures, numbers and errors (as do
``parameters_to_vector`` and ``vector_to_parameters``, at the end). The math is
gradxform's (:func:`gradxform.global_norm`, :func:`gradxform.clip_by_global_norm`,
:func:`gradxform.clip_by_value`), run as one jit-compiled call; the gradients are
replaced by their clipped values (``Parameter.grad`` is rebound: JAX arrays are
immutable). Parameters whose ``.grad`` is None are skipped, as torch skips them.

``foreach`` is accepted and, as everywhere in torch_compat, selects nothing: there is
one implementation.
"""

from __future__ import annotations

import functools
import types
import warnings
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

import gradxform
from gradxform import _internal
from torch_compat._parameter import Parameter

__all__ = [
    "clip_grad_norm",
    "clip_grad_norm_",
    "clip_grad_value_",
    "clip_grads_with_norm_",
    "get_total_norm",
    "parameters_to_vector",
    "vector_to_parameters",
]


def _as_list(parameters, warn_on_empty_generator: bool = False) -> list:
    if isinstance(parameters, (Parameter, jax.Array)):
        return [parameters]
    is_generator = isinstance(parameters, types.GeneratorType)
    parameters = list(parameters)
    if warn_on_empty_generator and is_generator and not parameters:
        warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=3)
    return parameters


def _check_dense(arrays) -> None:
    for a in arrays:
        if isinstance(a, sparse.JAXSparse):
            raise NotImplementedError(
                "Could not run 'aten::linalg_vector_norm' with arguments from the 'SparseCPU' backend."
            )


def _norm_type(norm_type) -> float:
    return float(norm_type)


def _check_empty(arrays, norm_type: float, foreach) -> None:
    """torch refuses the +-inf norm of an empty tensor (it has no identity)."""
    if norm_type not in (float("inf"), float("-inf")):
        return
    if any(np.size(a) == 0 for a in arrays):
        if norm_type == float("inf") and foreach is not False:
            raise RuntimeError(
                "_foreach_norm cannot compute the infinity norm on an empty tensor because the "
                "operation does not have an identity"
            )
        text = "inf" if norm_type == float("inf") else "-inf"
        raise RuntimeError(
            f"linalg.vector_norm cannot compute the {text} norm on an empty tensor because the "
            "operation does not have an identity"
        )


def _nonfinite_error(norm_type: float) -> RuntimeError:
    return RuntimeError(
        f"The total norm of order {norm_type} for gradients from "
        "`parameters` is non-finite, so it cannot be clipped. To disable "
        "this error and scale the gradients by the non-finite norm anyway, "
        "set `error_if_nonfinite=False`"
    )


@functools.partial(jax.jit, static_argnums=1)
def _total_norm(arrays, norm_type):
    return gradxform.global_norm(arrays, norm_type)


@jax.jit
def _scale(arrays, max_norm, total_norm):
    return _internal.scale_by_coefficient(arrays, _internal.clip_scale(max_norm, total_norm))


@functools.partial(jax.jit, static_argnums=2)
def _norm_and_scale(arrays, max_norm, norm_type):
    total = gradxform.global_norm(arrays, norm_type)
    return total, _scale(arrays, max_norm, total)


def _max_norm(max_norm) -> np.ndarray:
    # torch turns max_norm into a Python float (a double) before using it.
    return np.asarray(float(max_norm), dtype=jnp.result_type(float))


def get_total_norm(
    tensors: jax.Array | Iterable[jax.Array],
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> jax.Array:
    """The norm of the arrays' norms, as if they were one vector (torch's ``get_total_norm``).

    Args:
      tensors: an array or an iterable of arrays (gradients, not Parameters).
      norm_type: the p of the p-norm; ``"inf"`` or ``float("inf")`` for the max norm.
      error_if_nonfinite: raise if the total norm is NaN or infinite (this reads the
        norm on the host).
      foreach: accepted for torch compatibility; no effect.

    Returns:
      A 0-d array in the norms' common dtype (``0.0`` float32 for no arrays).

    Raises:
      RuntimeError: with torch's message, for a non-finite norm with
        ``error_if_nonfinite=True``, or for the infinity norm of an empty array.

    Example:
      >>> import jax.numpy as jnp
      >>> from torch_compat.nn.utils import get_total_norm
      >>> float(get_total_norm([jnp.array([3.0]), jnp.array([4.0])]))
      5.0
    """
    del foreach
    arrays = _as_list(tensors)
    norm_type = _norm_type(norm_type)
    if not arrays:
        return jnp.asarray(0.0, jnp.float32)
    _check_dense(arrays)
    _check_empty(arrays, norm_type, None)
    total = _total_norm([jnp.asarray(a) for a in arrays], norm_type)
    if error_if_nonfinite and not bool(jnp.isfinite(total)):
        raise _nonfinite_error(norm_type)
    return total


def clip_grads_with_norm_(
    parameters: Parameter | Iterable[Parameter],
    max_norm: float,
    total_norm: jax.Array,
    foreach: bool | None = None,
) -> None:
    """Scales the gradients by ``min(max_norm / (total_norm + 1e-6), 1)`` (torch's ``clip_grads_with_norm_``).

    Args:
      parameters: a Parameter or an iterable of them; None gradients are skipped.
      max_norm: the largest norm allowed.
      total_norm: a precomputed total norm (e.g. from :func:`get_total_norm`).
      foreach: accepted for torch compatibility; no effect.

    Example:
      >>> import jax.numpy as jnp
      >>> from torch_compat import Parameter
      >>> from torch_compat.nn.utils import clip_grads_with_norm_
      >>> p = Parameter(jnp.zeros(2)); p.grad = jnp.array([3.0, 4.0])
      >>> clip_grads_with_norm_([p], 1.0, jnp.asarray(10.0))
      >>> [round(x, 6) for x in p.grad.tolist()]
      [0.3, 0.4]
    """
    del foreach
    parameters = _as_list(parameters)
    with_grad = [p for p in parameters if p.grad is not None]
    max_norm = _max_norm(max_norm)
    if not with_grad:
        return
    _check_dense([p.grad for p in with_grad])
    clipped = _scale([p.grad for p in with_grad], max_norm, jnp.asarray(total_norm))
    for p, g in zip(with_grad, clipped):
        p._grad = g


def clip_grad_norm_(
    parameters: Parameter | Iterable[Parameter],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> jax.Array:
    """Clips the gradients' global norm to ``max_norm`` (torch's ``clip_grad_norm_``).

    The total norm is the ``norm_type`` norm of the per-gradient norms; every gradient
    is multiplied by ``min(max_norm / (total + 1e-6), 1)``, torch 2.13's arithmetic
    (see :func:`gradxform.clip_by_global_norm`). Without ``error_if_nonfinite`` the
    step is one compiled call and nothing is read back to the host.

    Args:
      parameters: a Parameter or an iterable of them; None gradients are skipped.
      max_norm: the largest norm allowed.
      norm_type: the p of the p-norm; ``"inf"`` or ``float("inf")`` for the max norm.
      error_if_nonfinite: raise (before changing any gradient) if the total norm is
        NaN or infinite.
      foreach: accepted for torch compatibility; no effect.

    Returns:
      The total norm of the gradients before clipping, a 0-d array.

    Raises:
      RuntimeError: with torch's message, for a non-finite norm with
        ``error_if_nonfinite=True`` (the gradients are then left as they were), or for
        the infinity norm of an empty gradient.

    Example:
      >>> import jax.numpy as jnp
      >>> from torch_compat import Parameter
      >>> from torch_compat.nn.utils import clip_grad_norm_
      >>> p = Parameter(jnp.zeros(2)); p.grad = jnp.array([3.0, 4.0])
      >>> float(clip_grad_norm_(p, max_norm=1.0))
      5.0
      >>> [round(x, 6) for x in p.grad.tolist()]
      [0.6, 0.8]
    """
    parameters = _as_list(parameters, warn_on_empty_generator=True)
    with_grad = [p for p in parameters if p.grad is not None]
    norm_type = _norm_type(norm_type)
    if not with_grad:
        return jnp.asarray(0.0, jnp.float32)
    grads = [p.grad for p in with_grad]
    _check_dense(grads)
    _check_empty(grads, norm_type, foreach)
    if error_if_nonfinite:
        total = get_total_norm(grads, norm_type, error_if_nonfinite=True)
        clip_grads_with_norm_(with_grad, max_norm, total)
        return total
    total, clipped = _norm_and_scale(grads, _max_norm(max_norm), norm_type)
    for p, g in zip(with_grad, clipped):
        p._grad = g
    return total


def clip_grad_norm(
    parameters: Parameter | Iterable[Parameter],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> jax.Array:
    """Deprecated alias of :func:`clip_grad_norm_` (warns with torch's FutureWarning).

    Example:
      >>> import warnings, jax.numpy as jnp
      >>> from torch_compat import Parameter
      >>> from torch_compat.nn.utils import clip_grad_norm
      >>> p = Parameter(jnp.zeros(1)); p.grad = jnp.array([2.0])
      >>> with warnings.catch_warnings():
      ...     warnings.simplefilter("ignore")
      ...     float(clip_grad_norm(p, 1.0))
      2.0
    """
    warnings.warn(
        "`torch.nn.utils.clip_grad_norm` is now deprecated in favor of `torch.nn.utils.clip_grad_norm_`.",
        FutureWarning,
        stacklevel=2,
    )
    return clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)


@jax.jit
def _clamp(arrays, clip_value):
    return gradxform.clip_by_value(clip_value).update(arrays, None)[0]


def clip_grad_value_(
    parameters: Parameter | Iterable[Parameter],
    clip_value: float,
    foreach: bool | None = None,
) -> None:
    """Clamps every gradient to ``[-clip_value, clip_value]`` (torch's ``clip_grad_value_``).

    Args:
      parameters: a Parameter or an iterable of them; None gradients are skipped.
      clip_value: the largest absolute value allowed.
      foreach: accepted for torch compatibility; no effect.

    Raises:
      NotImplementedError: for complex gradients (torch's message; nothing is changed).

    Example:
      >>> import jax.numpy as jnp
      >>> from torch_compat import Parameter
      >>> from torch_compat.nn.utils import clip_grad_value_
      >>> p = Parameter(jnp.zeros(3)); p.grad = jnp.array([-2.0, 0.5, 3.0])
      >>> clip_grad_value_([p], 1.0)
      >>> p.grad.tolist()
      [-1.0, 0.5, 1.0]
    """
    del foreach
    parameters = _as_list(parameters)
    clip_value = _max_norm(clip_value)
    with_grad = [p for p in parameters if p.grad is not None]
    if not with_grad:
        return
    grads = [p.grad for p in with_grad]
    if any(isinstance(g, sparse.JAXSparse) for g in grads):
        raise NotImplementedError("Could not run 'aten::clamp_min_' with arguments from the 'SparseCPU' backend.")
    if any(jnp.iscomplexobj(g) for g in grads):
        raise NotImplementedError("clamp is not supported for complex types")
    clipped = _clamp(grads, clip_value)
    for p, g in zip(with_grad, clipped):
        p._grad = g


# -- parameters as one vector ----------------------------------------------------------------


def _value(param):
    return param.data if isinstance(param, Parameter) else jnp.asarray(param)


def _check_same_device(arrays) -> None:
    """torch's ``_check_param_device``: every array on one device."""
    devices = {frozenset(a.devices()) for a in arrays if isinstance(a, jax.Array)}
    if len(devices) > 1:
        raise TypeError("Found two parameters on different devices, this is currently not supported.")


def parameters_to_vector(parameters: Iterable) -> jax.Array:
    """The parameters' values flattened and joined into one vector (torch's function).

    Args:
      parameters: Parameters (or arrays), in order.

    Returns:
      A 1-D array; mixed dtypes are promoted, as ``torch.cat`` promotes them.

    Raises:
      ValueError: torch's, for no parameters.
      TypeError: torch's, for arrays on different devices.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat.nn.utils import parameters_to_vector
      >>> model = torch_compat.as_parameters({"b": jnp.zeros(2), "w": jnp.ones((2, 2))})
      >>> parameters_to_vector(torch_compat.parameters(model)).tolist()
      [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    """
    arrays = [_value(p) for p in parameters]
    if not arrays:
        raise ValueError("torch.cat(): expected a non-empty list of Tensors")
    _check_same_device(arrays)
    return jnp.concatenate([jnp.ravel(a) for a in arrays])


def vector_to_parameters(vec, parameters: Iterable) -> None:
    """Copies consecutive slices of ``vec`` into the parameters' ``.data`` (torch's function).

    Each Parameter takes the next ``numel`` entries, reshaped to its shape, with ``vec``'s
    dtype (as torch's ``param.data = ...`` gives). A longer ``vec`` leaves its tail unused.

    Args:
      vec: a 1-D array (JAX or NumPy).
      parameters: the Parameters to fill, in order.

    Raises:
      TypeError: torch's, when ``vec`` is not an array, or for arrays on different devices.
      RuntimeError: torch's, when ``vec`` is too short for a parameter.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat.nn.utils import vector_to_parameters
      >>> params = [torch_compat.Parameter(jnp.zeros(2)), torch_compat.Parameter(jnp.zeros((1, 2)))]
      >>> vector_to_parameters(jnp.arange(4.0), params)
      >>> params[1].data.tolist()
      [[2.0, 3.0]]
    """
    if not isinstance(vec, (jax.Array, np.ndarray)):
        from torch_compat._parameter import typename

        raise TypeError(f"expected torch.Tensor, but got: {typename(vec)}")
    vec = jnp.asarray(vec)
    params = list(parameters)
    _check_same_device([vec] + [p.data for p in params])
    pointer = 0
    for param in params:
        size = param.numel()
        chunk = vec[pointer : pointer + size]
        if chunk.size != size:
            shape = ", ".join(str(d) for d in param.shape)
            raise RuntimeError(f"shape '[{shape}]' is invalid for input of size {chunk.size}")
        param.data = chunk.reshape(param.shape)
        pointer += size
